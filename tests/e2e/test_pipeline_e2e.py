"""What a pipeline runs, on the real cluster: ``canaryctl status``/``--wait`` exit codes, ``convert``
output that ``apply`` accepts, ``kubectl-canary``, and the Temporal UI's view of a job."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

from devenv.cluster import SIMULATE_LABEL
from tests.cli.helpers import ROOT, canaryctl, crashed
from tests.e2e.conftest import Shop
from workflows.models import Phase
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
ROLLOUTS = Path(__file__).resolve().parents[1] / "cli" / "rollouts"


async def cli(shop: Shop, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``canaryctl ARGS -n <shop> --address <dev server>`` in a thread, so the worker keeps running."""
    address = str(shop.temporal.service_client.config.target_host)
    result = await asyncio.to_thread(canaryctl, *args, "-n", shop.namespace, "--address", address,
                                     timeout=timeout)
    assert not crashed(result), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def test_status_exits_0_when_the_release_is_promoted(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 50}, {"pause": {"duration": "8s"}}])
    shop.set_image("registry.local/web:2")
    result = await cli(shop, "status", "web", "--timeout", "90s")
    assert result.returncode == 0, result
    assert "release 2 promoted" in result.stdout
    # Progress lines in a CI log (no TTY): the release at its pause (or already promoting), then the end.
    assert f"{shop.namespace}/web  release 2  " in result.stdout.splitlines()[0]
    again = await cli(shop, "status", "web", "-o", "json")
    assert again.returncode == 0 and '"exitStatus": 0' in again.stdout


async def test_status_exits_1_for_a_crashing_canary_rolled_back(shop: Shop) -> None:
    await shop.attach(progressDeadline="5s")
    shop.set_image("registry.local/web:bad", labels={SIMULATE_LABEL: "crash"})
    result = await cli(shop, "status", "web", "--timeout", "90s")
    assert result.returncode == 1, result
    assert "release 2 failed" in result.stderr and "CrashLoopBackOff" in result.stderr


async def test_status_exits_1_for_a_terminated_release_and_2_on_timeout(shop: Shop) -> None:
    await shop.attach()  # steps: setWeight 25, pause {} (until continued), ...
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "the manual gate")
    timed_out = await cli(shop, "status", "web", "--timeout", "3s")
    assert timed_out.returncode == 2, timed_out
    assert "timed out" in timed_out.stderr
    following = asyncio.create_task(cli(shop, "status", "web", "--timeout", "90s"))
    await asyncio.sleep(3)
    terminated = await cli(shop, "terminate", "web", "--reason", "error rate")
    assert terminated.returncode == 0, terminated
    result = await following
    assert result.returncode == 1, result
    assert "release 2 terminated" in result.stderr


async def test_status_of_an_unknown_job_or_server_exits_2(shop: Shop) -> None:
    assert (await cli(shop, "status", "nope", "--timeout", "5s")).returncode == 2
    unreachable = await asyncio.to_thread(canaryctl, "status", "web", "--address", "127.0.0.1:1")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("error: cannot reach Temporal")


async def test_set_image_wait_gates_on_the_release(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 50}, {"pause": {"duration": "2s"}}])
    promoted = await cli(shop, "set-image", "web", "registry.local/web:2", "-c", "app", "--wait", "--timeout", "90s")
    assert promoted.returncode == 0, promoted
    assert "release 2 promoted" in promoted.stdout
    await shop.wait(lambda d: d.stable is not None and d.stable.revision == 2, "web:2 stable")

    gated = await cli(shop, "rollback", "web", "--to-revision", "1", "--wait", "--timeout", "90s")
    assert gated.returncode == 0, gated
    assert "release 3 promoted" in gated.stdout


async def test_set_image_wait_times_out_at_a_manual_gate(shop: Shop) -> None:
    await shop.attach()
    result = await cli(shop, "set-image", "web", "registry.local/web:2", "-c", "app", "--wait", "--timeout", "5s")
    assert result.returncode == 2, result
    continued = await cli(shop, "continue", "web", "--wait", "--timeout", "90s")
    assert continued.returncode == 0, continued  # one more gate: a timed pause of 2s, then promotion


async def test_converted_argo_rollouts_are_accepted_by_apply(shop: Shop, tmp_path: Path) -> None:
    shop.create_workload()
    manifests = sorted(ROLLOUTS.glob("*.yaml"))
    assert len(manifests) >= 4
    for manifest in manifests:
        converted = await cli(shop, "convert", "-f", str(manifest))
        assert converted.returncode == 0, (manifest.name, converted.stderr)
        job = tmp_path / f"{manifest.stem}.job.yaml"
        job.write_text(converted.stdout.replace("namespace: shop\n", ""))
        assert (await cli(shop, "lint", "-f", str(job))).returncode == 0
        applied = await cli(shop, "apply", "-f", str(job), timeout=120)
        assert applied.returncode == 0, (manifest.name, applied.stderr)
        await shop.wait(lambda d: d.phase == Phase.HEALTHY, "the job attached")
        # A running job keeps its mode (one manifest is blue-green): each Rollout is a job of its own.
        assert (await cli(shop, "delete", "web")).returncode == 0


async def test_kubectl_canary_runs_the_cli(shop: Shop) -> None:
    await shop.attach()
    address = str(shop.temporal.service_client.config.target_host)
    script = ("import sys; from starter.cli import kubectl_plugin; "
              f"sys.argv = ['kubectl-canary', 'get', 'web', '-n', '{shop.namespace}', '--address', '{address}']; "
              "sys.exit(kubectl_plugin())")
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], capture_output=True,
                                     text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Name:       web" in result.stdout
    assert 'kubectl-canary = "starter.cli:kubectl_plugin"' in (ROOT / "pyproject.toml").read_text()


async def test_temporal_ui_shows_the_job_without_a_query(shop: Shop) -> None:
    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the manual gate")
    handle = shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web"))
    description = await handle.describe()
    assert await description.static_summary() == f"canary job {shop.namespace}/web delivering Deployment web"
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert "**Phase:** paused" in details
    assert "**Step:** 2/4 pause until continued (running)" in details
    assert "**Weight:** 25% (1 canary pods)" in details
    assert "**Stable:** revision 1 (app=registry.local/web:1)" in details
    assert "**Canary:** revision 2 (app=registry.local/web:2)" in details
