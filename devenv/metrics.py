"""The dev environment's metrics: a real Prometheus scraping the simulated mesh.

Entry point for ``canaryctl dev up``::

    prometheus, simulator = start_metrics(cluster.kubeconfig, state_dir)
    print(f"Prometheus: {prometheus.address}")
    ...
    stop_metrics(prometheus, simulator)

:func:`start_metrics` starts a :class:`~devenv.traffic.TrafficSimulator` for every Service of
the cluster (so a Deployment the user applies later gets traffic without any wiring) and a
:class:`~devenv.prometheus.PrometheusServer` scraping it, with its TSDB under
``state_dir/prometheus`` so history survives a restart. Call it from a long-lived thread (the
parent-death signal of the Prometheus child fires when the spawning thread ends); the
simulator's threads live in the calling process.

``python -m devenv.metrics --kubeconfig PATH`` runs both in the foreground, for trying queries
by hand against a running ``dev up`` cluster.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path

from devenv.mesh_routes import DEFAULT_HEADER_SHARE
from devenv.prometheus import PrometheusServer
from devenv.traffic import TrafficSimulator


def start_metrics(
    kubeconfig: Path,
    state_dir: Path | None = None,
    *,
    services: Sequence[tuple[str, str]] | None = None,
    rate: float = 20.0,
    port: int | None = None,
    header_share: float = DEFAULT_HEADER_SHARE,
) -> tuple[PrometheusServer, TrafficSimulator]:
    """Start the simulator (``services``: (namespace, name) pairs, None for all) and Prometheus.

    ``header_share`` is the fraction of simulated requests carrying the test header that header
    routes (a job's ``setHeaderRoute``) match.

    Returns once Prometheus is ready and scrapes the simulator; nothing is left running if
    either fails to start. ``state_dir`` None keeps Prometheus' data in a temporary directory
    that :func:`stop_metrics` deletes.
    """
    simulator = TrafficSimulator(kubeconfig, services, rate=rate, header_share=header_share)
    simulator.start()
    run_dir = state_dir / "prometheus" if state_dir is not None else None
    prometheus = PrometheusServer(targets=[simulator.address], run_dir=run_dir, port=port)
    try:
        prometheus.start()
    except BaseException:
        simulator.stop()
        raise
    return prometheus, simulator


def stop_metrics(prometheus: PrometheusServer, simulator: TrafficSimulator) -> None:
    """Stop both, Prometheus first (so its last scrape does not fail against a closed port)."""
    try:
        prometheus.stop()
    finally:
        simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run Prometheus and the simulator until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devenv.metrics", description=main.__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per Service")
    parser.add_argument("--port", type=int, default=None, help="Prometheus port (default: a free one)")
    parser.add_argument("--header-share", type=float, default=DEFAULT_HEADER_SHARE,
                        help="fraction of requests a header route matches")
    args = parser.parse_args(argv)
    prometheus, simulator = start_metrics(args.kubeconfig, args.state_dir, rate=args.rate, port=args.port,
                                          header_share=args.header_share)
    print(f"Prometheus: {prometheus.address}  (simulated mesh at http://{simulator.address}/metrics)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_metrics(prometheus, simulator)


if __name__ == "__main__":
    main()
