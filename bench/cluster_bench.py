"""Local cluster figures: start time, stop time, memory of each component; prints, asserts nothing.

    .venv/bin/python bench/cluster_bench.py [--runs 3]

Memory is read from /proc after the smoke Deployment is available and again after 100 pods
have been scheduled and made Ready, as peak resident set size (VmHWM) per component.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devenv.cluster import LocalCluster


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def load(cluster: LocalCluster, pods: int) -> float:
    api = cluster.api_client()
    apps = k8s.AppsV1Api(api)
    labels = {"app": "load"}
    started = time.monotonic()
    apps.create_namespaced_deployment("default", {
        "metadata": {"name": "load"},
        "spec": {"replicas": pods, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/load:1"}]}}}})
    while (apps.read_namespaced_deployment_status("load", "default").status.available_replicas or 0) < pods:
        time.sleep(0.2)
    api.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    starts, stops = [], []
    for run in range(args.runs):
        began = time.monotonic()
        cluster = LocalCluster(nodes=3)
        cluster.start()
        starts.append(time.monotonic() - began)
        if run == args.runs - 1:
            idle = {name: peak_kib(pid) for name, pid in cluster.pids.items()}
            ready = load(cluster, args.pods)
            loaded = {name: peak_kib(pid) for name, pid in cluster.pids.items()}
        began = time.monotonic()
        cluster.stop()
        stops.append(time.monotonic() - began)
    print(f"cluster start (to a smoke Deployment available): median {statistics.median(starts):.1f} s "
          f"over {args.runs} runs ({', '.join(f'{s:.1f}' for s in starts)})")
    print(f"cluster stop: median {statistics.median(stops):.1f} s")
    print(f"{args.pods} pods scheduled and Ready in {ready:.1f} s")
    for name in idle:
        print(f"  {name:<24} peak RSS idle {idle[name] / 1024:6.0f} MiB, after {args.pods} pods "
              f"{loaded[name] / 1024:6.0f} MiB")
    print(f"  {'total':<24} peak RSS idle {sum(idle.values()) / 1024:6.0f} MiB, after {args.pods} pods "
          f"{sum(loaded.values()) / 1024:6.0f} MiB")


if __name__ == "__main__":
    main()
