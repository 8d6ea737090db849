"""``canaryctl`` loads only what the command needs: start-up is part of what a pipeline pays per call.

Each command runs in a fresh interpreter, which then reports the modules it loaded. What is
checked is what must stay out (a guard against an import at the top of a module undoing the
lazy loading), not a time: ``bench/cli_startup_bench.py`` measures that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.temporal import TemporalDevServer, temporal_cli
from workflows.spec import slash_workflow_id, workflow_id

ROOT = Path(__file__).resolve().parents[2]
PLAIN_JOB = "name: web\nnamespace: shop\nworkload: {name: web}\nsteps: [{setWeight: 25}, {pause: {}}]\n"
# Heavy, and never needed by the CLI's own commands: the worker's side and the dev tooling.
WORKER_SIDE = ("kubernetes", "workflows.canary", "activities", "temporalio.worker", "devenv")
# Run a command in this interpreter, then print its exit status and the modules it loaded.
PROBE = """
import json, sys
from starter import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def loaded(*args: str, cwd: Path, probe: str = PROBE, stderr: list[str] | None = None) -> tuple[int, set[str]]:
    """The exit status of ``canaryctl ARGS`` and the top-level and dotted names of what it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(cwd)}  # no profile file of the user's
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=60, check=False)
    if stderr is not None:
        stderr.append(result.stderr)
    report = json.loads(result.stdout.splitlines()[-1])
    return report["status"], set(report["modules"])


def has(modules: set[str], name: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for module in modules)


def test_help_loads_no_models_and_no_temporal_sdk(tmp_path: Path) -> None:
    status, modules = loaded("--help", cwd=tmp_path)
    assert status == 0
    assert [name for name in ("pydantic", "yaml", "temporalio", "celpy", *WORKER_SIDE) if has(modules, name)] == []


def test_lint_is_offline_and_loads_cel_only_for_conditions(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(PLAIN_JOB)
    status, modules = loaded("lint", "-f", "job.yaml", cwd=tmp_path)
    assert status == 0
    assert has(modules, "workflows.spec")
    assert [name for name in ("temporalio", "celpy", *WORKER_SIDE) if has(modules, name)] == []

    # A condition is still compiled: a bad one is found, so cel-python was loaded for it.
    analysis = ("analysis:\n  templates:\n    - name: health\n      metrics:\n        - name: rate\n"
                "          interval: 10s\n          successCondition: 'result >='\n"
                "          provider: {prometheus: {query: vector(1)}}\n")
    (tmp_path / "cel.yaml").write_text(PLAIN_JOB + analysis)
    status, modules = loaded("lint", "-f", "cel.yaml", cwd=tmp_path)
    assert status == 1
    assert has(modules, "celpy")
    assert not has(modules, "temporalio")


def test_an_operation_loads_the_client_but_nothing_of_the_worker(tmp_path: Path) -> None:
    status, modules = loaded("continue", "web", "--address", "127.0.0.1:1", cwd=tmp_path)
    assert status == 1  # nothing listens there: the connection is refused once everything is loaded
    assert has(modules, "temporalio.client")
    assert [name for name in ("celpy", "yaml", *WORKER_SIDE) if has(modules, name)] == []


@pytest.fixture(scope="module")
def temporal() -> Iterator[TemporalDevServer]:
    """A dev server with its HTTP API, and two jobs' workflows that no worker runs.

    ``shop/web`` runs under today's id; ``shop/old`` under the slash id older clients gave.
    """
    with TemporalDevServer(search_attributes=()) as server:
        for id_ in (workflow_id("shop", "web"), slash_workflow_id("shop", "old")):
            subprocess.run([str(temporal_cli()), "workflow", "start", "--address", server.address, "--type",
                            "CanaryJobWorkflow", "--task-queue", "nobody-polls-this", "--workflow-id", id_],
                           check=True, capture_output=True, timeout=30)
        yield server


def test_an_operation_over_the_http_api_loads_neither_sdk_nor_models(temporal: TemporalDevServer,
                                                                      tmp_path: Path) -> None:
    stderr: list[str] = []
    status, modules = loaded("terminate", "web", "-n", "shop", "--timeout", "1", "--address", "127.0.0.1:1",
                             "--http-address", temporal.http_address, cwd=tmp_path, stderr=stderr)
    # Found over HTTP (the gRPC address is closed), updated, and no worker answered within the second.
    assert (status, stderr) == (1, ["error: canary job shop/web: terminate not answered within 1 s; is the canary "
                                    "worker running? (it may still be applied when a worker picks it up)\n"])
    assert [name for name in ("temporalio", "pydantic", "yaml", "celpy", *WORKER_SIDE) if has(modules, name)] == []


def test_a_job_under_an_older_slash_id_is_left_to_the_sdk(temporal: TemporalDevServer, tmp_path: Path) -> None:
    """The HTTP API cannot name ``canary/<ns>/<job>``: the CLI asks through the SDK instead."""
    stderr: list[str] = []
    status, modules = loaded("terminate", "old", "-n", "shop", "--timeout", "1", "--address", temporal.address,
                             "--http-address", temporal.http_address, cwd=tmp_path, stderr=stderr)
    assert status == 1 and "terminate not answered within 1 s" in stderr[0]
    assert has(modules, "temporalio.client")
