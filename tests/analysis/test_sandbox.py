"""The analysis spec (with its CEL syntax check) and the verdict run inside Temporal's workflow sandbox.

The workflow validates ``update-rules`` in its update validator, so a condition must compile
there too; cel-python builds its parser from a grammar file on first use, which the sandbox
would refuse. This runs the real sandbox on the real time-skipping server.
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import celpy
    import pytest
    from pydantic import ValidationError
    from temporalio.worker import Worker

    from tests.temporal_envs import time_skipping_env
    from workflows import analysis_spec
    from workflows.analysis_spec import Analysis
    from workflows.spec import validation_message
    from workflows.verdict import Measurement, MeasurementPhase, metric_status


@workflow.defn(sandboxed=True)
class ValidateAnalysis:
    @workflow.run
    async def run(self, spec: dict[str, Any]) -> str:
        try:
            analysis = Analysis.model_validate(spec)
        except ValidationError as err:
            return validation_message(err)
        metric = analysis.templates[0].metrics[0]
        failed = Measurement(value=0.5, phase=MeasurementPhase.FAILED)
        return metric_status(metric, [failed]).phase.value


def spec(condition: str) -> dict[str, Any]:
    return {"templates": [{"name": "rate", "metrics": [{
        "name": "errors", "interval": "30s", "successCondition": condition,
        "provider": {"prometheus": {"query": "vector(1)"}}}]}]}


@pytest.mark.timeout(120)
async def test_conditions_compile_and_verdicts_run_in_the_workflow_sandbox() -> None:
    # cel-python is loaded on first use: make that first use the workflow's, which must load
    # the worker's own copy (passed through), not one the sandbox imported for itself.
    analysis_spec._cel.cache_clear()
    async with await time_skipping_env() as env:
        queue = f"analysis-{uuid.uuid4().hex[:8]}"
        async with Worker(env.client, task_queue=queue, workflows=[ValidateAnalysis]):
            good = await env.client.execute_workflow(
                ValidateAnalysis.run, spec("result >= 0.99"), id=f"good-{queue}", task_queue=queue)
            bad = await env.client.execute_workflow(
                ValidateAnalysis.run, spec("result >="), id=f"bad-{queue}", task_queue=queue)
    assert good == "failed"
    assert type(analysis_spec.cel_environment()) is celpy.Environment
    assert bad.startswith("templates.0.metrics.0.successCondition: CEL expression 'result >=' does not compile")
