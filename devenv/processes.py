"""Child processes of the embedded defaults: ports, spawning, stopping, log tails, PIDs.

The local cluster, the Temporal dev server and the dev supervisor all start long-lived
children and must never leave one behind, so they share these few primitives. The PID
helpers are for processes known only by a PID written to a file (``dev down`` stopping what
another process started), where a recycled PID must not be mistaken for ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
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
    """The end of a log file, for error messages.

    A Go server that panics ends its log with goroutine stacks, so the one line that says why
    (``panic: ...``) is put first when the tail does not reach it.
    """
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    tail = text[-lines:]
    why = [line for line in text[:-lines] if line.startswith(("panic:", "fatal error:"))][:1]
    return "\n".join([*why, *(["..."] if why else []), *tail])


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


class ChildServer(Service):
    """A server that is one child process with a run directory (its log, its data).

    The run directory is deleted on stop only if this object created it, unless the
    ``keep_env`` variable is set (for debugging). Subclasses start the process with
    :meth:`_launch` and say when it is ready in :meth:`_wait_ready`.
    """

    keep_env = "CANARY_KEEP_RUN_DIR"
    log_name = "server.log"

    def __init__(self, run_dir: Path | None, prefix: str) -> None:
        self._own_run_dir = run_dir is None
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix=prefix))
        self.log_file = self.run_dir / self.log_name
        self.process: subprocess.Popen[bytes] | None = None

    def _launch(self, argv: list[str]) -> None:
        """Spawn the server and wait until it is ready; a server that never gets there is stopped."""
        self.process = spawn(argv, log=self.log_file, cwd=self.run_dir)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server, SIGKILL it if it outlives ``grace``, and wait until it is gone."""
        process, self.process = self.process, None
        if process is not None:
            stop_all([process], grace)
        if self._own_run_dir and not os.environ.get(self.keep_env):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self.process.pid if self.process is not None else None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the server's log, for error messages."""
        return log_tail(self.log_file, lines)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies count as gone: they only wait to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def command_line(pid: int) -> str:
    """The process's command line, or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def owned(pid: int, marker: str) -> bool:
    """Alive and still the process we started (not a recycled PID): ``marker`` is in its command line."""
    return pid_alive(pid) and marker in command_line(pid)


def terminate(pid: int, marker: str, grace: float = 10.0) -> None:
    """SIGTERM an owned process, SIGKILL it after ``grace``, and wait until it is gone."""
    if not owned(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
