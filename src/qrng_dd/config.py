"""Configuration: environment variables (prefix ``QRNG_``) over an optional YAML file.

Pure: reads only the mapping and file it is given (DESIGN §8).

Each process role has its own settings class, so a gateway never demands an appliance URL
and a collector never demands API keys. A YAML file has one section per role (``gateway:``,
``collector:``, ``mcp:``), keys are the variable names without prefix, lowercased; the
environment wins over the file. Any invalid value becomes one :class:`ConfigError` line that
names the variable, which the CLI prints before exiting non-zero (no traceback).

Secrets (HMAC key, API keys, MCP token) are ``SecretStr``: they never appear in ``repr`` or
logs (P6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from qrng_dd.addresses import PushTarget, parse_host_port, parse_push_target
from qrng_dd.collector.batchtests import MIN_BATCH_BYTES
from qrng_dd.errors import ConfigError
from qrng_dd.gateway.pool import OverflowPolicy
from qrng_dd.tlsfiles import check_tls_files
from qrng_dd.wire.packet import MAX_DATA_BYTES, MIN_KEY_BYTES, PacketKey, valid_id

Role = Literal["gateway", "collector", "mcp"]
S = TypeVar("S", bound="_Base")
PREFIX = "QRNG_"

CommaList = Annotated[list[str], NoDecode]
#: A URL path prefix: one or more "/segment" of RFC 3986 unreserved characters, none of
#: them "." or ".." (a client would resolve those away before sending).
_PATH_PREFIX = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",")] if value.strip() else []
    return value


def _check_id(value: str) -> str:
    if not valid_id(value):
        msg = "must be 1-64 characters of [A-Za-z0-9._-]"
        raise ValueError(msg)
    return value


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="forbid", case_sensitive=False, hide_input_in_errors=True
    )
    role: ClassVar[Role]

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"] = (
        "info"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # :func:`load` merges the environment over the YAML section itself and hands the
        # result in as init values, so it can be given any mapping (tests, --config).
        return (init_settings,)


class _Keyed(_Base):
    """Settings of the two roles that hold the shared HMAC key."""

    hmac_secret_key: SecretStr | None = None
    hmac_secret_key_file: Path | None = None
    telemetry_interval_s: float = Field(10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _load_key(self) -> _Keyed:
        if self.hmac_secret_key is None and self.hmac_secret_key_file is not None:
            try:
                text = self.hmac_secret_key_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as err:
                msg = f"QRNG_HMAC_SECRET_KEY_FILE: cannot read {self.hmac_secret_key_file}: {err}"
                raise ValueError(msg) from err
            self.hmac_secret_key = SecretStr(text.strip())
        if self.hmac_secret_key is None:
            msg = "QRNG_HMAC_SECRET_KEY: required (hex, 64+ characters; `qrng-dd keygen` makes one)"
            raise ValueError(msg)
        text = self.hmac_secret_key.get_secret_value().strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            msg = "QRNG_HMAC_SECRET_KEY: must be hex text (`qrng-dd keygen` makes one)"
            raise ValueError(msg) from None
        if len(key) < MIN_KEY_BYTES:
            msg = (
                f"QRNG_HMAC_SECRET_KEY: must encode at least {MIN_KEY_BYTES} bytes "
                f"({2 * MIN_KEY_BYTES} hex characters), got {len(key)}"
            )
            raise ValueError(msg)
        return self

    def packet_key(self) -> PacketKey:
        assert self.hmac_secret_key is not None  # guaranteed by _load_key
        return PacketKey.from_hex(self.hmac_secret_key.get_secret_value())


class GatewaySettings(_Keyed):
    """``qrng-dd gateway``."""

    role: ClassVar[Role] = "gateway"

    gateway_id: str = "gateway"
    host: str = "0.0.0.0"
    port: int = Field(7764, ge=0, le=65535)
    buffer_size: int = Field(10_485_760, ge=1024, le=4 * 2**30)
    buffer_overflow_policy: OverflowPolicy = "discard"
    api_keys: CommaList = Field(repr=False)
    rate_limit: float = Field(100.0, gt=0, le=1_000_000)
    rate_burst: float | None = Field(None, gt=0, le=10_000_000)
    byte_rate_limit: int = Field(0, ge=0, le=2**40)
    max_request_bytes: int = Field(65_536, ge=1, le=MAX_DATA_BYTES)
    packet_ttl_s: float = Field(300.0, gt=0, le=86_400)
    max_clock_skew_s: float = Field(60.0, ge=0, le=3600)
    udp_listen: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    mcp_enabled: bool = False
    access_log: bool = True
    #: Durable sequence memory (never entropy): see :mod:`qrng_dd.gateway.state`.
    state_dir: Path | None = None
    #: Where the ANU Quantum Numbers (AQN) API is served: "" is the root, so an AQN client
    #: only swaps its base URL; "/anu" keeps the root free (:mod:`qrng_dd.gateway.compat.anu`).
    anu_prefix: str = ""
    #: Overload limits (docs/RELIABILITY.md): connections served at once (granian's
    #: backpressure; the rest wait in the kernel's accept queue), seconds to send a request's
    #: headers (also how long an idle connection is kept), seconds to send a whole /push body,
    #: and /push bodies read at once (each up to 1 MiB: this bounds their memory).
    max_connections: int = Field(8192, ge=16, le=1_000_000)
    header_timeout_s: float = Field(10.0, ge=0.5, le=600)
    body_timeout_s: float = Field(10.0, ge=0.1, le=600)
    max_push_bodies: int = Field(16, ge=1, le=4096)

    _split = field_validator("api_keys", mode="before")(_split_commas)

    _id = field_validator("gateway_id")(_check_id)

    @field_validator("state_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        if not value:
            msg = "at least one API key is required (`qrng-dd keygen --api-key` makes one)"
            raise ValueError(msg)
        if any(not key for key in value):
            msg = "contains an empty key (check for a stray comma)"
            raise ValueError(msg)
        if any(len(key) < 16 for key in value):
            msg = "every key must be at least 16 characters"
            raise ValueError(msg)
        return value

    @field_validator("anu_prefix")
    @classmethod
    def _check_anu_prefix(cls, value: str) -> str:
        # Path segments of unreserved characters only: the prefix is matched literally
        # against the request path, so nothing in it may need escaping.
        if value and not _PATH_PREFIX.fullmatch(value):
            msg = (
                "must be empty or a path like /anu (segments of letters, digits and ._~-, "
                f"no trailing '/'), got {value[:40]!r}"
            )
            raise ValueError(msg)
        return value

    @field_validator("udp_listen")
    @classmethod
    def _check_udp(cls, value: str | None) -> str | None:
        if value in (None, "", "off"):
            return None
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            msg = "QRNG_TLS_CERT_FILE and QRNG_TLS_KEY_FILE: set both or neither"
            raise ValueError(msg)
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            msg = "QRNG_TLS_CLIENT_CA_FILE: needs QRNG_TLS_CERT_FILE and QRNG_TLS_KEY_FILE"
            raise ValueError(msg)
        check_tls_files(
            ("QRNG_TLS_CLIENT_CA_FILE", self.tls_client_ca_file),
            ("QRNG_TLS_CERT_FILE", self.tls_cert_file),
            ("QRNG_TLS_KEY_FILE", self.tls_key_file),
        )
        return self

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return None if self.udp_listen is None else parse_host_port(self.udp_listen)

    @property
    def burst(self) -> float:
        """Token bucket size: ``QRNG_RATE_BURST``, else twice the rate (a short burst)."""
        return self.rate_burst if self.rate_burst is not None else 2 * self.rate_limit


class CollectorSettings(_Keyed):
    """``qrng-dd collector``."""

    role: ClassVar[Role] = "collector"

    collector_id: str = "collector"
    appliance_urls: CommaList
    appliance_ca_file: Path | None = None
    appliance_tls_verify: bool = True
    gateway_push_url: CommaList
    #: CA bundle that signed the gateways' certificates; trusted instead of the default store.
    gateway_ca_file: Path | None = None
    #: Certificate and key this collector presents to gateways that require client certs.
    gateway_client_cert_file: Path | None = None
    gateway_client_key_file: Path | None = None
    fetch_interval_ms: int = Field(100, ge=1, le=3_600_000)
    fetch_size: int = Field(4096, ge=MIN_BATCH_BYTES, le=MAX_DATA_BYTES)
    fetch_timeout_ms: int = Field(5000, ge=1, le=600_000)
    mixing: Literal["xor", "hkdf"] = "xor"
    min_sources: int = Field(1, ge=1, le=64)
    collector_buffer_size: int = Field(1_048_576, ge=1024, le=2**30)
    encrypt_payload: bool = True
    metrics_textfile: Path | None = None
    claimed_entropy_bits: float = Field(7.0, gt=0, le=8)
    #: -log2 of the health tests' false-alarm rate per sample. SP 800-90B allows 2^-20 to
    #: 2^-40; at 2^-20 perfect bytes trip the repetition test about every 16 MiB, so the
    #: default is 40 (see qrng_dd.collector.health).
    health_alpha_log2: int = Field(40, ge=20, le=40)
    udp_payload_bytes: int = Field(1200, ge=64, le=65_000)
    udp_max_bitrate: int = Field(800_000_000, ge=1000, le=100_000_000_000)

    _split = field_validator("appliance_urls", "gateway_push_url", mode="before")(_split_commas)

    _id = field_validator("collector_id")(_check_id)

    @field_validator("appliance_urls")
    @classmethod
    def _check_appliances(cls, value: list[str]) -> list[str]:
        if not value or any(not url for url in value):
            msg = "at least one appliance URL is required, with no empty entries"
            raise ValueError(msg)
        for url in value:
            parts = urlsplit(url)
            if parts.scheme == "file":
                if not parts.path:
                    msg = f"{url!r} names no file"
                    raise ValueError(msg)
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                msg = f"{url!r} is not an http(s):// or file:// URL"
                raise ValueError(msg)
        return value

    @field_validator("gateway_push_url")
    @classmethod
    def _check_targets(cls, value: list[str]) -> list[str]:
        if not value or any(not url for url in value):
            msg = "at least one push URL is required, with no empty entries"
            raise ValueError(msg)
        seen: set[str] = set()
        for entry in value:
            target = parse_push_target(entry)
            if target.gateway_id in seen:
                msg = f"gateway id {target.gateway_id!r} appears twice; give each target id="
                raise ValueError(msg)
            seen.add(target.gateway_id)
        return value

    @model_validator(mode="after")
    def _check_push_tls(self) -> CollectorSettings:
        check_tls_files(
            ("QRNG_GATEWAY_CA_FILE", self.gateway_ca_file),
            ("QRNG_GATEWAY_CLIENT_CERT_FILE", self.gateway_client_cert_file),
            ("QRNG_GATEWAY_CLIENT_KEY_FILE", self.gateway_client_key_file),
        )
        check_tls_files(("QRNG_APPLIANCE_CA_FILE", self.appliance_ca_file), ("", None), ("", None))
        return self

    @property
    def targets(self) -> list[PushTarget]:
        return [parse_push_target(entry) for entry in self.gateway_push_url]


class McpSettings(_Base):
    """``qrng-dd mcp``: a client of a gateway, holding only an API key."""

    role: ClassVar[Role] = "mcp"

    gateway_url: str = "http://127.0.0.1:7764"
    gateway_api_key: SecretStr
    mcp_auth_token: SecretStr | None = None
    mcp_allowed_origins: CommaList = Field(default_factory=list)

    _split = field_validator("mcp_allowed_origins", mode="before")(_split_commas)

    @field_validator("gateway_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"{value!r} is not an http(s):// URL"
            raise ValueError(msg)
        return value.rstrip("/")

    @field_validator("gateway_api_key")
    @classmethod
    def _check_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            msg = "must not be empty"
            raise ValueError(msg)
        return value


def _read_yaml(path: Path, role: Role) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        msg = f"--config: cannot read {path}: {err}"
        raise ConfigError(msg) from err
    except yaml.YAMLError as err:
        msg = f"--config: {path} is not valid YAML: {str(err).splitlines()[0]}"
        raise ConfigError(msg) from err
    if document is None:
        return {}
    if not isinstance(document, dict):
        msg = f"--config: {path} must be a mapping with {role}: / gateway: / collector: / mcp:"
        raise ConfigError(msg)
    section = document.get(role) or {}
    if not isinstance(section, dict):
        msg = f"--config: section {role}: in {path} must be a mapping"
        raise ConfigError(msg)
    return {str(key).lower(): value for key, value in section.items()}


def _one_line(err: ValidationError, from_file: set[str]) -> str:
    first = err.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    loc = [str(part) for part in first["loc"]]
    if not loc:  # a model validator: the message names its variable itself
        return msg
    field = loc[0]
    where = f"{PREFIX}{field.upper()}"
    if first["type"] == "extra_forbidden":
        return f"--config: unknown key {field!r}"
    if first["type"] == "missing":
        return f"{where}: required"
    origin = f" (from --config {field})" if field in from_file else ""
    return f"{where}: {msg}{origin}"


def variable_names(cls: type[_Base]) -> set[str]:
    """Every ``QRNG_`` variable ``cls`` reads."""
    return {PREFIX + name.upper() for name in cls.model_fields}


def load(
    cls: type[S], environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> S:
    """Build ``cls`` from ``environ`` (default: the process environment) and a YAML file.

    Raises:
        ConfigError: one line naming the variable and what is wrong with it.
    """
    values = _read_yaml(config_file, cls.role) if config_file is not None else {}
    from_file = set(values)
    env = os.environ if environ is None else environ
    for name in cls.model_fields:
        if (text := env.get(PREFIX + name.upper())) is not None:
            values[name] = text
            from_file.discard(name)
    try:
        return cls(**values)
    except ValidationError as err:
        raise ConfigError(_one_line(err, from_file)) from None
