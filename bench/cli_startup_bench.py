"""``canaryctl`` start-up: wall and CPU time of ``--help``, ``lint`` and an operation; prints, asserts nothing.

    .venv/bin/python bench/cli_startup_bench.py [--runs 10]

The operation is ``continue`` against an address where nothing listens (127.0.0.1:1): it
imports and runs everything an operation does up to the connection, which is refused at once,
so the figure is the client's own cost, not a server's. CPU time (user + system of the child)
is given beside wall time because on a shared machine wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = "name: web\nnamespace: shop\nworkload: {name: web}\nsteps: [{setWeight: 25}, {pause: {}}]\n"


def measure(args: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``canaryctl ARGS`` over ``runs`` runs."""
    walls, cpus = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "starter.cli", *args], env=env, capture_output=True,
                                text=True, check=False)
        if "Traceback" in result.stderr or result.returncode not in (0, 1):
            raise SystemExit(f"canaryctl {' '.join(args)} failed: {result.stderr.strip()}")
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(JOB)
        cases = {
            "python -c pass (floor)": None,
            "canaryctl --help": ["--help"],
            "canaryctl lint -f job.yaml": ["lint", "-f", str(job)],
            "canaryctl continue (connection refused)": ["continue", "web", "--address", "127.0.0.1:1"],
        }
        print(f"{'command':<42} {'wall p50':>9} {'cpu p50':>9}   ({options.runs} runs, load {os.getloadavg()[0]:.1f})")
        for name, args in cases.items():
            if args is None:
                walls = []
                for _ in range(options.runs):
                    started = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "pass"], check=False)
                    walls.append(time.perf_counter() - started)
                wall, cpu = statistics.median(walls), float("nan")
            else:
                wall, cpu = measure(args, options.runs)
            print(f"{name:<42} {wall:>8.3f}s {cpu:>8.3f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
