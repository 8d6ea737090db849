"""No secret in the API's log: query-string values are cut from uvicorn's access log.

Clients are told to send tokens in the ``Authorization`` header, but a script that puts one
in a URL (``?token=...``) would otherwise have it written to the access log, which is kept,
shipped and read far more widely than the tokens file. The values of every query parameter
are replaced, whatever their name: the parameter names still show what was asked for.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "..."


def redact_query(target: str) -> str:
    """``/path?a=1&token=s3cret`` -> ``/path?a=...&token=...``."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{'&'.join(f'{name}={REDACTED}' for name in names)}" if names else f"{path}?{REDACTED}"


class RedactQueryStrings(logging.Filter):
    """Rewrites the request target in access-log records; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact every string argument that carries a query string (uvicorn passes the target as one)."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(arg) if isinstance(arg, str) and "?" in arg else arg
                                for arg in record.args)
        return True


def install_log_redaction() -> None:
    """Add the filter to uvicorn's access logger, once however many apps are made."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactQueryStrings) for existing in logger.filters):
        logger.addFilter(RedactQueryStrings())
