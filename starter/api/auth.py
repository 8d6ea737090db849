"""Bearer tokens and roles: who may read a job, steer a release, or change the job itself.

The operator of the API hands out tokens, each bound to a role and a name; there is no user
database to run. The name is what the workflow records as the actor of an operation, so a
token's holder cannot claim to be someone else. Roles nest: an ``admin`` may do everything an
``operator`` may, and an ``operator`` everything a ``viewer`` may.

Tokens come from a YAML or JSON file (``CANARY_API_TOKENS_FILE``)::

    tokens:
      - {token: "s3cret-admin", role: admin, name: alice}
      - {token: "s3cret-ci", role: operator, name: ci-pipeline}

or from ``CANARY_API_TOKENS="s3cret-admin:admin:alice,s3cret-ci:operator:ci-pipeline"``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from starter.errors import CanaryError
from workflows import names

TOKENS_FILE_ENV = "CANARY_API_TOKENS_FILE"
TOKENS_ENV = "CANARY_API_TOKENS"


class Role(IntEnum):
    """What a token may do; a higher role includes every lower one."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name as written in token files and error messages."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        """``viewer``, ``operator`` or ``admin`` (any case)."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {value!r}; one of: viewer, operator, admin") from None


# Who may run each operation: steering a release is the operator's job; what changes the job
# itself (its rules, its existence) is the admin's.
OPERATION_ROLES: Mapping[str, Role] = {
    names.UPDATE_VERSION: Role.OPERATOR,
    names.CONTINUE: Role.OPERATOR,
    names.PROMOTE: Role.OPERATOR,
    names.TERMINATE: Role.OPERATOR,
    names.ROLLBACK: Role.OPERATOR,
    names.UPDATE_RULES: Role.ADMIN,
    names.DELETE: Role.ADMIN,
}
CREATE_ROLE = Role.ADMIN


class Principal(BaseModel):
    """One configured token: the secret, its role and the name recorded as actor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(min_length=8, repr=False)
    role: Role
    name: str = Field(min_length=1, max_length=256, pattern=r"^[^\s:,][^:,]*$")

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        return Role.parse(value) if isinstance(value, str) else value


class TokenStore:
    """Looks a bearer token up in constant time per configured token."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        seen: set[str] = set()
        for principal in principals:
            if principal.token in seen:
                raise CanaryError(f"API token of {principal.name!r} is configured twice")
            seen.add(principal.token)
        self.principals = list(principals)

    def __len__(self) -> int:
        return len(self.principals)

    def find(self, token: str) -> Principal | None:
        """The principal holding ``token``, or None; compares every token to leak no timing."""
        found = None
        for principal in self.principals:
            if hmac.compare_digest(principal.token.encode(), token.encode()):
                found = principal
        return found


def parse_tokens_env(value: str) -> list[Principal]:
    """``token:role:name,...`` as in ``CANARY_API_TOKENS``."""
    principals = []
    for index, item in enumerate(filter(None, (part.strip() for part in value.split(","))), start=1):
        parts = item.split(":")
        if len(parts) != 3:
            raise CanaryError(f"{TOKENS_ENV}: entry {index} must be token:role:name")
        principals.append(_principal({"token": parts[0], "role": parts[1], "name": parts[2]},
                                     f"{TOKENS_ENV}: entry {index}"))
    return principals


def load_tokens_file(path: Path) -> list[Principal]:
    """A YAML/JSON file with ``tokens:`` (a list of token/role/name), or just that list."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise CanaryError(f"{path}: cannot read the API tokens: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise CanaryError(f"{path}: not valid YAML or JSON: {str(err).splitlines()[0]}") from None
    entries = document.get("tokens") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise CanaryError(f"{path}: expected a list of tokens (token, role, name) under 'tokens'")
    return [_principal(entry, f"{path}: token {index}") for index, entry in enumerate(entries, start=1)]


def _principal(entry: Any, where: str) -> Principal:
    try:
        return Principal.model_validate(entry)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
        raise CanaryError(f"{where}: {problems}") from None


def tokens_from_environment(environ: Mapping[str, str] | None = None) -> TokenStore:
    """Tokens from ``CANARY_API_TOKENS_FILE`` and ``CANARY_API_TOKENS`` (both may be set)."""
    environ = os.environ if environ is None else environ
    principals: list[Principal] = []
    if environ.get(TOKENS_FILE_ENV):
        principals += load_tokens_file(Path(environ[TOKENS_FILE_ENV]))
    if environ.get(TOKENS_ENV):
        principals += parse_tokens_env(environ[TOKENS_ENV])
    return TokenStore(principals)
