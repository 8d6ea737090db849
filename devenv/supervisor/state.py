"""The dev state directory: its layout, the state file, and what ``dev up`` starts with.

The supervisor (:mod:`devenv.supervisor.daemon`) writes here and ``canaryctl dev``
(:mod:`devenv.supervisor.control`) reads here; this module is the only place that knows the
layout, so the two cannot drift apart::

    ~/.cache/canary-delivery/dev/      ($CANARY_DEV_HOME; 0700, every file in it 0600)
      state.json          addresses, paths and PIDs, while the environment is up
      supervisor.pid      the supervisor's PID, from launch until it has stopped
      supervisor.log      the supervisor's own log; error.txt: why the last start failed
      api-tokens.json     the HTTP API's tokens (admin, operator, viewer), made once, kept by reset:
                          the one place a token is shown (dev up and dev status name the file)
      api-token-digests.json  what the API is given: their SHA-256 digests only, rewritten each start
      worker.log, api.log
      temporal.db         Temporal's database: jobs survive dev down / dev up
      temporal/           the Temporal server's log
      cluster/            the local cluster (see devenv.cluster): pki/, etcd/, kubeconfig.yaml,
                          ports.json, logs/ — objects survive dev down / dev up
      prometheus/         Prometheus scraping the simulated mesh (devenv.metrics): config,
                          targets, data/ (its TSDB), prometheus.log, port (reused while free)

``canaryctl dev reset`` deletes ``temporal.db*``, ``temporal/``, ``cluster/`` and ``prometheus/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from devenv.processes import owned

DEFAULT_HOME = Path(os.environ.get("CANARY_DEV_HOME", Path.home() / ".cache" / "canary-delivery" / "dev"))
DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_API_PORT = 8080
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# In the supervisor's command line (``python -m devenv.supervisor``): proves a PID is ours.
SUPERVISOR_MARKER = "devenv.supervisor"

STATE_FILE = "state.json"
PID_FILE = "supervisor.pid"
LOG_FILE = "supervisor.log"
ERROR_FILE = "error.txt"
WORKER_LOG = "worker.log"
API_LOG = "api.log"
API_TOKENS_FILE = "api-tokens.json"
API_TOKEN_DIGESTS_FILE = "api-token-digests.json"
TEMPORAL_DB = "temporal.db"
TEMPORAL_DIR = "temporal"
CLUSTER_DIR = "cluster"
PROMETHEUS_DIR = "prometheus"


class DevError(RuntimeError):
    """The dev environment could not be started, found or stopped."""


class DevState(BaseModel):
    """What ``dev up`` prints and ``dev status``/``dev down`` need: addresses, paths, PIDs.

    No secret goes in here (``dev status -o json`` prints all of it): the API's tokens stay in
    their own file, named by ``api_tokens_file``.
    """

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
    # Process name -> PID: "temporal", the cluster components, "prometheus", "worker" and "api" if they run.
    processes: dict[str, int]
    api_url: str | None = None
    api_tokens_file: str | None = None
    # Prometheus (also in ``processes``) and the simulated mesh it scrapes (threads of the supervisor).
    prometheus_address: str | None = None
    mesh_metrics_url: str | None = None
    # Temporal's HTTP API (None: a state written before it was recorded).
    temporal_http_address: str | None = None

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
    return pid if owned(pid, SUPERVISOR_MARKER) else None


def admin_token(tokens_file: Path) -> str | None:
    """The admin token in the user's tokens file (for scripts and tests that sign in with it)."""
    try:
        entries = json.loads(tokens_file.read_text())["tokens"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return next((str(entry["token"]) for entry in entries if entry.get("role") == "admin"), None)


def reset_paths(state_dir: Path) -> list[Path]:
    """What ``dev reset`` deletes: the cluster's state, Temporal's database and the metrics of both."""
    return [state_dir / CLUSTER_DIR, state_dir / TEMPORAL_DIR, state_dir / PROMETHEUS_DIR,
            *sorted(state_dir.glob(f"{TEMPORAL_DB}*"))]
