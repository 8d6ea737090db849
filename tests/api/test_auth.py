"""Token configuration: file (YAML or JSON) and environment, and what a bad one says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from starter.api.__main__ import load_tokens
from starter.api.auth import Role, TokenStore, parse_tokens_env, tokens_from_environment
from starter.errors import CanaryError


def test_tokens_from_the_environment() -> None:
    store = TokenStore(parse_tokens_env("tok-admin-1:admin:alice, tok-view-12:Viewer:bob"))
    alice, bob = store.find("tok-admin-1"), store.find("tok-view-12")
    assert alice is not None and (alice.role, alice.name) == (Role.ADMIN, "alice")
    assert bob is not None and (bob.role, bob.name) == (Role.VIEWER, "bob")
    assert store.find("tok-admin-") is None and store.find("") is None
    assert "tok-admin-1" not in repr(alice)


def test_tokens_from_a_yaml_or_json_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "tokens.yaml"
    yaml_file.write_text("tokens:\n  - {token: yaml-token-1, role: operator, name: ci}\n")
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps([{"token": "json-token-1", "role": "admin", "name": "ops"}]))
    store = tokens_from_environment({"CANARY_API_TOKENS_FILE": str(yaml_file),
                                     "CANARY_API_TOKENS": "env-token-1:viewer:dash"})
    assert [(p.name, p.role) for p in store.principals] == [("ci", Role.OPERATOR), ("dash", Role.VIEWER)]
    assert load_tokens(json_file).find("json-token-1") is not None


@pytest.mark.parametrize(("value", "message"), [
    ("short:admin:alice", "entry 1: token: String should have at least 8 characters"),
    ("long-enough:root:alice", "unknown role 'root'"),
    ("long-enough:admin", "entry 1 must be token:role:name"),
    ("long-enough:admin:a,long-enough:viewer:b", "configured twice"),
])
def test_bad_token_settings_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(CanaryError, match=message):
        tokens_from_environment({"CANARY_API_TOKENS": value})


def test_no_tokens_at_all_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANARY_API_TOKENS", raising=False)
    monkeypatch.delenv("CANARY_API_TOKENS_FILE", raising=False)
    with pytest.raises(CanaryError, match="no API tokens configured"):
        load_tokens(None)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CanaryError, match="cannot read the API tokens"):
        load_tokens(missing)
    (tmp_path / "bad.yaml").write_text("tokens: {a: 1}\n")
    with pytest.raises(CanaryError, match="expected a list of tokens"):
        load_tokens(tmp_path / "bad.yaml")
