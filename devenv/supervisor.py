"""The process behind ``canaryctl dev up``: owns the dev server, the cluster, the worker and the API.

Why a separate process: ``dev up`` must return while the environment keeps running, and every
child (Temporal, the control plane, the worker) carries a parent-death signal so that nothing
outlives its owner by accident. So something has to stay alive as their parent: this
supervisor, started detached in its own session. It writes ``state.json`` once all three are
ready (``dev up`` waits for that file), keeps the worker running (restarting it when it
crashes), and on SIGTERM (``dev down``) stops worker, cluster and server in that order and
removes the state file.

The client half (:func:`launch`, :func:`wait_until_ready`, :func:`shut_down`,
:func:`read_state`) lives here too, so the file layout of the state directory is known in one
place only.

Run as ``python -m devenv.supervisor --state-dir DIR [--port P --ui-port U ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from pydantic import BaseModel

from devenv import cluster as cluster_module
from devenv.cluster import LocalCluster
from devenv.processes import log_tail, spawn, stop_all
from devenv.temporal import DEFAULT_NAMESPACE, TemporalDevServer, temporal_cli
from workflows.names import TASK_QUEUE

DEFAULT_HOME = Path(os.environ.get("CANARY_DEV_HOME", Path.home() / ".cache" / "canary-delivery" / "dev"))
DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
STATE_FILE = "state.json"
PID_FILE = "supervisor.pid"
LOG_FILE = "supervisor.log"
ERROR_FILE = "error.txt"
WORKER_LOG = "worker.log"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKER_READY_TIMEOUT = 60.0
WORKER_GRACE = 10.0
# The HTTP API and web page (starter/api); its tokens are made once and kept with temporal.db.
DEFAULT_API_PORT = 8080
API_LOG = "api.log"
API_TOKENS_FILE = "api-tokens.json"
API_READY_TIMEOUT = 30.0

log = logging.getLogger("canary.dev")


class DevError(RuntimeError):
    """The dev environment could not be started, found or stopped."""


class DevState(BaseModel):
    """What ``dev up`` prints and ``dev status``/``dev down`` need: addresses, paths, PIDs."""

    state_dir: str
    supervisor_pid: int
    started: datetime
    temporal_address: str
    temporal_namespace: str
    ui_url: str
    db_filename: str
    kubernetes_server: str
    kubeconfig: str
    worker_script: str | None
    worker_log: str | None
    # Process name -> PID: "temporal", the cluster components, "worker" and "api" if they run.
    processes: dict[str, int]
    api_url: str | None = None
    api_tokens_file: str | None = None
    api_admin_token: str | None = None

    def owner_marker(self, name: str) -> str:
        """A string in the process's command line that proves a PID is still ours."""
        if name == "worker" and self.worker_script:
            return self.worker_script
        return self.state_dir


@dataclass
class Options:
    """How to start the environment; mirrored by the ``dev up`` flags."""

    state_dir: Path = DEFAULT_HOME
    port: int = DEFAULT_PORT
    ui_port: int = DEFAULT_UI_PORT
    nodes: int = 3
    worker_script: Path | None = None  # None: no worker
    cluster_home: Path | None = None
    api_port: int | None = DEFAULT_API_PORT  # None: no HTTP API and web page

    def argv(self) -> list[str]:
        """The supervisor's command-line arguments for these options."""
        args = ["--state-dir", str(self.state_dir), "--port", str(self.port), "--ui-port", str(self.ui_port),
                "--nodes", str(self.nodes)]
        args += ["--worker", str(self.worker_script)] if self.worker_script else ["--no-worker"]
        args += ["--api-port", str(self.api_port)] if self.api_port is not None else ["--no-api"]
        if self.cluster_home is not None:
            args += ["--cluster-home", str(self.cluster_home)]
        return args


def default_worker_script() -> Path:
    """The project's ``worker.py``; a clear error while it does not exist yet."""
    candidate = PROJECT_ROOT / "worker.py"
    if candidate.is_file():
        return candidate
    raise DevError(
        f"worker.py not found in {PROJECT_ROOT}: without it no worker can run the canary jobs "
        "(start with --no-worker to run your own worker, or give --worker PATH)"
    )


# -- process helpers ------------------------------------------------------------------------


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
    """Alive and still the process we started (not a recycled PID)."""
    return pid_alive(pid) and marker in command_line(pid)


def terminate(pid: int, marker: str, grace: float = WORKER_GRACE) -> None:
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


# -- the supervisor process -----------------------------------------------------------------


class _StopError(BaseException):
    """A stop signal arrived; unwinds whatever is starting so that it cleans up.

    A BaseException, like KeyboardInterrupt, so that the ``suppress(Exception)`` around
    readiness probes (in LocalCluster) cannot swallow it.
    """


class Supervisor:
    """Start server, cluster and worker; watch them; stop them in order on a signal."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.server: TemporalDevServer | None = None
        self.cluster: LocalCluster | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_started = 0.0
        self.worker_restarts = 0
        self.api: subprocess.Popen[bytes] | None = None
        self.api_admin_token: str | None = None
        self.stopping = False
        self.stop_requested: str | None = None

    def run(self) -> int:
        """Run until stopped; the exit status tells ``dev up`` whether starting worked."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        status = 0
        try:
            self._write_file(PID_FILE, f"{os.getpid()}\n")
            self._start()
            self._write_state()
            log.info("ready: temporal %s, kubernetes %s", self.server and self.server.address,
                     self.cluster and self.cluster.server)
            self._monitor()
        except _StopError as stop:
            log.info("stopping on %s", stop)
        except Exception as err:
            log.error("%s", err)
            # ``dev up`` shows this instead of a log tail full of other processes' noise.
            self._write_file(ERROR_FILE, f"{err}\n")
            status = 1
        finally:
            self.stopping = True
            self._stop_all()
            for name in (STATE_FILE, PID_FILE):
                (self.state_dir / name).unlink(missing_ok=True)
            log.info("stopped")
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Raise once, to cut a long start short; the flag is checked between steps as well, in
        # case the exception met a handler that kept going. During the stop itself, do nothing.
        if self.stopping or self.stop_requested:
            return
        self.stop_requested = signal.Signals(signum).name
        raise _StopError(self.stop_requested)

    def _checkpoint(self) -> None:
        if self.stop_requested:
            raise _StopError(self.stop_requested)

    # -- start ---------------------------------------------------------------------------

    def _start(self) -> None:
        options = self.options
        if options.worker_script is not None and not options.worker_script.is_file():
            raise DevError(f"worker script {options.worker_script} not found: cannot start the worker "
                           "(use --no-worker to start without one)")
        temporal_cli()  # fail before anything starts if the wheel is missing
        log.info("starting the Temporal dev server on 127.0.0.1:%s (UI %s)", options.port, options.ui_port)
        self.server = TemporalDevServer(
            port=options.port, ui_port=options.ui_port, db_filename=self.state_dir / "temporal.db",
            run_dir=self.state_dir / "temporal",
        )
        self.server.start()
        self._checkpoint()
        run_dir = self.state_dir / "cluster"
        if run_dir.exists():  # left by a supervisor that was killed: stale certificates and etcd data
            shutil.rmtree(run_dir)
        log.info("starting the local Kubernetes cluster in %s", run_dir)
        self.cluster = LocalCluster(home=options.cluster_home or cluster_module.DEFAULT_HOME,
                                    run_dir=run_dir, nodes=options.nodes)
        self.cluster.start()
        self._checkpoint()
        if options.worker_script is not None:
            self._start_worker()
            self._wait_for_worker()
        self._checkpoint()
        if options.api_port is not None:
            self._start_api()
            self._wait_for_api()
        self._checkpoint()

    def _api_tokens(self) -> Path:
        """The dev environment's API tokens (one per role), made on first start and then kept."""
        path = self.state_dir / API_TOKENS_FILE
        if not path.exists():
            tokens = [{"token": secrets.token_urlsafe(24), "role": role, "name": f"dev-{role}"}
                      for role in ("admin", "operator", "viewer")]
            self._write_file(API_TOKENS_FILE, json.dumps({"tokens": tokens}, indent=2) + "\n")
            path.chmod(0o600)
        for entry in json.loads(path.read_text())["tokens"]:
            if entry.get("role") == "admin":
                self.api_admin_token = str(entry["token"])
        return path

    def _start_api(self) -> None:
        """``python -m starter.api`` (the HTTP API and the web page) against this Temporal server."""
        assert self.server is not None and self.options.api_port is not None
        tokens = self._api_tokens()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CANARY_API_TOKENS", None)
        self.api = spawn([sys.executable, "-m", "starter.api", "--host", "127.0.0.1",
                          "--port", str(self.options.api_port), "--address", self.server.address,
                          "--temporal-namespace", DEFAULT_NAMESPACE, "--tokens-file", str(tokens)],
                         log=self.state_dir / API_LOG, cwd=PROJECT_ROOT, env=env)
        log.info("API and web page started (pid %s) on port %s", self.api.pid, self.options.api_port)

    def _wait_for_api(self) -> None:
        """Ready means its liveness probe answers."""
        assert self.api is not None
        url = f"http://127.0.0.1:{self.options.api_port}/healthz"
        deadline = time.monotonic() + API_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise DevError(f"the API exited with status {self.api.returncode}; last lines of "
                               f"{self.state_dir / API_LOG}:\n{log_tail(self.state_dir / API_LOG, lines=5)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            self._checkpoint()
            time.sleep(0.2)
        raise DevError(f"the API did not answer on {url} within {API_READY_TIMEOUT:.0f} s")

    def _start_worker(self) -> None:
        assert self.server is not None and self.cluster is not None and self.options.worker_script
        script = self.options.worker_script.resolve()
        env = dict(os.environ, TEMPORAL_ADDRESS=self.server.address, TEMPORAL_NAMESPACE=DEFAULT_NAMESPACE,
                   KUBECONFIG=str(self.cluster.kubeconfig), PYTHONUNBUFFERED="1")
        self.worker = spawn([sys.executable, str(script)], log=self.state_dir / WORKER_LOG, cwd=script.parent,
                            env=env)
        self.worker_started = time.monotonic()
        log.info("worker started (pid %s): %s", self.worker.pid, script)

    def _wait_for_worker(self) -> None:
        """Ready means polling: the worker's pollers show up on the task queue."""
        assert self.server is not None and self.worker is not None
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise DevError(f"the worker exited with status {self.worker.returncode} before polling; "
                               f"last lines of {self.state_dir / WORKER_LOG}:\n"
                               f"{log_tail(self.state_dir / WORKER_LOG, lines=3)}")
            if self._has_pollers():
                return
            self._checkpoint()
            time.sleep(0.5)
        raise DevError(f"the worker did not poll task queue {TASK_QUEUE} within {WORKER_READY_TIMEOUT:.0f} s")

    def _has_pollers(self) -> bool:
        assert self.server is not None
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            result = subprocess.run(
                [str(temporal_cli()), "task-queue", "describe", "--task-queue", TASK_QUEUE,
                 "--address", self.server.address, "--namespace", DEFAULT_NAMESPACE, "-o", "json"],
                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
            )
            if result.returncode == 0:
                return bool(json.loads(result.stdout).get("pollers"))
        return False

    # -- run -----------------------------------------------------------------------------

    def _monitor(self) -> None:
        """Fail fast if the server or the cluster dies; restart a crashed worker with backoff."""
        assert self.server is not None and self.cluster is not None
        while True:
            time.sleep(0.5)
            self._checkpoint()
            if self.server.process is None or self.server.process.poll() is not None:
                raise DevError("the Temporal server exited; last lines of its log:\n"
                               f"{self.server.log_tail()}")
            for name, process in self.cluster.processes.items():
                if process.poll() is not None:
                    raise DevError(f"{name} exited with status {process.returncode}; "
                                   f"last lines of its log:\n{self.cluster.log_tail(name)}")
            if self.worker is not None and self.worker.poll() is not None:
                self._restart_worker()
            if self.api is not None and self.api.poll() is not None:
                log.warning("the API (pid %s) exited with status %s; restarting it; see %s", self.api.pid,
                            self.api.returncode, self.state_dir / API_LOG)
                time.sleep(2)
                self._start_api()
                self._write_state()

    def _restart_worker(self) -> None:
        assert self.worker is not None
        ran = time.monotonic() - self.worker_started
        self.worker_restarts = 0 if ran > 60 else self.worker_restarts + 1
        delay = min(30.0, 2.0 ** self.worker_restarts)
        log.warning("worker (pid %s) exited with status %s after %.0f s; restarting in %.0f s; "
                    "see %s", self.worker.pid, self.worker.returncode, ran, delay,
                    self.state_dir / WORKER_LOG)
        time.sleep(delay)
        self._start_worker()
        self._write_state()

    # -- stop ----------------------------------------------------------------------------

    def _stop_all(self) -> None:
        if self.api is not None and self.api.poll() is None:
            log.info("stopping the API")
            stop_all([self.api], WORKER_GRACE)
        if self.worker is not None and self.worker.poll() is None:
            log.info("stopping the worker")
            stop_all([self.worker], WORKER_GRACE)
        if self.cluster is not None:
            log.info("stopping the cluster")
            self.cluster.stop()
        if self.server is not None:
            log.info("stopping the Temporal server")
            self.server.stop()

    # -- state ---------------------------------------------------------------------------

    def _write_file(self, name: str, text: str) -> None:
        """Write atomically, so a reader never sees half a file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.state_dir / name)

    def _write_state(self) -> None:
        assert self.server is not None and self.cluster is not None and self.server.pid is not None
        processes = {"temporal": self.server.pid, **self.cluster.pids}
        if self.worker is not None:
            processes["worker"] = self.worker.pid
        if self.api is not None:
            processes["api"] = self.api.pid
        worker = self.options.worker_script
        api_port = self.options.api_port
        state = DevState(
            state_dir=str(self.state_dir),
            supervisor_pid=os.getpid(),
            started=datetime.now(UTC),
            temporal_address=self.server.address,
            temporal_namespace=DEFAULT_NAMESPACE,
            ui_url=self.server.ui_url,
            db_filename=str(self.state_dir / "temporal.db"),
            kubernetes_server=self.cluster.server,
            kubeconfig=str(self.cluster.kubeconfig),
            worker_script=str(worker.resolve()) if worker else None,
            worker_log=str(self.state_dir / WORKER_LOG) if worker else None,
            processes=processes,
            api_url=f"http://127.0.0.1:{api_port}" if api_port is not None else None,
            api_tokens_file=str(self.state_dir / API_TOKENS_FILE) if api_port is not None else None,
            api_admin_token=self.api_admin_token if api_port is not None else None,
        )
        self._write_file(STATE_FILE, state.model_dump_json(indent=2) + "\n")


# -- client side: used by ``canaryctl dev`` --------------------------------------------------


def read_state(state_dir: Path) -> DevState | None:
    """The running environment's state, or None if none is (fully) up."""
    path = state_dir / STATE_FILE
    try:
        return DevState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def supervisor_pid(state_dir: Path) -> int | None:
    """The PID of a live supervisor for this state dir (starting or running), if any."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if owned(pid, "devenv.supervisor") else None


def launch(options: Options) -> subprocess.Popen[bytes]:
    """Start a detached supervisor; its output goes to ``supervisor.log`` in the state dir."""
    state_dir = options.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, ERROR_FILE):
        (state_dir / name).unlink(missing_ok=True)
    env = dict(os.environ)
    # The supervisor must import devenv and workflows even when the project is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    with (state_dir / LOG_FILE).open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devenv.supervisor", *options.argv()],
            cwd=state_dir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (state_dir / PID_FILE).write_text(f"{process.pid}\n")
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
        terminate(pid, "devenv.supervisor", grace=grace)
    if state is not None:
        for name, child in state.processes.items():
            terminate(child, state.owner_marker(name), grace=10.0)
    for name in (STATE_FILE, PID_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return True


# -- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m devenv.supervisor``: run in the foreground until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devenv.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ui-port", type=int, default=DEFAULT_UI_PORT)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cluster-home", type=Path)
    worker = parser.add_mutually_exclusive_group()
    worker.add_argument("--worker", type=Path, help="worker script (default: the project's worker.py)")
    worker.add_argument("--no-worker", action="store_true")
    api = parser.add_mutually_exclusive_group()
    api.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    api.add_argument("--no-api", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        script = None if args.no_worker else (args.worker or default_worker_script())
    except DevError as err:
        log.error("%s", err)
        return 1
    options = Options(state_dir=args.state_dir, port=args.port, ui_port=args.ui_port, nodes=args.nodes,
                      worker_script=script, cluster_home=args.cluster_home,
                      api_port=None if args.no_api else args.api_port)
    return Supervisor(options).run()


if __name__ == "__main__":
    sys.exit(main())
