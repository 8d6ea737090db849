"""A real Prometheus server on this machine, scraping targets on 127.0.0.1.

The canary judges itself by PromQL, so the tests and ``canaryctl dev up`` need a Prometheus
that really scrapes and really evaluates queries, not a fake that answers what a test expects.
``make setup`` installs Debian's ``prometheus`` package (``/usr/bin/prometheus``, 2.42): it
installs in about 12 s, where building Prometheus 3 (``./cmd/prometheus`` of the Go module
``github.com/prometheus/prometheus@v0.316.0``) took 499 s cold on two shared cores: its
service-discovery plugins pull in every cloud SDK. Both pass the tests. A binary put at
``~/.cache/canary-delivery/cluster/bin/prometheus`` (beside the cluster binaries) or named by
``CANARY_PROMETHEUS`` wins over the package, so a newer build can be tried without changing
code. Nothing is downloaded at run time.

:class:`PrometheusServer` runs it as a child process in the house style of
:class:`devenv.temporal.TemporalDevServer`: free loopback port, own session, parent-death
signal, its own config and TSDB in a run directory. Targets are listed in a file
(``file_sd_configs``) rather than in the config itself, so :meth:`PrometheusServer.add_target`
takes effect without a reload: Prometheus watches that file. Its scrapers take on new targets
every 5 s, so the first sample of a target, even one given at start, comes about 5 s later
(:meth:`PrometheusServer.wait_for` waits for it).

The scrape and evaluation interval defaults to 1 s so that ``rate(...[5s])`` has samples a few
seconds after a target appears; tests wait seconds, not minutes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from devenv.processes import ChildServer, free_port, port_in_use

DEBIAN_BINARY = Path("/usr/bin/prometheus")
CACHE_BINARY = Path(
    os.environ.get("CANARY_CLUSTER_HOME", Path.home() / ".cache" / "canary-delivery" / "cluster")
) / "bin" / "prometheus"
TARGETS_FILE = "targets.json"
JOB = "mesh"

Sample = tuple[dict[str, str], float]


class PrometheusError(RuntimeError):
    """Prometheus is not installed, did not start, or refused a query."""


def prometheus_binary() -> Path:
    """The Prometheus executable: ``CANARY_PROMETHEUS``, a cached build, else Debian's package."""
    override = os.environ.get("CANARY_PROMETHEUS")
    if override:
        if not os.access(override, os.X_OK) or not Path(override).is_file():
            raise PrometheusError(
                f"CANARY_PROMETHEUS={override} is not an executable file: unset it to use the one "
                "`make setup` installs (Debian's prometheus package)"
            )
        return Path(override)
    for candidate in (CACHE_BINARY, DEBIAN_BINARY):
        if candidate.exists():
            return candidate
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    raise PrometheusError(
        "no prometheus binary: run `make setup` (it installs Debian's prometheus package), "
        "or set CANARY_PROMETHEUS to one"
    )


class PrometheusServer(ChildServer):
    """One Prometheus process: start it, add scrape targets, query it, stop it.

    ``targets`` are ``host:port`` strings scraped at ``/metrics`` under one job. The run
    directory holds the config, the targets file, the TSDB and the log; it is deleted on stop
    only if this object created it (``CANARY_KEEP_PROMETHEUS_DIR`` keeps it for debugging).
    """

    keep_env = "CANARY_KEEP_PROMETHEUS_DIR"
    log_name = "prometheus.log"

    def __init__(
        self,
        *,
        targets: Sequence[str] = (),
        port: int | None = None,
        run_dir: Path | None = None,
        scrape_interval: float = 1.0,
        retention: str = "1d",
        start_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        super().__init__(run_dir, "canary-prometheus-")
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.start_timeout = start_timeout
        self._targets: list[str] = list(dict.fromkeys(targets))

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start Prometheus and return once ``/-/ready`` says so.

        Call from a long-lived thread: the parent-death signal fires when the *thread* that
        spawned the server ends.
        """
        binary = prometheus_binary()
        if port_in_use(self.port):
            raise PrometheusError(f"port {self.port} on 127.0.0.1 is already in use")
        (self.run_dir / "data").mkdir(parents=True, exist_ok=True)
        self._write_targets()
        config = self.run_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self._launch([
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.run_dir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ])

    @property
    def address(self) -> str:
        """The base URL of the HTTP API and UI, e.g. ``http://127.0.0.1:9090``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        """The ``host:port`` targets scraped now."""
        return list(self._targets)

    def add_target(self, target: str) -> None:
        """Scrape ``target`` (``host:port``) too, within about 5 s (Prometheus' discovery cadence)."""
        if target not in self._targets:
            self._targets.append(target)
            self._write_targets()

    def remove_target(self, target: str) -> None:
        """Stop scraping ``target``; its series go stale."""
        if target in self._targets:
            self._targets.remove(target)
            self._write_targets()


    # -- queries -------------------------------------------------------------------------

    def query_all(self, promql: str) -> list[Sample]:
        """Evaluate ``promql`` now: each sample's labels and value (a scalar has no labels)."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            raise PrometheusError(f"query {promql!r} failed: {err.read().decode(errors='replace')}") from err
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PrometheusError(f"query {promql!r} gave a {data['resultType']}, not an instant vector")
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]

    def query(self, promql: str) -> float | None:
        """The single value of ``promql`` now; None when it has no series.

        NaN (e.g. ``0/0`` of a ratio with no traffic) comes back as NaN, not None: "no data"
        and "data that says nothing" are different answers to a canary judge.
        """
        samples = self.query_all(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise PrometheusError(f"query {promql!r} gave {len(samples)} series; aggregate it to one")
        return samples[0][1]

    def wait_for(self, promql: str, timeout: float = 30.0) -> float:
        """Poll ``promql`` until it has a value that is not NaN; return that value."""
        deadline = time.monotonic() + timeout
        value: float | None = None
        while time.monotonic() < deadline:
            value = self.query(promql)
            if value is not None and not math.isnan(value):
                return value
            time.sleep(0.5)
        raise PrometheusError(f"{promql!r} had no value after {timeout:.0f} s (last: {value})")

    # -- internals -----------------------------------------------------------------------

    def _config(self) -> dict[str, object]:
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "scrape_timeout": interval},
            "scrape_configs": [{
                "job_name": JOB,
                "file_sd_configs": [{"files": [str(self.run_dir / TARGETS_FILE)],
                                     "refresh_interval": "1s"}],
            }],
        }

    def _write_targets(self) -> None:
        """Replace the targets file atomically, so Prometheus never reads half of it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / TARGETS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": self._targets}] if self._targets else []))
        tmp.replace(path)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with status {self.process.returncode}; "
                    f"last lines of its log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.address}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.1)
        raise PrometheusError(
            f"prometheus at {self.address} not ready after {self.start_timeout:.0f} s"
            f"{': ' + last if last else ''}; last lines of its log:\n{self.log_tail()}"
        )
