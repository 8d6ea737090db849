"""Running ``canaryctl`` as a user does: a separate process, its exit status and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def canaryctl(*args: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 120,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m starter.cli ARGS`` from this checkout (the venv's script may point at another)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "starter.cli", *args], capture_output=True, text=True,
                          cwd=cwd, input=stdin, timeout=timeout, env=environ)


def crashed(result: subprocess.CompletedProcess[str]) -> bool:
    """The interpreter aborted (a signal, or CPython's fatal error) instead of exiting."""
    return result.returncode < 0 or result.returncode in (134, 139) or "Fatal Python error" in result.stderr
