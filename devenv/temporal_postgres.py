"""A full Temporal server on PostgreSQL, for benchmarks that ask what the dev server's SQLite costs.

The dev server (:mod:`devenv.temporal`) keeps its state in an in-memory SQLite and runs every
service in one process: right for tests and the demo, and the fleet benchmark's default. Issue 9
asks whether that database is the limit at fleet scale; answering means the same workload against
the real thing: the server binary built from its Go module (``scripts/build-temporal-server.sh``)
with its four services, persistence and visibility on a PostgreSQL cluster from Debian's package,
started here in a throwaway data directory (fsync on, as a production database runs).

Nothing else uses this class; ``make test`` and ``make demo`` never build the server.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devenv.processes import Service, free_port, log_tail, port_in_use, spawn, stop_all
from devenv.temporal import DEFAULT_NAMESPACE, TemporalError, cli_type, temporal_cli
from workflows import search

VERSION = os.environ.get("TEMPORAL_SERVER_VERSION", "v1.32.0")
HOME = Path(os.environ.get("CANARY_TEMPORAL_SERVER_HOME",
                           Path.home() / ".cache" / "canary-delivery" / "temporal-server")) / VERSION
# Debian puts the server programs beside each other, outside PATH (only the client tools are on it).
POSTGRES_BIN = Path(os.environ.get("CANARY_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
USER = "temporal"
SHARDS = 4  # what the server's own PostgreSQL example uses; the dev server has one

CONFIG = """\
log: {{stdout: true, level: warn}}
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: {shards}
  datastores:
    default:
      sql: {{pluginName: postgres12, databaseName: temporal, connectAddr: "127.0.0.1:{pg_port}",
             connectProtocol: tcp, user: {user}, password: "", maxConns: 20, maxIdleConns: 20,
             maxConnLifetime: 1h}}
    visibility:
      sql: {{pluginName: postgres12, databaseName: temporal_visibility, connectAddr: "127.0.0.1:{pg_port}",
             connectProtocol: tcp, user: {user}, password: "", maxConns: 4, maxIdleConns: 4,
             maxConnLifetime: 1h}}
global:
  membership: {{maxJoinDuration: 30s, broadcastAddress: 127.0.0.1}}
services:
  frontend: {{rpc: {{grpcPort: {frontend}, membershipPort: {m1}, bindOnLocalHost: true, httpPort: {http}}}}}
  matching: {{rpc: {{grpcPort: {matching}, membershipPort: {m2}, bindOnLocalHost: true}}}}
  history: {{rpc: {{grpcPort: {history}, membershipPort: {m3}, bindOnLocalHost: true}}}}
  worker: {{rpc: {{grpcPort: {worker}, membershipPort: {m4}, bindOnLocalHost: true}}}}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active: {{enabled: true, initialFailoverVersion: 1, rpcName: frontend, rpcAddress: "127.0.0.1:{frontend}"}}
dcRedirectionPolicy: {{policy: noop}}
"""


def binaries() -> tuple[Path, Path]:
    """``temporal-server`` and ``temporal-sql-tool``, or a clear message saying how to build them."""
    server, tool = HOME / "bin" / "temporal-server", HOME / "bin" / "temporal-sql-tool"
    if not (server.exists() and tool.exists()):
        raise TemporalError(f"no Temporal server {VERSION} in {HOME / 'bin'}: run scripts/build-temporal-server.sh")
    return server, tool


def _low_ports(count: int) -> list[int]:
    """``count`` ports below 32768 that nothing listens on now."""
    found: list[int] = []
    for port in random.Random().sample(range(20000, 32000), 200):
        if not port_in_use(port):
            found.append(port)
            if len(found) == count:
                return found
    raise TemporalError("no free ports below 32768 for the Temporal server's membership")


def _as_database_owner(directory: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts, owning ``directory``.

    PostgreSQL refuses to run as root. As root (a CI machine, a container), the programs run as
    Debian's ``postgres`` user through ``setpriv``, which execs in place: the PID we hold is the
    postmaster's, so stopping it and counting its CPU need nothing more.
    """
    if os.geteuid() != 0:
        return []
    owner = pwd.getpwnam("postgres")
    directory.parent.chmod(0o755)
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    return ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups"]


class TemporalPostgresServer(Service):
    """PostgreSQL plus ``temporal-server`` (all four services in one process), both children of ours.

    Offers what the benchmarks read from :class:`devenv.temporal.TemporalDevServer`: ``address``
    and ``pid`` (the Temporal server), and ``db_pid`` (the postmaster: its backends are its
    descendants, so a CPU count of it covers the database whole).
    """

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, start_timeout: float = 120.0) -> None:
        self.namespace, self.start_timeout = namespace, start_timeout
        self.run_dir = Path(tempfile.mkdtemp(prefix="canary-temporal-pg-"))
        self.pg_port, self.port = free_port(), free_port()
        self.postgres: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The frontend's gRPC address."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The Temporal server's PID while it runs."""
        return self.server.pid if self.server is not None else None

    @property
    def db_pid(self) -> int | None:
        """The postmaster's PID while it runs (its backends are its children)."""
        return self.postgres.pid if self.postgres is not None else None

    def start(self) -> None:
        """Database, schemas, server, namespace and search attributes; stopped again on any failure."""
        server, tool = binaries()
        try:
            self._start_postgres()
            self._create_schemas(tool)
            self._start_server(server)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Server first (it writes to the database until it goes), then PostgreSQL."""
        stop_all([p for p in (self.server, self.postgres) if p is not None], grace=15)
        self.server = self.postgres = None
        if not os.environ.get("CANARY_KEEP_TEMPORAL_DIR"):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- PostgreSQL ----------------------------------------------------------------------

    def _start_postgres(self) -> None:
        pg = self.run_dir / "pg"
        pg.mkdir()
        as_owner = _as_database_owner(pg)
        data = pg / "data"
        self._run([*as_owner, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                   "-E", "UTF8"])
        self.postgres = spawn([*as_owner, str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(self.pg_port),
                               "-k", str(pg), "-c", "listen_addresses=127.0.0.1",
                               "-c", "max_connections=200", "-c", "shared_buffers=256MB"],
                              log=self.run_dir / "postgres.log")
        self._wait("PostgreSQL", lambda: port_in_use(self.pg_port), self.postgres, self.run_dir / "postgres.log")

    def _create_schemas(self, tool: Path) -> None:
        schema = HOME / "schema" / "postgresql" / "v12"
        for database, versioned in (("temporal", schema / "temporal" / "versioned"),
                                    ("temporal_visibility", schema / "visibility" / "versioned")):
            base = [str(tool), "--plugin", "postgres12", "--ep", "127.0.0.1", "-p", str(self.pg_port),
                    "-u", USER, "--db", database]
            self._run([*base, "create-database"])
            self._run([*base, "setup-schema", "-v", "0.0"])
            self._run([*base, "update-schema", "-d", str(versioned)])

    # -- Temporal ------------------------------------------------------------------------

    def _start_server(self, server: Path) -> None:
        ports = {name: free_port() for name in ("http", "matching", "history", "worker")}
        # Membership ports are stored in a smallint column: they must be below 32768, and the
        # kernel's free ports are not.
        ports.update(zip(("m1", "m2", "m3", "m4"), _low_ports(4), strict=True))
        config = self.run_dir / "config.yaml"
        config.write_text(CONFIG.format(shards=SHARDS, pg_port=self.pg_port, user=USER, frontend=self.port, **ports))
        self.server = spawn([str(server), "--config-file", str(config), "--allow-no-auth", "start"],
                            log=self.run_dir / "temporal.log")
        cli = str(temporal_cli())
        address = ["--address", self.address]

        def ready() -> bool:
            # The namespace first (a fresh server has none), then the job's search attributes.
            made = subprocess.run([cli, "operator", "namespace", "create", "--namespace", self.namespace,
                                   "--retention", "24h", *address], capture_output=True, text=True, timeout=15)
            if made.returncode != 0 and "already" not in (made.stderr + made.stdout).lower():
                return False
            create = [cli, "operator", "search-attribute", "create", "--namespace", self.namespace, *address]
            for key in search.ALL:
                create += ["--name", key.name, "--type", cli_type(key)]
            return subprocess.run(create, capture_output=True, timeout=15).returncode == 0

        self._wait("temporal-server", lambda: port_in_use(self.port) and ready(), self.server,
                   self.run_dir / "temporal.log")

    # -- helpers -------------------------------------------------------------------------

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise TemporalError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: "
                                f"{(result.stderr or result.stdout).strip()[-2000:]}")

    def _wait(self, what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TemporalError(f"{what} exited with status {process.returncode}:\n{log_tail(log)}")
            if ready():
                return
            time.sleep(0.5)
        raise TemporalError(f"{what} not ready after {self.start_timeout:.0f} s:\n{log_tail(log)}")
