"""Secrets at rest and in output: the API keeps token digests only, the dev environment shows a
token in one file only (0600), and no token reaches the API's log, not even from a query string."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devenv.cli import print_state
from devenv.processes import free_port
from devenv.supervisor.daemon import api_token_files
from devenv.supervisor.state import API_TOKEN_DIGESTS_FILE, API_TOKENS_FILE, DevState
from starter.api.auth import Principal, Role, TokenStore, load_tokens_file, token_digest, tokens_from_environment
from starter.api.logs import redact_query
from starter.errors import CanaryError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_keeps_digests_and_verifies_either_form(tmp_path: Path) -> None:
    hashed = tmp_path / "tokens.json"
    hashed.write_text(json.dumps({"tokens": [
        {"tokenSha256": token_digest("ci-secret-token-1"), "role": "operator", "name": "ci"}]}))
    store = tokens_from_environment({"CANARY_API_TOKENS_FILE": str(hashed),
                                     "CANARY_API_TOKENS": "clear-secret-token:admin:alice"})
    ci, alice = store.find("ci-secret-token-1"), store.find("clear-secret-token")
    assert ci is not None and (ci.name, ci.role) == ("ci", Role.OPERATOR)
    assert alice is not None and alice.name == "alice"
    assert store.find(token_digest("ci-secret-token-1")) is None  # the digest is no token
    # Nothing the store holds or hands out carries a token.
    assert all(p.token is None and p.token_sha256 is None for p in store.principals)
    assert "clear-secret-token" not in repr(vars(store)) and "clear-secret-token" not in alice.model_dump_json()


@pytest.mark.parametrize(("entry", "message"), [
    ({"token": "both-given-token", "tokenSha256": "0" * 64, "role": "admin", "name": "a"}, "exactly one of"),
    ({"role": "admin", "name": "a"}, "exactly one of"),
    ({"tokenSha256": "not-hex", "role": "admin", "name": "a"}, "tokenSha256"),
])
def test_a_token_entry_needs_exactly_one_secret(tmp_path: Path, entry: dict[str, str], message: str) -> None:
    (tmp_path / "t.json").write_text(json.dumps([entry]))
    with pytest.raises(CanaryError, match=message):
        load_tokens_file(tmp_path / "t.json")


def test_a_token_given_clear_and_hashed_is_configured_twice() -> None:
    with pytest.raises(CanaryError, match="configured twice"):
        TokenStore([Principal(token="same-secret-1", role=Role.ADMIN, name="a"),
                    Principal(token_sha256=token_digest("same-secret-1"), role=Role.VIEWER, name="b")])


def test_dev_token_files_are_private_and_the_api_gets_digests_only(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    digests_file = api_token_files(state_dir)
    tokens_file = state_dir / API_TOKENS_FILE
    assert digests_file == state_dir / API_TOKEN_DIGESTS_FILE
    assert (mode(state_dir), mode(tokens_file), mode(digests_file)) == (0o700, 0o600, 0o600)
    tokens = json.loads(tokens_file.read_text())["tokens"]
    assert [t["role"] for t in tokens] == ["admin", "operator", "viewer"]
    digests = digests_file.read_text()
    assert all(t["token"] not in digests and token_digest(t["token"]) in digests for t in tokens)
    store = TokenStore(load_tokens_file(digests_file))
    admin = store.find(tokens[0]["token"])
    assert admin is not None and admin.name == "dev-admin"
    # A second start keeps the user's tokens; a token the user removed stops working.
    tokens_file.write_text(json.dumps({"tokens": tokens[1:]}))
    api_token_files(state_dir)
    assert json.loads(tokens_file.read_text())["tokens"] == tokens[1:] and mode(tokens_file) == 0o600
    assert TokenStore(load_tokens_file(digests_file)).find(tokens[0]["token"]) is None


def test_dev_up_and_status_print_no_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api_token_files(tmp_path)
    tokens_file = tmp_path / API_TOKENS_FILE
    state = DevState(state_dir=str(tmp_path), supervisor_pid=1, started=datetime.now(UTC),
                     temporal_address="127.0.0.1:7233", temporal_namespace="default", ui_url="http://127.0.0.1:8233",
                     db_filename=str(tmp_path / "temporal.db"), kubernetes_server="https://127.0.0.1:6443",
                     kubeconfig=str(tmp_path / "kubeconfig"), worker_script=None, worker_log=None, processes={},
                     api_url="http://127.0.0.1:8080", api_tokens_file=str(tokens_file))
    print_state(state)
    out = capsys.readouterr().out
    assert f"API tokens:  {tokens_file}  (one per role; sign in with the admin one)" in out
    for entry in json.loads(tokens_file.read_text())["tokens"]:
        assert entry["token"] not in out


def test_query_values_are_cut_from_log_lines() -> None:
    assert redact_query("/api/v1/jobs?status=paused&token=s3cret") == "/api/v1/jobs?status=...&token=..."
    assert redact_query("/healthz?s3cret") == "/healthz?s3cret=..."
    assert redact_query("/healthz?") == "/healthz?..."
    assert redact_query("/healthz") == "/healthz"


def test_the_api_log_holds_no_token_sent_in_a_query_string(tmp_path: Path) -> None:
    digests_file = api_token_files(tmp_path)
    token = json.loads((tmp_path / API_TOKENS_FILE).read_text())["tokens"][0]["token"]
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "starter.api", "--port", str(port), "--address", "127.0.0.1:1",
             "--tokens-file", str(digests_file)], stdout=out, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz?token={token}", timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        who = urllib.request.Request(f"{base}/api/v1/whoami?access_token={token}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(who, timeout=5) as answer:
            assert json.loads(answer.read())["name"] == "dev-admin"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    text = log.read_text()
    assert "/healthz?token=..." in text and "/api/v1/whoami?access_token=..." in text, text
    assert token not in text
