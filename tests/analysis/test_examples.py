"""The analysis job the README points to is a valid job, as written."""

from __future__ import annotations

from pathlib import Path

import yaml

from workflows.analysis_spec import AnalysisStep
from workflows.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_analysis_example_is_a_valid_job() -> None:
    job = JobSpec.model_validate(yaml.safe_load((ROOT / "examples" / "analysis-job.yaml").read_text()))
    assert job.analysis is not None and job.analysis.background is not None
    assert any(isinstance(step, AnalysisStep) for step in job.steps)
    assert {metric.provider.kind for template in job.analysis.templates for metric in template.metrics} == {
        "builtin", "baseline"}
    assert "examples/analysis-job.yaml" in (ROOT / "README.md").read_text()
