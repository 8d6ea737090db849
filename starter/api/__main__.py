"""``canary-api`` / ``python -m starter.api``: serve the HTTP API and the web page with uvicorn.

Configuration: ``--host``/``--port`` (or ``CANARY_API_HOST``/``CANARY_API_PORT``), Temporal
as for ``canaryctl`` (the Temporal CLI's profile file and ``TEMPORAL_*`` variables, or
``--profile``, ``--address``, ``--temporal-namespace``, ``--api-key``, ``--tls-*``), and the
tokens from ``--tokens-file``/``CANARY_API_TOKENS_FILE`` and ``CANARY_API_TOKENS``. Without a
single token the server refuses to start: an API nobody can call is a misconfiguration, and one
that anybody can call is worse.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn
from temporalio.client import Client

from starter import client as canary
from starter import connection, lifecycle
from starter.api.app import create_app
from starter.api.auth import TOKENS_FILE_ENV, TokenStore, load_tokens_file, tokens_from_environment
from starter.api.metrics import install_job_metrics
from starter.connection import metrics_runtime
from starter.errors import CanaryError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``canary-api``."""
    parser = argparse.ArgumentParser(prog="canary-api", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=os.environ.get("CANARY_API_HOST", DEFAULT_HOST),
                        help="address to listen on (default: $CANARY_API_HOST or %(default)s)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CANARY_API_PORT", DEFAULT_PORT)),
                        help="port to listen on (default: $CANARY_API_PORT or %(default)s)")
    connection.add_arguments(parser)
    parser.add_argument("--tokens-file", type=Path, help=f"API tokens, YAML or JSON (default: ${TOKENS_FILE_ENV})")
    parser.add_argument("--metrics-address", default=os.environ.get("CANARY_METRICS_ADDRESS") or None,
                        help="serve Prometheus /metrics (the SDK's and canary_jobs) on host:port, e.g. 0.0.0.0:9464")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def load_tokens(tokens_file: Path | None) -> TokenStore:
    """Tokens from ``--tokens-file`` if given, else from the environment; never none at all."""
    store = TokenStore(load_tokens_file(tokens_file)) if tokens_file else tokens_from_environment()
    if not len(store):
        raise CanaryError("no API tokens configured: set CANARY_API_TOKENS_FILE, CANARY_API_TOKENS "
                          "(token:role:name,...) or --tokens-file")
    return store


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit status.

    Like ``canaryctl``, it lets the Temporal client's Rust threads leave the interpreter
    (:func:`lifecycle.settle`) before Python finalizes: otherwise a clean shutdown could end
    as an abort (exit 134, see :mod:`starter.lifecycle`).
    """
    args = build_parser().parse_args(argv)
    try:
        tokens = load_tokens(args.tokens_file)
    except CanaryError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2

    try:
        overrides = connection.overrides_from_args(args)
        connection.connect_config(overrides)  # a broken profile stops the server here, not at its first call
    except CanaryError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2

    async def client_factory() -> Client:
        return await canary.connect(overrides=overrides, runtime=runtime)

    runtime = metrics_runtime(args.metrics_address, service="canary-api")
    app = create_app(client_factory, tokens)
    if runtime is not None:
        install_job_metrics(app, runtime.metric_meter)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    lifecycle.settle()
    return 0


if __name__ == "__main__":
    sys.exit(main())
