"""Tunable settings of the local control plane's components: client rate limits, concurrency.

At the defaults of its binaries the control plane is the bottleneck of a fleet benchmark:
kube-controller-manager talks to the API server at 20 requests per second (burst 30) and
syncs five Deployments and five ReplicaSets at a time, so two hundred simultaneous releases
queue up in the controllers and the figures measure them, not the job. A comparison with
another controller is only fair with the same limits on both sides (Argo Rollouts was measured
with ``--qps 500 --burst 1000``). :class:`ComponentSettings` says what to raise; its defaults
reproduce the flags the local cluster has always passed, so nothing changes unless asked.

The scheduler takes its client limits only from its configuration file (its ``--kube-api-qps``
flag is deprecated and ignored once ``--config`` is given), so the settings also render that
file; the API server and the controller manager take plain flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The binaries' own defaults (Kubernetes 1.36), for printing what an unset field means.
CONTROLLER_MANAGER_QPS = 20.0
CONTROLLER_MANAGER_BURST = 30
CONCURRENT_SYNCS = 5
SCHEDULER_QPS = 50.0
SCHEDULER_BURST = 100
SCHEDULER_CONFIG_API = "kubescheduler.config.k8s.io/v1"


@dataclass(frozen=True)
class ComponentSettings:
    """What the local cluster passes to its components beyond their fixed flags.

    ``None`` leaves a binary's default in place. The API server's in-flight limits default to
    0 (unlimited), as the cluster has always run: priority and fairness is off, so these two
    numbers are its only admission control. The ``*_flags`` tuples are appended verbatim after
    every other flag (the last occurrence of a flag wins), for anything not modelled here.
    """

    controller_manager_qps: float | None = None
    controller_manager_burst: int | None = None
    concurrent_deployment_syncs: int | None = None
    concurrent_replicaset_syncs: int | None = None
    scheduler_qps: float | None = None
    scheduler_burst: int | None = None
    max_requests_inflight: int = 0
    max_mutating_requests_inflight: int = 0
    apiserver_flags: tuple[str, ...] = ()
    controller_manager_flags: tuple[str, ...] = ()
    scheduler_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse values the components would reject only after the cluster half started."""
        for name in ("controller_manager_qps", "scheduler_qps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("controller_manager_burst", "scheduler_burst", "concurrent_deployment_syncs",
                     "concurrent_replicaset_syncs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("max_requests_inflight", "max_mutating_requests_inflight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (unlimited) or more, got {getattr(self, name)}")
        for name in ("apiserver_flags", "controller_manager_flags", "scheduler_flags"):
            bad = [flag for flag in getattr(self, name) if not flag.startswith("--")]
            if bad:
                raise ValueError(f"{name} takes --flag=value items, got {bad[0]!r}")

    def apiserver_args(self) -> list[str]:
        """Flags for kube-apiserver."""
        return [f"--max-requests-inflight={self.max_requests_inflight}",
                f"--max-mutating-requests-inflight={self.max_mutating_requests_inflight}",
                *self.apiserver_flags]

    def controller_manager_args(self) -> list[str]:
        """Flags for kube-controller-manager; none for unset fields."""
        args: list[str] = []
        for flag, value in (("--kube-api-qps", self.controller_manager_qps),
                            ("--kube-api-burst", self.controller_manager_burst),
                            ("--concurrent-deployment-syncs", self.concurrent_deployment_syncs),
                            ("--concurrent-replicaset-syncs", self.concurrent_replicaset_syncs)):
            if value is not None:
                args.append(f"{flag}={value:g}" if isinstance(value, float) else f"{flag}={value}")
        return [*args, *self.controller_manager_flags]

    def scheduler_config(self, kubeconfig: Path) -> dict[str, Any]:
        """kube-scheduler's configuration file: the client connection and what its flags used to say.

        Once ``--config`` is given the scheduler ignores its deprecated ``--kubeconfig``,
        ``--leader-elect`` and ``--profiling`` flags, so they move in here.
        """
        connection: dict[str, Any] = {"kubeconfig": str(kubeconfig)}
        if self.scheduler_qps is not None:
            connection["qps"] = self.scheduler_qps
        if self.scheduler_burst is not None:
            connection["burst"] = self.scheduler_burst
        return {
            "apiVersion": SCHEDULER_CONFIG_API,
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": connection,
            "leaderElection": {"leaderElect": False},
            "enableProfiling": False,
            "enableContentionProfiling": False,
        }

    def describe(self) -> str:
        """One line per component with every value in effect, defaults named as such."""
        def value(given: float | None, default: float) -> str:
            return f"{given:g}" if given is not None else f"{default:g} (default)"

        def inflight(limit: int) -> str:
            return f"{limit}" if limit else "0 (unlimited)"

        lines = [
            f"kube-apiserver: max-requests-inflight {inflight(self.max_requests_inflight)}, "
            f"max-mutating-requests-inflight {inflight(self.max_mutating_requests_inflight)}",
            f"kube-controller-manager: kube-api-qps {value(self.controller_manager_qps, CONTROLLER_MANAGER_QPS)}, "
            f"kube-api-burst {value(self.controller_manager_burst, CONTROLLER_MANAGER_BURST)}, "
            f"concurrent-deployment-syncs {value(self.concurrent_deployment_syncs, CONCURRENT_SYNCS)}, "
            f"concurrent-replicaset-syncs {value(self.concurrent_replicaset_syncs, CONCURRENT_SYNCS)}",
            f"kube-scheduler: clientConnection.qps {value(self.scheduler_qps, SCHEDULER_QPS)}, "
            f"clientConnection.burst {value(self.scheduler_burst, SCHEDULER_BURST)}",
        ]
        for component, extra in (("kube-apiserver", self.apiserver_flags),
                                 ("kube-controller-manager", self.controller_manager_flags),
                                 ("kube-scheduler", self.scheduler_flags)):
            if extra:
                lines.append(f"{component} extra flags: {' '.join(extra)}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, for benchmark result files."""
        return {
            "max_requests_inflight": self.max_requests_inflight,
            "max_mutating_requests_inflight": self.max_mutating_requests_inflight,
            "controller_manager_qps": self.controller_manager_qps or CONTROLLER_MANAGER_QPS,
            "controller_manager_burst": self.controller_manager_burst or CONTROLLER_MANAGER_BURST,
            "concurrent_deployment_syncs": self.concurrent_deployment_syncs or CONCURRENT_SYNCS,
            "concurrent_replicaset_syncs": self.concurrent_replicaset_syncs or CONCURRENT_SYNCS,
            "scheduler_qps": self.scheduler_qps or SCHEDULER_QPS,
            "scheduler_burst": self.scheduler_burst or SCHEDULER_BURST,
            "apiserver_flags": list(self.apiserver_flags),
            "controller_manager_flags": list(self.controller_manager_flags),
            "scheduler_flags": list(self.scheduler_flags),
        }
