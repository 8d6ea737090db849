"""Where the worker, ``canaryctl`` and the API find Temporal: the SDK's environment configuration.

One profile must serve the Temporal CLI, our tools and the Helm chart, so the settings are
read exactly as the CLI reads them (:mod:`temporalio.envconfig`): the ``temporal.toml`` file
(``$TEMPORAL_CONFIG_FILE``, else the user's config directory), its profile named by
``$TEMPORAL_PROFILE`` (else ``default``), then ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
``TEMPORAL_API_KEY`` and ``TEMPORAL_TLS*`` on top. Command-line flags override all of that.
Nothing here connects: :func:`connect_config` builds the keyword arguments of
``Client.connect`` so that tests (and ``--help`` readers) can see what would be sent.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starter.errors import InvalidInput

if TYPE_CHECKING:  # the SDK is imported where it is used: `canaryctl --help` and lint need none of it
    from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, ClientConnectConfig
    from temporalio.runtime import Runtime

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_TEMPORAL_NAMESPACE = "default"
CONFIG_FILE_ENV = "TEMPORAL_CONFIG_FILE"


@dataclass(frozen=True)
class ConnectionOverrides:
    """What the command line says about Temporal; ``None`` leaves the profile's value."""

    profile: str | None = None
    config_file: str | None = None
    address: str | None = None
    namespace: str | None = None
    api_key: str | None = None
    tls: bool | None = None
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    tls_server_name: str | None = None

    def merged(self, **values: Any) -> ConnectionOverrides:
        """These overrides with ``values`` on top, ignoring the ``None`` ones."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _load_profile(overrides: ConnectionOverrides, environ: Mapping[str, str]) -> ClientConfigProfile:
    from temporalio.envconfig import ClientConfigProfile
    config_file = overrides.config_file or environ.get(CONFIG_FILE_ENV)
    # The SDK treats a named file that is not there as an empty one; a typo in a path would
    # then silently connect to the local default server instead of the configured one.
    if config_file and not Path(config_file).is_file():
        raise InvalidInput(f"Temporal config file {config_file} does not exist", field="config-file")
    try:
        return ClientConfigProfile.load(
            overrides.profile, config_source=Path(config_file) if config_file else None,
            override_env_vars=dict(environ))
    except Exception as err:  # the SDK's ConfigError comes from its Rust bridge, not a public class
        raise InvalidInput(f"Temporal config: {err}", field="profile") from None


def _tls(profile: ClientConfigProfile, overrides: ConnectionOverrides) -> ClientConfigTLS | None:
    from temporalio.envconfig import ClientConfigTLS
    tls_files = (overrides.tls_ca_cert, overrides.tls_client_cert, overrides.tls_client_key,
                 overrides.tls_server_name)
    if overrides.tls is False:
        return ClientConfigTLS(disabled=True)
    if overrides.tls is None and not any(tls_files):
        return profile.tls
    base = profile.tls or ClientConfigTLS()
    return replace(
        base, disabled=False,
        server_root_ca_cert=Path(overrides.tls_ca_cert) if overrides.tls_ca_cert else base.server_root_ca_cert,
        client_cert=Path(overrides.tls_client_cert) if overrides.tls_client_cert else base.client_cert,
        client_private_key=Path(overrides.tls_client_key) if overrides.tls_client_key else base.client_private_key,
        server_name=overrides.tls_server_name or base.server_name,
    )


def connect_config(overrides: ConnectionOverrides | None = None,
                   environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """The ``Client.connect`` keyword arguments: profile, then environment, then flags, then defaults.

    An API key turns TLS on (as the SDK and Temporal Cloud expect) unless TLS was switched off
    explicitly; a client certificate without its key (or the reverse) is refused here, where
    the message can name the setting, rather than as a handshake failure.
    """
    overrides = overrides or ConnectionOverrides()
    environ = os.environ if environ is None else environ
    profile = _load_profile(overrides, environ)
    profile = replace(
        profile,
        address=overrides.address or profile.address,
        namespace=overrides.namespace or profile.namespace,
        api_key=overrides.api_key or profile.api_key,
        tls=_tls(profile, overrides),
    )
    tls = profile.tls
    if tls is not None and not tls.disabled and (tls.client_cert is None) != (tls.client_private_key is None):
        raise InvalidInput("Temporal TLS: a client certificate needs its private key and the reverse",
                           field="tls-client-cert")
    try:
        config = profile.to_client_connect_config()
    except OSError as err:
        raise InvalidInput(f"Temporal TLS: cannot read {err.filename}: {err.strerror}",
                           field="tls") from None
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_TEMPORAL_NAMESPACE)
    return config


def describe(config: ClientConnectConfig) -> str:
    """The connection in one line for logs, without secrets: ``host (namespace ns, TLS, API key)``."""
    extras = [f"namespace {config.get('namespace', DEFAULT_TEMPORAL_NAMESPACE)}"]
    if config.get("tls"):
        extras.append("TLS")
    if config.get("api_key"):
        extras.append("API key")
    return f"{config.get('target_host', DEFAULT_ADDRESS)} ({', '.join(extras)})"


def metrics_runtime(metrics_address: str | None, *, service: str) -> Runtime | None:
    """A Runtime serving Prometheus ``/metrics`` on ``metrics_address``, or None for the default one.

    Counters get ``_total`` and durations are in seconds, as Prometheus users expect; the
    product's own metrics are emitted through the same Runtime's meter, so one port serves
    both. ``service`` labels every series (``canary-worker``, ``canary-api``).
    """
    if not metrics_address:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=metrics_address, counters_total_suffix=True, durations_as_seconds=True),
        global_tags={"service": service}, attach_service_name=False))


# -- command line ----------------------------------------------------------------------------

_FLAGS: dict[str, tuple[str, str]] = {
    # field: (flag, help)
    "profile": ("--profile", "profile in the Temporal config file (default: $TEMPORAL_PROFILE or default)"),
    "config_file": ("--config-file", "Temporal config file, the CLI's temporal.toml "
                                     "(default: $TEMPORAL_CONFIG_FILE or the user's config directory)"),
    "address": ("--address", f"Temporal frontend host:port (default: profile, $TEMPORAL_ADDRESS or {DEFAULT_ADDRESS})"),
    "namespace": ("--temporal-namespace", "Temporal namespace (default: profile, $TEMPORAL_NAMESPACE or default)"),
    "api_key": ("--api-key", "Temporal API key; turns TLS on (default: profile or $TEMPORAL_API_KEY)"),
    "tls_ca_cert": ("--tls-ca-cert", "CA certificate file the Temporal server's certificate must chain to"),
    "tls_client_cert": ("--tls-client-cert", "client certificate file for mTLS"),
    "tls_client_key": ("--tls-client-key", "client private key file for mTLS"),
    "tls_server_name": ("--tls-server-name", "server name to verify the Temporal server's certificate against"),
}


def add_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The Temporal connection flags; with ``suppress``, an absent flag sets no attribute at all.

    ``suppress`` serves subcommand parsers: a flag given before the subcommand is then not
    reset by the subcommand's own default.
    """
    default = argparse.SUPPRESS if suppress else None
    for field_name, (flag, help_text) in _FLAGS.items():
        parser.add_argument(flag, dest=f"temporal_{field_name}" if field_name != "address" else "address",
                            default=default, help=help_text)
    parser.add_argument("--tls", dest="temporal_tls", action=argparse.BooleanOptionalAction, default=default,
                        help="use TLS to reach Temporal (default: profile or $TEMPORAL_TLS; on with an API key)")


def overrides_from_args(args: argparse.Namespace) -> ConnectionOverrides:
    """The overrides :func:`add_arguments`' flags carry (``--temporal-namespace`` as before)."""
    values: dict[str, Any] = {}
    for item in fields(ConnectionOverrides):
        attribute = "address" if item.name == "address" else f"temporal_{item.name}"
        values[item.name] = getattr(args, attribute, None)
    return ConnectionOverrides(**values)
