"""``canaryctl`` start-up: wall and CPU time of ``--help``, ``lint`` and an operation, beside their floors.

    .venv/bin/python bench/cli_startup_bench.py [--runs 10] [--repeat 3] [--no-http]
        [--address HOST:PORT [--job NAME -n NS]]

Prints a table and writes ``bench/results/cli_startup.json``; asserts nothing. The operation is
``continue`` against an address where nothing listens (127.0.0.1:1): it imports and runs
everything an operation does up to the connection, which is refused at once, so the figure is
the client's own cost, not a server's. With ``--address`` the same ``continue`` also runs
against that Temporal (``--job`` names a job; a job that does not exist still costs a connection
and a describe before "no canary job").

Unless ``--no-http``, the bench also starts a Temporal dev server with its HTTP API (from the
venv's ``temporal`` binary) and times ``terminate`` over it: with ``--http-address``, an operation
on the job found over HTTP needs neither the Temporal SDK nor pydantic. The job is the stand-in
job of the client tests, run by a worker in this process, under its slash-free legacy id:
Temporal's HTTP API cannot name today's ``canary/<ns>/<job>`` ids, so that case runs the CLI
told to look under the legacy id only. The same command as shipped, which falls back to the SDK
for a job under today's ids, is timed beside it (it finds the same job under the legacy id).

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
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stand-in job lives in tests/
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


def cases(job: Path, options: argparse.Namespace, http: Any = None) -> dict[str, list[str]]:
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
    if http is not None:
        operation = ["terminate", "web", "-n", "shop", "--address", http.address, "--http-address", http.http_address]
        table["floor: import json, http.client, ssl"] = [*python, "-c", "import json, http.client, ssl"]
        table["canaryctl terminate via HTTP API (dev server)"] = [*canaryctl, *operation]
        table["same, without --http-address (the SDK)"] = [*canaryctl, *operation[:-2]]
    if options.address:
        table[f"canaryctl continue {options.job} (Temporal at {options.address})"] = [
            *canaryctl, "continue", options.job, "-n", options.namespace, "--address", options.address]
    return table


@contextlib.contextmanager
def _dev_server() -> Iterator[Any]:
    """A dev server with its HTTP API, and job ``shop/web`` under today's id.

    The job is the stand-in of ``tests/starter/test_client.py`` (the job's protocol without a
    cluster), run by a worker in a thread of this process: every timed ``terminate`` is a
    whole operation, answered.
    """
    import asyncio
    import threading

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from devenv.temporal import TemporalDevServer
    from tests.starter.test_client import StandInJob, job
    from workflows import names
    from workflows.models import CanaryJobInput
    from workflows.spec import workflow_id

    ready, stop = threading.Event(), threading.Event()

    async def work(address: str) -> None:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        async with Worker(client, task_queue=names.TASK_QUEUE, workflows=[StandInJob],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            await client.start_workflow(names.WORKFLOW_TYPE, CanaryJobInput(job=job("web")),
                                        id=workflow_id("shop", "web"), task_queue=names.TASK_QUEUE)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)

    with TemporalDevServer() as server:
        thread = threading.Thread(target=asyncio.run, args=(work(server.address),), daemon=True)
        thread.start()
        if not ready.wait(60):
            raise SystemExit("the stand-in job did not start")
        try:
            yield server
        finally:
            stop.set()
            thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="run the whole table this many times")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP API cases (no dev server)")
    parser.add_argument("--address", help="also run the operation against this Temporal (host:port)")
    parser.add_argument("--job", default="web", help="with --address: the job to continue")
    parser.add_argument("-n", "--namespace", default="default", help="with --address: the job's namespace")
    options = parser.parse_args()
    load_before = os.getloadavg()
    figures: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        http = None if options.no_http else stack.enter_context(_dev_server())
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        job = Path(tmp) / "job.yaml"
        job.write_text(JOB)
        for round_ in range(1, options.repeat + 1):
            print(f"{'command':<55} {'wall p50':>9} {'wall min':>9} {'cpu p50':>9}   "
                  f"({options.runs} runs, round {round_}, load {os.getloadavg()[0]:.1f})")
            for name, command in cases(job, options, http).items():
                # The operations on the live job must succeed; the others may end "refused" (1).
                statuses = (0,) if "terminate" in name else (0, 1)
                row = measure(command, options.runs, Path(tmp) / "pycache", statuses=statuses)
                figures.setdefault(name, []).append(row)
                print(f"{name:<55} {row['wall_p50_s']:>8.3f}s {row['wall_min_s']:>8.3f}s "
                      f"{row['cpu_p50_s']:>8.3f}s", flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min; {os.cpu_count()} CPUs)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "canaryctl start-up per command, fresh process each run from cached bytecode; "
                "floors are bare imports",
        "runs": options.runs, "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "load_1min_before": round(load_before[0], 2), "load_1min_after": round(load_after[0], 2),
        "figures": {name: rows[0] if len(rows) == 1 else rows for name, rows in figures.items()},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
