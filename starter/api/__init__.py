"""The HTTP API gateway and the web page for canary delivery jobs (``canary-api``).

Both call :mod:`starter.client`, the same functions as ``canaryctl``: the API is a second face
of the same updates, signals and queries, never a second implementation of them.
"""
