"""Configuration: environment over YAML, one clear line for every bad value."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from qrng_dd.addresses import parse_push_target
from qrng_dd.config import CollectorSettings, GatewaySettings, McpSettings, load
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
    limits = (s.max_connections, s.header_timeout_s, s.body_timeout_s, s.max_push_bodies)
    assert limits == (8192, 10, 10, 16)
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
        ({"QRNG_MAX_CONNECTIONS": "many"}, "QRNG_MAX_CONNECTIONS"),
        ({"QRNG_MAX_CONNECTIONS": "0"}, "QRNG_MAX_CONNECTIONS"),
        ({"QRNG_MAX_CONNECTIONS": "9" * 30}, "QRNG_MAX_CONNECTIONS"),
        ({"QRNG_HEADER_TIMEOUT_S": ""}, "QRNG_HEADER_TIMEOUT_S"),
        ({"QRNG_HEADER_TIMEOUT_S": "-1"}, "QRNG_HEADER_TIMEOUT_S"),
        ({"QRNG_BODY_TIMEOUT_S": "nan"}, "QRNG_BODY_TIMEOUT_S"),
        ({"QRNG_BODY_TIMEOUT_S": "1e9"}, "QRNG_BODY_TIMEOUT_S"),
        ({"QRNG_MAX_PUSH_BODIES": "-3"}, "QRNG_MAX_PUSH_BODIES"),
        ({"QRNG_MAX_PUSH_BODIES": "1.5"}, "QRNG_MAX_PUSH_BODIES"),
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


# -- push TLS files (QRNG_GATEWAY_CA_FILE, QRNG_GATEWAY_CLIENT_CERT_FILE / _KEY_FILE) -------


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    """A CA, a client certificate and its key, plus wrong, garbage and encrypted stand-ins."""
    ca = trustme.CA()
    leaf = ca.issue_cert("collector@qrng-dd.example")
    files = {name: tmp_path / f"{name}.pem" for name in
             ("ca", "cert", "key", "other_key", "garbage", "encrypted_key")}  # fmt: skip
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    ca.issue_cert("other@qrng-dd.example").private_key_pem.write_to_path(str(files["other_key"]))
    files["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return files


def _tls_env(pem: dict[str, Path], **names: str) -> dict[str, str]:
    """COLLECTOR_ENV plus VAR=name-of-a-file-in-``pem`` (or a literal path if not in it)."""
    env = dict(COLLECTOR_ENV, QRNG_GATEWAY_PUSH_URL="https://127.0.0.1:7764/push")
    for var, name in names.items():
        env[f"QRNG_{var}"] = str(pem[name]) if name in pem else name
    return env


def test_push_tls_files_are_accepted(pem: dict[str, Path]) -> None:
    """A CA bundle and a matching certificate and key load, and the settings keep the paths."""
    env = _tls_env(
        pem, GATEWAY_CA_FILE="ca", GATEWAY_CLIENT_CERT_FILE="cert", GATEWAY_CLIENT_KEY_FILE="key"
    )
    s = load(CollectorSettings, env)
    assert (s.gateway_ca_file, s.gateway_client_cert_file) == (pem["ca"], pem["cert"])
    assert s.gateway_client_key_file == pem["key"]
    assert load(CollectorSettings, _tls_env(pem, GATEWAY_CA_FILE="ca")).gateway_ca_file


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        ({"GATEWAY_CA_FILE": "/nonexistent/ca.pem"}, "QRNG_GATEWAY_CA_FILE: /nonexistent/ca.pem"),
        ({"GATEWAY_CA_FILE": "garbage"}, "QRNG_GATEWAY_CA_FILE"),
        ({"GATEWAY_CA_FILE": "key"}, "QRNG_GATEWAY_CA_FILE"),
        ({"GATEWAY_CLIENT_CERT_FILE": "cert"}, "QRNG_GATEWAY_CLIENT_KEY_FILE: set both"),
        ({"GATEWAY_CLIENT_KEY_FILE": "key"}, "QRNG_GATEWAY_CLIENT_CERT_FILE and"),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "/nonexistent/c.pem", "GATEWAY_CLIENT_KEY_FILE": "key"},
            "QRNG_GATEWAY_CLIENT_CERT_FILE: /nonexistent/c.pem is not a readable file",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "cert", "GATEWAY_CLIENT_KEY_FILE": "/nonexistent/k"},
            "QRNG_GATEWAY_CLIENT_KEY_FILE: /nonexistent/k is not a readable file",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "garbage", "GATEWAY_CLIENT_KEY_FILE": "key"},
            "QRNG_GATEWAY_CLIENT_CERT_FILE",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "key", "GATEWAY_CLIENT_KEY_FILE": "key"},
            "QRNG_GATEWAY_CLIENT_CERT_FILE",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "cert", "GATEWAY_CLIENT_KEY_FILE": "garbage"},
            "QRNG_GATEWAY_CLIENT_KEY_FILE",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "cert", "GATEWAY_CLIENT_KEY_FILE": "other_key"},
            "QRNG_GATEWAY_CLIENT_KEY_FILE",
        ),
        (
            {"GATEWAY_CLIENT_CERT_FILE": "cert", "GATEWAY_CLIENT_KEY_FILE": "encrypted_key"},
            "QRNG_GATEWAY_CLIENT_KEY_FILE",
        ),
    ],
)
def test_bad_push_tls_files_give_one_line_naming_the_variable(
    pem: dict[str, Path], names: dict[str, str], needle: str
) -> None:
    """Missing, half-set, non-PEM, mismatched or encrypted files: one line, the right variable.

    Loaded at startup, so the operator reads which file is wrong instead of meeting an
    OpenSSL traceback, or a passphrase prompt that hangs a service, on the first push.
    """
    text = _error(CollectorSettings, _tls_env(pem, **names))
    assert text.startswith("QRNG_GATEWAY_"), text
    assert needle in text
    assert "Traceback" not in text


def test_unreadable_push_tls_file_is_named(
    pem: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that exists but cannot be read is named with the reason.

    Root reads any file whatever its mode, so when the chmod does not bite, the refusal the
    kernel would give anyone else is simulated.
    """
    ca = pem["ca"]
    ca.chmod(0)
    if os.access(ca, os.R_OK):
        real = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == ca:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    text = _error(CollectorSettings, _tls_env(pem, GATEWAY_CA_FILE="ca"))
    assert text == f"QRNG_GATEWAY_CA_FILE: cannot read {ca}: Permission denied"


def test_the_anu_prefix_defaults_to_the_root_and_takes_a_path() -> None:
    """An empty prefix serves the AQN API at "/" (a client swaps only its base URL)."""
    assert load(GatewaySettings, GATEWAY_ENV).anu_prefix == ""
    for value in ["/anu", "/qrng/anu", "/v1.0/a_b-c~d"]:
        assert load(GatewaySettings, {**GATEWAY_ENV, "QRNG_ANU_PREFIX": value}).anu_prefix == value
    text = _error(GatewaySettings, {**GATEWAY_ENV, "QRNG_ANU_PREFIX": "/anu/"})
    assert text.startswith("QRNG_ANU_PREFIX: must be empty or a path like /anu")


def test_a_bad_anu_prefix_from_yaml_says_so(tmp_path: Path) -> None:
    config = tmp_path / "qrng.yaml"
    config.write_text("gateway:\n  anu_prefix: anu\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(GatewaySettings, GATEWAY_ENV, config)
    assert str(err.value).startswith("QRNG_ANU_PREFIX: must be empty")
    assert str(err.value).endswith("(from --config anu_prefix)")
