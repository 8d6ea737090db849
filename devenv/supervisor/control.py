"""The caller's side of the supervisor: launch it detached, wait for it, stop it, reset its state.

``canaryctl dev`` (through :mod:`devenv.cli`) runs in a short-lived process; the supervisor it
launches outlives it. They talk only through the state directory (:mod:`.state`) and signals.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devenv.files import make_private_dir, secure_tree, write_private
from devenv.processes import log_tail, stop_all, terminate
from devenv.supervisor.state import (
    ERROR_FILE,
    LOG_FILE,
    PID_FILE,
    PROJECT_ROOT,
    STATE_FILE,
    SUPERVISOR_MARKER,
    DevError,
    DevState,
    Options,
    read_state,
    reset_paths,
    supervisor_pid,
)


def launch(options: Options) -> subprocess.Popen[bytes]:
    """Start a detached supervisor; its output goes to ``supervisor.log`` in the state dir."""
    state_dir = make_private_dir(options.state_dir.resolve())
    secure_tree(state_dir)  # a state dir from before its modes were enforced
    for name in (STATE_FILE, ERROR_FILE):
        (state_dir / name).unlink(missing_ok=True)
    env = dict(os.environ)
    # The supervisor must import devenv and workflows even when the project is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    log = state_dir / LOG_FILE
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MARKER, *options.argv()],
            cwd=state_dir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    write_private(state_dir / PID_FILE, f"{process.pid}\n")
    return process


def wait_until_ready(process: subprocess.Popen[bytes], state_dir: Path, timeout: float) -> DevState:
    """Wait for the supervisor's state file; on failure raise with the supervisor's log tail."""
    state_dir = state_dir.resolve()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state is not None and state.supervisor_pid == process.pid:
            return state
        if process.poll() is not None:
            error = state_dir / ERROR_FILE
            reason = error.read_text().strip() if error.exists() else (
                f"supervisor exited with status {process.returncode}; last lines of its log:\n"
                f"{log_tail(state_dir / LOG_FILE, lines=10)}")
            raise DevError(f"the dev environment did not start: {reason}\n(full log: {state_dir / LOG_FILE})")
        time.sleep(0.2)
    stop_process(process)
    raise DevError(f"the dev environment was not ready within {timeout:.0f} s and was stopped; "
                   f"last lines of {state_dir / LOG_FILE}:\n{log_tail(state_dir / LOG_FILE, lines=10)}")


def stop_process(process: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """Stop a supervisor this process launched, and reap it."""
    stop_all([process], grace)


def shut_down(state_dir: Path, grace: float = 60.0) -> bool:
    """Stop the environment in ``state_dir``; False if nothing was running.

    The supervisor stops its children itself. If it is already gone (killed), the parent-death
    signal has stopped them too; the PIDs from the state file are checked anyway, so that
    nothing of ours survives a ``dev down``.
    """
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    pid = supervisor_pid(state_dir)
    if pid is None and state is None:
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return False
    if pid is not None:
        terminate(pid, SUPERVISOR_MARKER, grace=grace)
    if state is not None:
        for name, child in state.processes.items():
            terminate(child, state.owner_marker(name), grace=10.0)
    for name in (STATE_FILE, PID_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return True


def reset(state_dir: Path) -> list[Path]:
    """Stop the environment if it runs, then delete the cluster's state and Temporal's database.

    The API tokens stay: scripts and browsers that hold them keep working after a reset.
    Returns what was deleted.
    """
    state_dir = state_dir.resolve()
    shut_down(state_dir)
    if supervisor_pid(state_dir) is not None:
        raise DevError(f"the supervisor in {state_dir} did not stop; nothing was deleted")
    deleted = []
    for path in reset_paths(state_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        deleted.append(path)
    return deleted
