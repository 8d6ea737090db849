"""``canaryctl`` start-up: wall and CPU time of ``--help``, ``lint`` and an operation, beside their floors.

    .venv/bin/python bench/cli_startup_bench.py [--runs 10] [--address HOST:PORT [--job NAME -n NS]]

Prints a table and writes ``bench/results/cli_startup.json``; asserts nothing. The operation is
``continue`` against an address where nothing listens (127.0.0.1:1): it imports and runs
everything an operation does up to the connection, which is refused at once, so the figure is
the client's own cost, not a server's. With ``--address`` the same ``continue`` also runs
against that Temporal (``--job`` names a job; a job that does not exist still costs a connection
and a describe before "no canary job").

The floors are bare imports in a fresh interpreter: what no ``canaryctl`` command can go below
while it needs that code. ``lint`` needs YAML and the job spec's pydantic models; an operation
needs the Temporal client and the request/answer models. CPU time (user + system of the
child) is given beside wall time because on a shared machine wall time measures the neighbours
too; the minimum is the run least disturbed by them.

Every case runs once untimed first, with a bytecode cache in a temporary directory: an
installed ``canaryctl`` runs from bytecode, and a process told not to write any
(``PYTHONDONTWRITEBYTECODE``, as some shells and CI images set) would compile every project
module from source on every run and time the compiler instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cli_startup.json"
JOB = "name: web\nnamespace: shop\nworkload: {name: web}\nsteps: [{setWeight: 25}, {pause: {}}]\n"
REFUSED = "127.0.0.1:1"


def measure(command: list[str], runs: int, cache: Path, *, statuses: tuple[int, ...] = (0, 1)
            ) -> dict[str, float]:
    """Median and minimum wall and CPU seconds of ``command`` over ``runs`` fresh processes."""
    walls, cpus = [], []
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(cache))
    subprocess.run(command, env=env, capture_output=True, check=False)  # writes the bytecode
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if "Traceback" in result.stderr or result.returncode not in statuses:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"wall_p50_s": round(statistics.median(walls), 3), "wall_min_s": round(min(walls), 3),
            "cpu_p50_s": round(statistics.median(cpus), 3)}


def cases(job: Path, options: argparse.Namespace) -> dict[str, list[str]]:
    python = [sys.executable]
    canaryctl = [*python, "-m", "starter.cli"]
    table = {
        "floor: python -c pass": [*python, "-c", "pass"],
        "canaryctl --help": [*canaryctl, "--help"],
        "floor: import yaml, workflows.spec": [*python, "-c", "import yaml, workflows.spec"],
        "canaryctl lint -f job.yaml": [*canaryctl, "lint", "-f", str(job)],
        "floor: import temporalio.client": [*python, "-c", "import temporalio.client"],
        "floor: import temporalio.client, workflows.models":
            [*python, "-c", "import temporalio.client, workflows.models"],
        "canaryctl continue (connection refused)": [*canaryctl, "continue", "web", "--address", REFUSED],
    }
    if options.address:
        table[f"canaryctl continue {options.job} (Temporal at {options.address})"] = [
            *canaryctl, "continue", options.job, "-n", options.namespace, "--address", options.address]
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--address", help="also run the operation against this Temporal (host:port)")
    parser.add_argument("--job", default="web", help="with --address: the job to continue")
    parser.add_argument("-n", "--namespace", default="default", help="with --address: the job's namespace")
    options = parser.parse_args()
    load_before = os.getloadavg()
    figures: dict[str, Any] = {}
    print(f"{'command':<55} {'wall p50':>9} {'wall min':>9} {'cpu p50':>9}   "
          f"({options.runs} runs, load {load_before[0]:.1f})")
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(JOB)
        for name, command in cases(job, options).items():
            figures[name] = measure(command, options.runs, Path(tmp) / "pycache")
            row = figures[name]
            print(f"{name:<55} {row['wall_p50_s']:>8.3f}s {row['wall_min_s']:>8.3f}s {row['cpu_p50_s']:>8.3f}s",
                  flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min; {os.cpu_count()} CPUs)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "canaryctl start-up per command, fresh process each run from cached bytecode; "
                "floors are bare imports",
        "runs": options.runs, "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "load_1min_before": round(load_before[0], 2), "load_1min_after": round(load_after[0], 2),
        "figures": figures,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
