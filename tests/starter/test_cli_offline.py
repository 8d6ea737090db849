"""canaryctl's argument and error handling, without any server: one line, right exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devenv.processes import free_port
from starter.api.auth import tokens_from_environment
from starter.cli import actor, load_rules, main, os_user
from starter.errors import CanaryError

CANARYCTL = Path(sys.executable).with_name("canaryctl")
GOOD_JOB = "name: web\nworkload: {name: web}\nsteps:\n  - setWeight: 20\n  - pause: {}\n"


def canaryctl(*args: str, cwd: Path | None = None, stdin: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(CANARYCTL)] if CANARYCTL.exists() else [sys.executable, "-m", "starter.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, input=stdin,
                          timeout=60, env={**os.environ, **(env or {})})


def assert_clean_error(result: subprocess.CompletedProcess[str], status: int) -> list[str]:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    return lines


def test_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: [web\n")
    lines = assert_clean_error(canaryctl("apply", "-f", "job.yaml", cwd=tmp_path), 2)
    assert len(lines) == 1
    assert lines[0].startswith("error: job.yaml: not valid YAML or JSON:")
    assert "line 2" in lines[0]


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "name: web\nworkload: {name: web}\nsteps:\n  - setWeight: 120\n  - pause: {duration: soon}\n"
        "  - setCanaryScale: {replicas: 1, percent: 5}\nbogus: 1\n")
    lines = assert_clean_error(canaryctl("apply", "-f", "job.yaml", cwd=tmp_path), 2)
    assert lines == [
        "error: steps.0.setWeight: Input should be less than or equal to 100",
        "error: steps.1.pause.duration: 'soon' is not a duration; "
        "use a number with s, m, h or d, such as 10m",
        "error: steps.2.setCanaryScale: give exactly one of replicas or percent",
        "error: bogus: Extra inputs are not permitted",
    ]


def test_json_job_and_missing_workload(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text('{"name": "web", "steps": [{"setWeight": 5}]}')
    lines = assert_clean_error(canaryctl("apply", "-f", "job.json", cwd=tmp_path), 2)
    assert lines == ["error: workload: Field required"]


def test_missing_file(tmp_path: Path) -> None:
    lines = assert_clean_error(canaryctl("apply", "-f", "nope.yaml", cwd=tmp_path), 2)
    assert lines == ["error: nope.yaml: no such file"]


def test_namespace_flag_must_agree_with_file(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(GOOD_JOB + "namespace: prod\n")
    lines = assert_clean_error(canaryctl("apply", "-f", "job.yaml", "-n", "dev", cwd=tmp_path), 2)
    assert lines == ["error: job.yaml says namespace 'prod' but -n says 'dev'"]


def test_request_validation_is_a_usage_error() -> None:
    result = canaryctl("rollback", "web", "--to-revision", "0", "--address", "127.0.0.1:1")
    lines = assert_clean_error(result, 2)
    assert lines == ["error: revision: Input should be greater than or equal to 1"]


@pytest.mark.parametrize("args", [
    ["list"],
    ["get", "web"],
    ["history", "web", "-n", "prod"],
    ["promote", "web"],
    ["terminate", "web", "--reason", "bad"],
    ["apply", "-f", "job.yaml"],
])
def test_unreachable_temporal(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "job.yaml").write_text(GOOD_JOB)
    port = free_port()  # nothing listens there
    lines = assert_clean_error(canaryctl("--address", f"127.0.0.1:{port}", *args, cwd=tmp_path), 1)
    assert lines == [f"error: cannot reach Temporal at 127.0.0.1:{port}: Connection refused"]


def test_address_from_environment_and_after_subcommand(tmp_path: Path) -> None:
    port = free_port()
    result = canaryctl("get", "web", env={"TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    expected = f"error: cannot reach Temporal at 127.0.0.1:{port}: Connection refused"
    assert assert_clean_error(result, 1) == [expected]
    other = free_port()
    result = canaryctl("--address", f"127.0.0.1:{port}", "get", "web", "--address", f"127.0.0.1:{other}")
    assert f"127.0.0.1:{other}" in result.stderr


def test_gate_flags_are_checked_before_any_server_is_asked() -> None:
    for flag in ("--release", "--step"):
        result = canaryctl("continue", "web", flag, "0", "--address", "127.0.0.1:1")
        field = flag.removeprefix("--")
        assert assert_clean_error(result, 2) == [f"error: {field}: Input should be greater than or equal to 1"]
    assert canaryctl("promote", "web", "--step", "two").returncode == 2
    assert "--release" not in canaryctl("terminate", "--help").stdout


def test_new_phases_are_list_filters() -> None:
    port = free_port()
    for phase in ("workload-missing", "error"):
        result = canaryctl("list", "--phase", phase, "--address", f"127.0.0.1:{port}")
        refused = f"error: cannot reach Temporal at 127.0.0.1:{port}: Connection refused"
        assert assert_clean_error(result, 1) == [refused]  # past argument parsing: the phase is accepted


def test_unknown_phase_and_command_are_usage_errors() -> None:
    result = canaryctl("list", "--phase", "sleeping")
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
    assert canaryctl("frobnicate").returncode == 2


def test_update_rules_accepts_rules_or_a_whole_job(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("steps: [{setWeight: 50}]\nonPauseTimeout: rollback\n")
    (tmp_path / "job.yaml").write_text(GOOD_JOB)
    assert load_rules(str(tmp_path / "rules.yaml")).model_dump(mode="json")["steps"] == [{"setWeight": 50}]
    assert len(load_rules(str(tmp_path / "job.yaml")).steps) == 2


def test_update_rules_bad_file_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.yaml").write_text("steps: [{setWeight: 50}, {jump: 3}]\n")
    assert main(["update-rules", "web", "-f", str(tmp_path / "rules.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: steps: step 2: unknown step 'jump'; known steps: setWeight, pause, setCanaryScale, "
                   "analysis, setHeaderRoute\n")


def test_stdin_job(tmp_path: Path) -> None:
    port = free_port()
    result = canaryctl("--address", f"127.0.0.1:{port}", "apply", "-f", "-", stdin=GOOD_JOB)
    assert assert_clean_error(result, 1)[0].startswith("error: cannot reach Temporal")


def test_the_os_user_is_recorded_and_canary_actor_only_beside_it() -> None:
    user = os_user()
    assert actor({}) == user
    assert actor({"CANARY_ACTOR": "ci-deploy"}) == f"ci-deploy (os user {user})"
    assert actor({"CANARY_ACTOR": user}) == user


@pytest.mark.parametrize(("claimed", "reason"), [
    ("<img src=x onerror=alert(1)>", "must not contain '<'"),
    ("dana\x1b[31m", "must not contain control character '\\x1b'"),
    ("dana\u202eevil", "must not contain control character"),
    ('x" onmouseover="y', "must not contain '\"'"),
])
def test_an_actor_with_markup_or_control_characters_is_refused(claimed: str, reason: str) -> None:
    result = canaryctl("continue", "web", "--address", "127.0.0.1:1", env={"CANARY_ACTOR": claimed})
    [line] = assert_clean_error(result, 2)
    assert line.startswith("error: actor: ") and reason in line and "($CANARY_ACTOR)" in line


def test_a_token_name_with_markup_is_refused() -> None:
    with pytest.raises(CanaryError, match=r"entry 1: name: Value error, must not contain '<'"):
        tokens_from_environment({"CANARY_API_TOKENS": "long-enough-1:admin:<b>boss</b>"})
