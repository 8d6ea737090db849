"""The supervisor behind ``canaryctl dev``, in three parts.

- :mod:`.state`: the state directory's layout and the state file both sides read;
- :mod:`.control`: the caller's side (launch, wait, stop, reset), used by :mod:`devenv.cli`;
- :mod:`.daemon`: the long-lived process that owns the children (``python -m devenv.supervisor``).
"""
