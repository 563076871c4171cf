"""Configuration: environment over YAML, one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrng_dd.config import (
    CollectorSettings,
    GatewaySettings,
    McpSettings,
    load,
    parse_push_target,
)
from qrng_dd.errors import ConfigError

HMAC = "ab" * 32
GATEWAY_ENV = {"QRNG_HMAC_SECRET_KEY": HMAC, "QRNG_API_KEYS": "k" * 20}
COLLECTOR_ENV = {
    "QRNG_HMAC_SECRET_KEY": HMAC,
    "QRNG_APPLIANCE_URLS": "http://127.0.0.1:8443",
    "QRNG_GATEWAY_PUSH_URL": "http://127.0.0.1:7764/push",
}


def _error(cls: type, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        load(cls, env)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_defaults_match_the_design() -> None:
    """Ports, sizes, TTLs and policy defaults are those of DESIGN §8."""
    s = load(GatewaySettings, GATEWAY_ENV)
    assert (s.port, s.buffer_size, s.buffer_overflow_policy) == (7764, 10_485_760, "discard")
    assert (s.packet_ttl_s, s.max_clock_skew_s, s.rate_limit) == (300, 60, 100)
    assert s.gateway_id == "gateway"
    c = load(CollectorSettings, COLLECTOR_ENV)
    assert (c.fetch_interval_ms, c.fetch_size, c.encrypt_payload) == (100, 4096, True)
    assert c.targets[0].gateway_id == "gateway"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"QRNG_API_KEYS": "k" * 20 + ",,"}, "QRNG_API_KEYS: contains an empty key"),
        ({"QRNG_API_KEYS": ""}, "QRNG_API_KEYS"),
        ({"QRNG_HMAC_SECRET_KEY": "abcd"}, "QRNG_HMAC_SECRET_KEY: must encode at least 32"),
        ({"QRNG_HMAC_SECRET_KEY": "zz" * 32}, "QRNG_HMAC_SECRET_KEY: must be hex"),
        ({"QRNG_BUFFER_OVERFLOW_POLICY": "keep"}, "QRNG_BUFFER_OVERFLOW_POLICY"),
        ({"QRNG_BUFFER_SIZE": "-1"}, "QRNG_BUFFER_SIZE"),
        ({"QRNG_BUFFER_SIZE": "99999999999999999999"}, "QRNG_BUFFER_SIZE"),
        ({"QRNG_PORT": "http"}, "QRNG_PORT"),
        ({"QRNG_RATE_LIMIT": "0"}, "QRNG_RATE_LIMIT"),
        ({"QRNG_UDP_LISTEN": "nowhere"}, "QRNG_UDP_LISTEN"),
        ({"QRNG_GATEWAY_ID": "has space"}, "QRNG_GATEWAY_ID"),
        ({"QRNG_TLS_CERT_FILE": "/nonexistent"}, "QRNG_TLS_CERT_FILE"),
    ],
)
def test_bad_gateway_values_give_one_line_naming_the_variable(
    override: dict[str, str], needle: str
) -> None:
    """Each bad value is one line that names its variable."""
    assert needle in _error(GatewaySettings, {**GATEWAY_ENV, **override})


def test_missing_hmac_key_is_named() -> None:
    """No key at all names QRNG_HMAC_SECRET_KEY."""
    assert "QRNG_HMAC_SECRET_KEY" in _error(GatewaySettings, {"QRNG_API_KEYS": "k" * 20})


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"QRNG_APPLIANCE_URLS": ""}, "QRNG_APPLIANCE_URLS"),
        ({"QRNG_APPLIANCE_URLS": "gopher://x"}, "QRNG_APPLIANCE_URLS"),
        ({"QRNG_GATEWAY_PUSH_URL": "not a url"}, "QRNG_GATEWAY_PUSH_URL"),
        (
            {"QRNG_GATEWAY_PUSH_URL": "a=http://h:1/push,a=http://h:2/push"},
            "QRNG_GATEWAY_PUSH_URL: gateway id 'a' appears twice",
        ),
        ({"QRNG_MIXING": "and"}, "QRNG_MIXING"),
        ({"QRNG_FETCH_SIZE": "-4096"}, "QRNG_FETCH_SIZE"),
        ({"QRNG_CLAIMED_ENTROPY_BITS": "9"}, "QRNG_CLAIMED_ENTROPY_BITS"),
        ({"QRNG_HEALTH_ALPHA_LOG2": "10"}, "QRNG_HEALTH_ALPHA_LOG2"),
        ({"QRNG_ENCRYPT_PAYLOAD": "maybe"}, "QRNG_ENCRYPT_PAYLOAD"),
    ],
)
def test_bad_collector_values_give_one_line_naming_the_variable(
    override: dict[str, str], needle: str
) -> None:
    """Each bad collector value is one line that names its variable."""
    assert needle in _error(CollectorSettings, {**COLLECTOR_ENV, **override})


def test_yaml_section_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    """A YAML gateway: section sets values; the environment overrides them."""
    cfg = tmp_path / "qrng.yaml"
    cfg.write_text("gateway:\n  buffer_size: 2048\n  rate_limit: 5\ncollector:\n  mixing: hkdf\n")
    s = load(GatewaySettings, {**GATEWAY_ENV, "QRNG_RATE_LIMIT": "7"}, cfg)
    assert (s.buffer_size, s.rate_limit) == (2048, 7)


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    """Unknown keys, bad values and broken YAML each give one line."""
    cfg = tmp_path / "qrng.yaml"
    cfg.write_text("gateway:\n  bufer_size: 2048\n")
    with pytest.raises(ConfigError, match="unknown key 'bufer_size'"):
        load(GatewaySettings, GATEWAY_ENV, cfg)
    cfg.write_text("gateway:\n  buffer_size: -3\n")
    with pytest.raises(ConfigError, match=r"QRNG_BUFFER_SIZE.*from --config"):
        load(GatewaySettings, GATEWAY_ENV, cfg)
    cfg.write_text("gateway: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(GatewaySettings, GATEWAY_ENV, cfg)


def test_hmac_key_can_come_from_a_file(tmp_path: Path) -> None:
    """QRNG_HMAC_SECRET_KEY_FILE is read and trimmed."""
    keyfile = tmp_path / "hmac"
    keyfile.write_text(HMAC + "\n")
    s = load(
        GatewaySettings, {"QRNG_API_KEYS": "k" * 20, "QRNG_HMAC_SECRET_KEY_FILE": str(keyfile)}
    )
    assert s.packet_key().tag(b"x") == load(GatewaySettings, GATEWAY_ENV).packet_key().tag(b"x")


def test_secrets_do_not_appear_in_repr() -> None:
    """Neither the HMAC key nor API keys show in repr."""
    text = repr(load(GatewaySettings, GATEWAY_ENV))
    assert HMAC not in text
    assert "k" * 20 not in text


def test_push_targets_parse_ids_and_schemes() -> None:
    """id= prefixes, http and udp targets."""
    t = parse_push_target("gw-1=udp://10.0.0.1:7765")
    assert (t.gateway_id, t.scheme, t.host, t.port) == ("gw-1", "udp", "10.0.0.1", 7765)
    assert parse_push_target("https://h/push").port == 443


def test_mcp_settings_need_an_api_key() -> None:
    """The MCP client refuses to start without a gateway key."""
    assert "QRNG_GATEWAY_API_KEY" in _error(McpSettings, {})
    assert load(McpSettings, {"QRNG_GATEWAY_API_KEY": "x" * 20}).gateway_url.startswith("http")
