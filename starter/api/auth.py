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

The API only verifies tokens, so it need not hold them: an entry may give ``tokenSha256`` (the
hex SHA-256 of the token) instead of ``token``, and whichever is given, the store keeps only
the digest. ``canaryctl dev up`` hands the API such a file of digests; the tokens themselves are
in the file given to the user. One unsalted SHA-256 is enough for tokens made with
``secrets.token_urlsafe`` (no dictionary to search); a guessable token stays guessable however
it is stored, hence the minimum length.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from starter.actors import check_actor
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


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token: what a tokens file may give as ``tokenSha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


class Principal(BaseModel):
    """One configured token: the secret (or its digest), its role and the name recorded as actor.

    Once in a :class:`TokenStore`, a principal carries neither: it is the identity of a
    verified caller, handed to routes, sessions and logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    token: str | None = Field(default=None, min_length=8, repr=False, exclude=True)
    token_sha256: str | None = Field(default=None, alias="tokenSha256", pattern=r"^[0-9a-f]{64}$",
                                     repr=False, exclude=True)
    role: Role
    name: str = Field(min_length=1, max_length=256, pattern=r"^[^\s:,][^:,]*$")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # The name is recorded as the actor of every operation made with this token.
        return check_actor(value)

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        return Role.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_secret(self) -> Principal:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token or tokenSha256")
        return self

    @property
    def digest(self) -> str:
        """The SHA-256 the store keeps, from whichever of the two was given."""
        return self.token_sha256 or token_digest(self.token or "")


class TokenStore:
    """Verifies bearer tokens against their digests, in constant time per configured token."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        self._digests: list[tuple[bytes, Principal]] = []
        for principal in principals:
            digest = bytes.fromhex(principal.digest)
            if any(hmac.compare_digest(digest, known) for known, _ in self._digests):
                raise CanaryError(f"API token of {principal.name!r} is configured twice")
            # Only the digest stays; the principal kept is the caller's identity, without its secret.
            self._digests.append((digest, principal.model_copy(update={"token": None, "token_sha256": None})))

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def principals(self) -> list[Principal]:
        """Who the configured tokens belong to (without the tokens)."""
        return [principal for _, principal in self._digests]

    def find(self, token: str) -> Principal | None:
        """The principal holding ``token``, or None; compares every digest to leak no timing."""
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, principal in self._digests:
            if hmac.compare_digest(digest, presented):
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
