"""Where the tools find Temporal: the Temporal CLI's profile file and variables, flags on top."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from starter.connection import ConnectionOverrides, add_arguments, connect_config, describe, overrides_from_args
from starter.errors import InvalidInput

PROFILES = """
[profile.default]
address = "temporal.internal:7233"
namespace = "deliveries"

[profile.cloud]
address = "deliveries.a1b2c.tmprl.cloud:7233"
namespace = "deliveries.a1b2c"
api_key = "cloud-key"

[profile.mtls]
address = "temporal.secure:7233"
namespace = "secure"
[profile.mtls.tls]
server_ca_cert_path = "{dir}/ca.pem"
client_cert_path = "{dir}/client.pem"
client_key_path = "{dir}/client.key"
server_name = "temporal.secure.example"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    for name, text in (("ca.pem", "CA"), ("client.pem", "CERT"), ("client.key", "KEY")):
        (tmp_path / name).write_text(text)
    path = tmp_path / "temporal.toml"
    path.write_text(PROFILES.format(dir=tmp_path))
    return path


def test_nothing_configured_means_the_local_dev_server() -> None:
    assert connect_config(environ={"HOME": "/nonexistent"}) == {"target_host": "127.0.0.1:7233",
                                                                 "namespace": "default"}


def test_the_default_profile_of_the_config_file(config_file: Path) -> None:
    config = connect_config(environ={"TEMPORAL_CONFIG_FILE": str(config_file)})
    assert config == {"target_host": "temporal.internal:7233", "namespace": "deliveries"}


def test_temporal_profile_picks_an_api_key_profile_which_turns_tls_on(config_file: Path) -> None:
    config = connect_config(environ={"TEMPORAL_CONFIG_FILE": str(config_file), "TEMPORAL_PROFILE": "cloud"})
    assert config["target_host"] == "deliveries.a1b2c.tmprl.cloud:7233"
    assert config["api_key"] == "cloud-key"
    assert config["tls"] is True
    assert describe(config) == "deliveries.a1b2c.tmprl.cloud:7233 (namespace deliveries.a1b2c, TLS, API key)"
    assert "cloud-key" not in describe(config)


def test_mtls_profile_reaches_the_connect_config_with_the_files_contents(config_file: Path) -> None:
    config = connect_config(ConnectionOverrides(profile="mtls", config_file=str(config_file)), environ={})
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key) == (b"CA", b"CERT", b"KEY")
    assert tls.domain == "temporal.secure.example"


def test_environment_overrides_the_profile_and_flags_override_both(config_file: Path) -> None:
    environ = {"TEMPORAL_CONFIG_FILE": str(config_file), "TEMPORAL_ADDRESS": "env.host:7233",
               "TEMPORAL_NAMESPACE": "from-env", "TEMPORAL_API_KEY": "env-key"}
    config = connect_config(environ=environ)
    assert (config["target_host"], config["namespace"], config["api_key"]) == ("env.host:7233", "from-env", "env-key")
    flagged = connect_config(ConnectionOverrides(address="flag.host:7233", api_key="flag-key", tls=False),
                             environ=environ)
    assert (flagged["target_host"], flagged["namespace"], flagged["api_key"]) == ("flag.host:7233", "from-env",
                                                                                  "flag-key")
    assert flagged["tls"] is False  # an API key against a server without TLS (a local gateway)


def test_tls_flags_on_top_of_a_plain_profile(config_file: Path, tmp_path: Path) -> None:
    config = connect_config(ConnectionOverrides(tls_ca_cert=str(tmp_path / "ca.pem"),
                                                tls_server_name="t.example"),
                            environ={"TEMPORAL_CONFIG_FILE": str(config_file)})
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.server_root_ca_cert, tls.domain, tls.client_cert) == (b"CA", "t.example", None)


def test_tls_environment_variables_reach_the_connect_config(tmp_path: Path, config_file: Path) -> None:
    config = connect_config(environ={
        "TEMPORAL_ADDRESS": "x:7233", "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "client.pem"),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "client.key")})
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")


@pytest.mark.parametrize(("overrides", "environ", "message"), [
    (ConnectionOverrides(profile="staging"), {}, "Profile 'staging' not found"),
    (ConnectionOverrides(config_file="/nonexistent/temporal.toml"), {}, "/nonexistent/temporal.toml does not exist"),
    (ConnectionOverrides(tls_client_cert="{dir}/client.pem"), {}, "a client certificate needs its private key"),
    (ConnectionOverrides(tls_ca_cert="{dir}/missing.pem"), {}, "cannot read"),
])
def test_a_broken_setting_is_named_before_any_connection(
        config_file: Path, overrides: ConnectionOverrides, environ: dict[str, str], message: str) -> None:
    values = {k: (v.format(dir=config_file.parent) if isinstance(v, str) else v)
              for k, v in vars(overrides).items()}
    with pytest.raises(InvalidInput, match=message):
        connect_config(ConnectionOverrides(**values), environ={"TEMPORAL_CONFIG_FILE": str(config_file), **environ})


def test_the_flags_parse_into_overrides() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--profile", "cloud", "--address", "h:1", "--temporal-namespace", "ns", "--api-key",
                              "k", "--no-tls", "--tls-ca-cert", "ca.pem"])
    assert overrides_from_args(args) == ConnectionOverrides(profile="cloud", address="h:1", namespace="ns",
                                                            api_key="k", tls=False, tls_ca_cert="ca.pem")
    assert overrides_from_args(parser.parse_args([])) == ConnectionOverrides()
