"""Header and cookie routing (A/B): the ``setHeaderRoute`` step and what a router is asked to hold.

Argo Rollouts' shape: ``setHeaderRoute: {name, match: [{headerName, headerValue: {exact|prefix|regex}}]}``;
a step without ``match`` removes the route of that name. A match may instead name a cookie
(``cookieName``): a request whose cookie of that name is ``always`` goes to the canary, which
is NGINX's ``canary-by-cookie`` and what the mesh routers match in the ``Cookie`` header.
Every match of a route must hold at once (AND), as in Argo Rollouts.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from workflows.fields import StrictModel

# A header's name is an HTTP token; a route's name must also be a Gateway API rule name.
HEADER_NAME_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
ROUTE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_MATCHES = 8
MAX_VALUE = 1024
COOKIE_ON = "always"  # NGINX's value for "this client is in the canary"


class HeaderValue(StrictModel):
    """How a header's value must look: exactly one of ``exact``, ``prefix`` or ``regex``."""

    exact: str | None = Field(default=None, min_length=1, max_length=MAX_VALUE)
    prefix: str | None = Field(default=None, min_length=1, max_length=MAX_VALUE)
    regex: str | None = Field(default=None, min_length=1, max_length=MAX_VALUE)

    @model_validator(mode="after")
    def _one_of(self) -> HeaderValue:
        given = [v for v in (self.exact, self.prefix, self.regex) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix or regex")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        # The routers' engines (RE2, PCRE) differ in corners; a pattern no engine reads is refused here.
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value

    def as_regex(self) -> str:
        """The same test as one regular expression, for routers without a prefix match."""
        if self.regex is not None:
            return self.regex
        if self.prefix is not None:
            return f"^{re.escape(self.prefix)}.*"
        assert self.exact is not None
        return f"^{re.escape(self.exact)}$"


class HeaderMatch(StrictModel):
    """One condition: a header's value, or a cookie set to ``always``."""

    header_name: str | None = Field(default=None, alias="headerName", pattern=HEADER_NAME_PATTERN, max_length=256)
    header_value: HeaderValue | None = Field(default=None, alias="headerValue")
    cookie_name: str | None = Field(default=None, alias="cookieName", pattern=HEADER_NAME_PATTERN, max_length=256)

    @model_validator(mode="after")
    def _header_or_cookie(self) -> HeaderMatch:
        if self.cookie_name is not None:
            if self.header_name is not None or self.header_value is not None:
                raise ValueError("give either cookieName, or headerName with headerValue")
        elif self.header_name is None or self.header_value is None:
            raise ValueError("give headerName with headerValue (or cookieName)")
        return self

    def cookie_regex(self) -> str:
        """The ``Cookie`` header's value when this match's cookie is ``always``."""
        assert self.cookie_name is not None
        return f"^(.*;\\s*)?{re.escape(self.cookie_name)}={COOKIE_ON}(;.*)?$"


class HeaderRoute(StrictModel):
    """A named route that sends matching requests to the canary, whatever the weight.

    In a step, no ``match`` (or an empty one) removes the route of that name.
    """

    name: str = Field(pattern=ROUTE_NAME_PATTERN, max_length=63)
    match: list[HeaderMatch] | None = Field(default=None, max_length=MAX_MATCHES)

    @field_validator("match")
    @classmethod
    def _one_cookie(cls, value: list[HeaderMatch] | None) -> list[HeaderMatch] | None:
        if value is not None and sum(m.cookie_name is not None for m in value) > 1:
            raise ValueError("at most one cookieName per route (a request has one Cookie header to match)")
        return value

    @property
    def matches(self) -> list[HeaderMatch]:
        """The conditions; empty for a step that removes the route."""
        return list(self.match or [])


def describe_header_route(route: HeaderRoute) -> str:
    """One line for a header route, as the CLI and the page show it."""
    if not route.matches:
        return f"setHeaderRoute {route.name}: removed"
    return f"setHeaderRoute {route.name}: " + " and ".join(describe_match(m) for m in route.matches)


def describe_match(match: HeaderMatch) -> str:
    """``x-canary = yes``, ``user-agent ~ ^iPhone``, ``cookie canary=always``."""
    if match.cookie_name is not None:
        return f"cookie {match.cookie_name}={COOKIE_ON}"
    value = match.header_value
    assert value is not None and match.header_name is not None
    if value.exact is not None:
        return f"{match.header_name} = {value.exact}"
    if value.prefix is not None:
        return f"{match.header_name} starts with {value.prefix}"
    return f"{match.header_name} ~ {value.regex}"


def apply_header_route(routes: list[HeaderRoute], step: HeaderRoute) -> list[HeaderRoute]:
    """The header routes in force after ``step``: added or replaced by name, or removed without a match."""
    kept = [route for route in routes if route.name != step.name]
    if not step.matches:
        return kept
    at = next((i for i, route in enumerate(routes) if route.name == step.name), len(kept))
    return [*kept[:at], step, *kept[at:]]
