"""Child processes of the embedded defaults: ports, spawning, stopping, log tails.

The local cluster, the Temporal dev server and the dev supervisor all start long-lived
children and must never leave one behind, so they share these few primitives.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Tell whether something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent dies.

    Used as ``preexec_fn``: an interrupted or SIGKILLed test run, demo or supervisor cannot
    leave a control plane or server running. SIGKILL, because kube-apiserver takes its time
    over SIGTERM and nothing of a throwaway cluster needs saving.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], *, log: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session, output to ``log``, dying with this process."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True, preexec_fn=die_with_parent)


def stop_all(processes: Iterable[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process (in the order given), SIGKILL what outlives ``grace``, reap all."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=5)


def log_tail(path: Path, lines: int = 25) -> str:
    """The end of a log file, for error messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Service:
    """Something started and stopped as a whole; usable as a context manager."""

    def start(self) -> None:
        """Start it; return once it serves."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything it started."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
