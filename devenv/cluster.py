"""A real, container-free Kubernetes control plane on this machine.

The tests, the demo and ``canaryctl dev up`` all need the same thing: an API server whose
controllers really create ReplicaSets and Pods, a scheduler that places them, and nodes that
make them Running and Ready. This module starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated kubelets) from the binaries that
``scripts/build-cluster.sh`` builds, all on 127.0.0.1 with free ports, and stops every process
it started. The traffic routers' CRDs (Istio's VirtualService and DestinationRule, Gateway
API's HTTPRoute and friends; see ``devenv/crds.py``) are installed by default, so routing
objects are validated against their real schemas.

By default a cluster lives in a fresh run directory that ``stop()`` deletes (tests want a clean
slate each time). With ``state_dir`` it is persistent instead, as the dev environment needs:
the certificates, etcd's data, the kubeconfig and the ports (``ports.json``) stay in that
directory, and the next start reuses them, so every object — Deployments, the kwok nodes —
and the kubeconfig the user exported survive a restart. A recorded port that something else
took meanwhile is replaced by a free one and the kubeconfig rewritten in place, so its path
keeps working. Keys, the kubeconfig and etcd's data are readable by their owner only.

Processes are started in their own session and with a parent-death signal, so a test run
that is killed outright does not leave a control plane behind; ``stop()`` is the orderly
path and waits until every PID and port is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from devenv import crds as crd_sets
from devenv.components import ComponentSettings
from devenv.files import make_private_dir, secure_tree, write_private
from devenv.processes import Service, free_port, log_tail, port_in_use, spawn, stop_all

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_HOME = Path(
    os.environ.get("CANARY_CLUSTER_HOME", Path.home() / ".cache" / "canary-delivery" / "cluster")
)
POD_STAGES = Path(__file__).with_name("kwok-pod-stages.yaml")
# Node stages, plus the pod stages we do not override, taken from kwok's module at build time.
UPSTREAM_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORTS_FILE = "ports.json"
# Taints the node lifecycle controller puts on nodes whose kubelet (here: kwok) is not heard from.
UNSCHEDULABLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
SIMULATE_LABEL = "canary-delivery.dev/simulate"
READY_DELAY_ANNOTATION = "canary-delivery.dev/ready-delay"
SCHEDULER_CONFIG = "kube-scheduler-config.yaml"

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The local cluster could not be built, started or reached."""


def advertise_flags() -> list[str]:
    """Pick ``--advertise-address`` for this machine.

    The apiserver only uses it for the ``kubernetes`` Service's endpoints, but it refuses to
    start without a default route unless told an address, and loopback is rejected as an
    endpoint. So: nothing with a default route, the host's first address without one, and
    loopback with the endpoint reconciler off as the last resort.
    """
    with contextlib.suppress(OSError):
        routes = Path("/proc/net/route").read_text().splitlines()[1:]
        if any(line.split()[1] == "00000000" for line in routes if len(line.split()) > 1):
            return []
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not address.startswith("127."):
                return [f"--advertise-address={address}"]
    return ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]


@dataclass
class Ports:
    """The loopback ports one cluster listens on."""

    etcd: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)
    kwok: int = field(default_factory=free_port)

    def all(self) -> list[int]:
        """Every port, for the check that nothing is left listening after stop."""
        return [
            self.etcd,
            self.etcd_peer,
            self.apiserver,
            self.controller_manager,
            self.scheduler,
            self.kwok,
        ]

    @classmethod
    def reuse(cls, path: Path) -> Ports:
        """The ports recorded in ``path``, each kept if still free and replaced otherwise.

        Fresh ones for a missing or unreadable record: a state dir from before ports were
        recorded starts like a new one, and its kubeconfig is rewritten anyway.
        """
        try:
            recorded = {name: int(port) for name, port in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()
        names = [f.name for f in fields(cls)]
        chosen: dict[str, int] = {}
        for name in names:
            port = recorded.get(name)
            if port is not None and 0 < port < 65536 and port not in chosen.values() and not port_in_use(port):
                chosen[name] = port
        for name in names:
            while name not in chosen or list(chosen.values()).count(chosen[name]) > 1:
                chosen[name] = free_port()
        return cls(**chosen)

    def save(self, path: Path) -> None:
        """Record the ports, so the next start of a persistent cluster listens on the same ones."""
        write_private(path, json.dumps(vars(self), indent=2) + "\n")


class LocalCluster(Service):
    """One control plane: start it, hand out its kubeconfig, stop it.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        home: Path = DEFAULT_HOME,
        run_dir: Path | None = None,
        state_dir: Path | None = None,
        nodes: int = 3,
        start_timeout: float = 90.0,
        components: ComponentSettings | None = None,
        crds: Sequence[crd_sets.CrdSet] = crd_sets.ALL_SETS,
    ) -> None:
        """Set up a cluster; nothing starts yet.

        ``state_dir`` makes the cluster persistent (kept on stop, reused on start); without it
        the cluster runs in ``run_dir`` (a fresh temporary directory if None), deleted on stop.
        ``components`` raises client rate limits and concurrency of the components (benchmarks
        of many jobs); the defaults start them as they always were.
        ``crds`` names the CRD sets to install (``()``: a cluster without any, as a cluster
        without a mesh looks to the routers).
        """
        if run_dir is not None and state_dir is not None:
            raise ValueError("give run_dir (throwaway) or state_dir (persistent), not both")
        self.bin_dir = home / "bin"
        self.stages_dir = home / "kwok-stages"
        self.persistent = state_dir is not None
        self.run_dir = state_dir or run_dir or Path(tempfile.mkdtemp(prefix="canary-cluster-"))
        self.nodes = nodes
        self.start_timeout = start_timeout
        self.components = components or ComponentSettings()
        self.ports = Ports.reuse(self.run_dir / PORTS_FILE) if self.persistent else Ports()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.pki = self.run_dir / "pki"
        self.logs = self.run_dir / "logs"
        self.kubeconfig = self.run_dir / "kubeconfig.yaml"
        self.scheduler_config = self.run_dir / SCHEDULER_CONFIG
        self.home = home
        self.crd_sets = tuple(crds)
        self._crds: list[dict[str, Any]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every component in order and wait until a Deployment can become available."""
        self._check_binaries()
        try:
            for directory in (self.run_dir, self.pki, self.logs, self.run_dir / "etcd"):
                make_private_dir(directory)
            if not self._pki_complete():
                self._write_pki()
            secure_tree(self.run_dir)  # also tightens a state dir written by an older version
            self._write_kubeconfig()
            if self.persistent:
                self.ports.save(self.run_dir / PORTS_FILE)
            self._write_kwok_config()
            self._write_scheduler_config()
            log.info("local cluster component settings:\n%s", self.components.describe())
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            self._start_kwok()
            self._create_nodes()
            self._smoke_test()
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 3.0) -> None:
        """Stop what this object started, newest first; SIGKILL whatever outlives ``grace``."""
        stop_all(reversed(list(self.processes.values())), grace)
        self.processes.clear()
        if self.persistent:
            return
        if self.run_dir.exists() and not os.environ.get("CANARY_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the running components, by name."""
        return {name: p.pid for name, p in self.processes.items()}

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def api_client(self) -> ApiClient:
        """An API client for this cluster's admin user; the caller closes it."""
        from kubernetes import config

        api: ApiClient = config.new_client_from_config(config_file=str(self.kubeconfig))
        return api

    # -- steps ---------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        missing = [name for name in COMPONENTS if not (self.bin_dir / name).exists()]
        if missing or not self.stages_dir.is_dir():
            raise ClusterError(
                f"cluster binaries missing in {self.bin_dir} ({', '.join(missing) or 'kwok stages'}): "
                "run scripts/build-cluster.sh (or `make cluster`) first"
            )
        try:  # read before anything starts: a missing CRD cache fails as fast as a missing binary
            self._crds = crd_sets.load(self.home, self.crd_sets)
        except crd_sets.CrdError as error:
            raise ClusterError(str(error)) from error

    def _install_crds(self) -> None:
        if not self._crds:
            return
        with self._client() as api:
            try:
                crd_sets.install(api, self._crds, timeout=self.start_timeout)
            except crd_sets.CrdError as error:
                raise ClusterError(str(error)) from error

    def _pki_complete(self) -> bool:
        """Whether an earlier start left every key and certificate; reuse them if so.

        Reusing them is what keeps the user's kubeconfig and the service-account tokens stored
        in etcd valid across restarts. Anything missing (a start killed while writing them)
        means new ones, all of them: a partial set would not chain.
        """
        names = ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key",
                 "sa.key", "sa.pub")
        return all((self.pki / name).is_file() and (self.pki / name).stat().st_size > 0 for name in names)

    def _write_pki(self) -> None:
        def openssl(*args: str) -> None:
            result = subprocess.run(["openssl", *args], cwd=self.pki, capture_output=True, text=True)
            if result.returncode != 0:
                raise ClusterError(f"openssl {args[0]} failed: {result.stderr.strip()}")

        (self.pki / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        )
        (self.pki / "client.ext").write_text(
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        )
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "3650", "-subj", "/CN=canary-local-ca", "-keyout", "ca.key", "-out", "ca.crt")
        for name, subject, ext in (
            ("apiserver", "/CN=kube-apiserver", "server.ext"),
            ("admin", "/O=system:masters/CN=admin", "client.ext"),
        ):
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", f"{name}.crt")
        openssl("genrsa", "-out", "sa.key", "2048")
        openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": self.server,
                                              "certificate-authority": str(self.pki / "ca.crt")}}
            ],
            "users": [
                {"name": "admin", "user": {"client-certificate": str(self.pki / "admin.crt"),
                                           "client-key": str(self.pki / "admin.key")}}
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        write_private(self.kubeconfig, yaml.safe_dump(config))

    def _write_kwok_config(self) -> None:
        parts = [(self.stages_dir / rel).read_text() for rel in UPSTREAM_STAGES]
        parts.append(POD_STAGES.read_text())
        (self.run_dir / "kwok-stages.yaml").write_text("\n---\n".join(parts))

    def _write_scheduler_config(self) -> None:
        write_private(self.scheduler_config,
                      yaml.safe_dump(self.components.scheduler_config(self.kubeconfig), sort_keys=False))

    def _spawn(self, name: str, args: list[str]) -> None:
        self.processes[name] = spawn([str(self.bin_dir / name), *args], log=self.logs / f"{name}.log",
                                     cwd=self.run_dir)

    def _wait(self, name: str, probe: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise ClusterError(
                    f"{name} exited with status {process.returncode} before {what}; "
                    f"last lines of its log:\n{self.log_tail(name)}"
                )
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.2)
        raise ClusterError(
            f"{name}: timed out after {self.start_timeout:.0f} s waiting for {what}; "
            f"last lines of its log:\n{self.log_tail(name)}"
        )

    def log_tail(self, name: str, lines: int = 25) -> str:
        """The last lines of a component's log, for error messages."""
        return log_tail(self.logs / f"{name}.log", lines)

    def _get(self, url: str, *, verify: bool = True) -> str:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return str(response.read().decode())

    def _start_etcd(self) -> None:
        p = self.ports
        self._spawn("etcd", [
            "--name=node0", f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
            f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-cluster=node0=http://127.0.0.1:{p.etcd_peer}",
            "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--auto-compaction-retention=1",
            "--quota-backend-bytes=2147483648", "--log-level=warn",
        ])
        self._wait("etcd", lambda: '"health":"true"' in self._get(f"http://127.0.0.1:{p.etcd}/health"),
                   "/health")

    def _start_apiserver(self) -> None:
        p, pki = self.ports, self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{p.etcd}",
            "--bind-address=127.0.0.1", f"--secure-port={p.apiserver}", *advertise_flags(),
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC", "--allow-privileged=true",
            f"--cert-dir={self.run_dir / 'apiserver-certs'}", "--profiling=false",
            "--enable-priority-and-fairness=false", "--v=1",
            *self.components.apiserver_args(),
        ])
        self._wait("kube-apiserver",
                   lambda: self._get(f"{self.server}/readyz").strip() == "ok", "/readyz")

    def _start_controllers(self) -> None:
        p, pki, kubeconfig = self.ports, self.pki, str(self.kubeconfig)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={p.controller_manager}", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--profiling=false", "--v=1",
            *self.components.controller_manager_args(),
        ])
        # Client, leader election and profiling come from the config file (see devenv.components).
        self._spawn("kube-scheduler", [
            f"--config={self.scheduler_config}", "--bind-address=127.0.0.1",
            f"--secure-port={p.scheduler}", "--v=1", *self.components.scheduler_flags,
        ])
        self._install_crds()  # while the controllers start: they need none of them
        self._wait("kube-controller-manager",
                   lambda: self._get(f"https://127.0.0.1:{p.controller_manager}/healthz",
                                     verify=False) == "ok", "/healthz")
        self._wait("kube-scheduler",
                   lambda: self._get(f"https://127.0.0.1:{p.scheduler}/healthz", verify=False) == "ok",
                   "/healthz")

    def _start_kwok(self) -> None:
        self._spawn("kwok", [
            f"--kubeconfig={self.kubeconfig}", f"--config={self.run_dir / 'kwok-stages.yaml'}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40", "--cidr=10.244.0.0/16",
            f"--server-address=127.0.0.1:{self.ports.kwok}",
        ])
        self._wait("kwok", lambda: self._get(f"http://127.0.0.1:{self.ports.kwok}/healthz") == "ok",
                   "/healthz")

    def _create_nodes(self) -> None:
        from kubernetes import client

        with self._client() as api:
            core = client.CoreV1Api(api)
            existing = {node.metadata.name for node in core.list_node().items}
            wanted = [f"kwok-node-{i}" for i in range(self.nodes)]
            for name in wanted:
                if name in existing:  # a persistent cluster keeps its nodes; kwok takes them up again
                    continue
                core.create_node({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                                   "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
                    },
                    "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "500"},
                               "capacity": {"cpu": "32", "memory": "256Gi", "pods": "500"}},
                })

            def nodes_schedulable() -> bool:
                nodes = [n for n in core.list_node().items if n.metadata.name in wanted]
                return len(nodes) == self.nodes and all(
                    any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                    and not any(t.key in UNSCHEDULABLE_TAINTS for t in (n.spec.taints or []))
                    for n in nodes
                )

            self._wait("kwok", nodes_schedulable, f"{self.nodes} Ready nodes without the not-ready taint")

    def _smoke_test(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self._client() as api:
            apps = client.AppsV1Api(api)
            core = client.CoreV1Api(api)
            self._wait("kube-controller-manager",
                       lambda: core.read_namespaced_service_account("default", "default") is not None,
                       "the default ServiceAccount")
            # A start killed half-way may have left the smoke Deployment in a persistent cluster.
            with contextlib.suppress(ApiException):
                apps.delete_namespaced_deployment("cluster-smoke", "default", propagation_policy="Foreground")
            self._wait("kube-controller-manager", lambda: not _exists(
                lambda: apps.read_namespaced_deployment("cluster-smoke", "default")),
                "an old smoke Deployment to go")
            apps.create_namespaced_deployment("default", smoke_deployment())

            def available() -> bool:
                status = apps.read_namespaced_deployment_status("cluster-smoke", "default").status
                return (status.available_replicas or 0) == 1

            self._wait("kube-controller-manager", available, "the smoke Deployment to become available")
            apps.delete_namespaced_deployment("cluster-smoke", "default")

    @contextlib.contextmanager
    def _client(self) -> Iterator[ApiClient]:
        api = self.api_client()
        try:
            yield api
        finally:
            api.close()


def _exists(read: Callable[[], object]) -> bool:
    """Whether a read finds its object (404: no; any other error propagates)."""
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def smoke_deployment() -> dict[str, object]:
    """A one-replica Deployment that proves scheduling, the controllers and kwok work."""
    labels = {"app": "cluster-smoke"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cluster-smoke", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.local/smoke:1"}]},
            },
        },
    }
