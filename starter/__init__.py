"""Clients of the canary delivery workflows: ``canaryctl`` and the functions behind it."""
