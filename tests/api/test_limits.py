"""Values past every limit (huge or infinite durations) are a 422 naming the field, never a 500,
and ``canaryctl`` refuses the same document with the same words and exit status 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from starter.cli import main
from tests.api.local import local_app, local_client

# Written into the JSON body as is: strings quoted, numbers raw (1e400 is infinity to a JSON reader).
HUGE = ['"99999999999d"', "1e400", "-1e400", "1e300", '"1e400"', '"P99999999999D"', "99999999999999999999999"]


def job_document(duration: str) -> str:
    return ('{"name": "web", "workload": {"name": "web"}, "progressDeadline": DURATION, '
            '"steps": [{"setWeight": 10}, {"pause": {"duration": DURATION}}]}').replace("DURATION", duration)


@pytest.mark.parametrize("duration", HUGE)
async def test_huge_durations_are_a_422_naming_the_field(duration: str) -> None:
    async with local_client(local_app(), "admin") as http:
        headers = {"Content-Type": "application/json"}
        created = await http.put("/api/v1/namespaces/shop/jobs/web", content=job_document(duration),
                                 headers=headers)
        assert created.status_code == 422, created.text
        body = created.json()
        assert body["field"] in {"progressDeadline", "steps.1.pause.duration"}
        assert {e["field"] for e in body["errors"]} == {"progressDeadline", "steps.1.pause.duration"}
        assert "365d" in body["message"] or "not a duration" in body["message"]

        rules = json.loads(job_document('"1s"'))
        rules.pop("name"), rules.pop("workload")
        text = json.dumps({"rules": rules}).replace('"1s"', duration)
        updated = await http.post("/api/v1/namespaces/shop/jobs/web/update-rules", content=text,
                                  headers=headers)
        assert updated.status_code == 422, updated.text
        assert {e["field"] for e in updated.json()["errors"]} == {"rules.progressDeadline",
                                                                  "rules.steps.1.pause.duration"}


@pytest.mark.parametrize("duration", HUGE)
async def test_canaryctl_refuses_the_same_job_with_the_same_message(
        duration: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with local_client(local_app(), "admin") as http:
        answer = await http.post("/api/v1/jobs", content=job_document(duration).replace(
            '"name": "web",', '"name": "web", "namespace": "shop",'),
            headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    api_lines = {f"{e['field']}: {e['reason']}" for e in answer.json()["errors"]}

    (tmp_path / "job.json").write_text(job_document(duration))
    # canaryctl runs its own event loop: in a thread, as from a shell.
    apply = ["apply", "-f", str(tmp_path / "job.json"), "-n", "shop", "--address", "127.0.0.1:1"]
    assert await asyncio.to_thread(main, apply) == 2
    cli_lines = {line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines()}
    assert cli_lines == api_lines

    rules = tmp_path / "rules.json"
    rules.write_text('{"steps": [{"pause": {"duration": DURATION}}]}'.replace("DURATION", duration))
    update = ["update-rules", "web", "-f", str(rules), "--address", "127.0.0.1:1"]
    assert await asyncio.to_thread(main, update) == 2
    assert capsys.readouterr().err.startswith("error: steps.0.pause.duration: ")


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "1e400", "soon", "3601"])
def test_a_timeout_that_cannot_work_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["continue", "web", "--timeout", value, "--address", "127.0.0.1:1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --timeout:" in err and "Traceback" not in err
