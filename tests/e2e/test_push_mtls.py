"""Mutual TLS on the push link, as real processes on loopback: simulator -> collector -> gateway.

The gateway (``qrng-dd gateway``, served by granian) requires client certificates
(``QRNG_TLS_CLIENT_CA_FILE``). A collector holding one (``QRNG_GATEWAY_CLIENT_CERT_FILE`` /
``QRNG_GATEWAY_CLIENT_KEY_FILE``) and trusting the gateway's CA (``QRNG_GATEWAY_CA_FILE``) gets
its packets accepted; the same collector without the certificate gets none in and says so.
That refusal is only worth something if the gateway enforces it in the TLS handshake, so
that is checked on its own, with a bare client.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from qrng_dd.collector.clients import push_client
from qrng_dd.config import CollectorSettings, load
from tests.support.diode import Running, cli, eventually, start_appliance, start_collector
from tests.support.gateway import RunningGateway, clean_environ, start_gateway

pytestmark = pytest.mark.e2e

HMAC = "ab" * 32


@dataclass(frozen=True)
class Pki:
    """One CA that signed both the gateway's server certificate and the collector's."""

    ca: trustme.CA
    ca_file: Path
    server_cert: Path
    server_key: Path
    client: trustme.LeafCert
    client_cert: Path
    client_key: Path

    def context(self, *, client_cert: bool) -> ssl.SSLContext:
        """A client context trusting the CA, with or without the collector's certificate."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if client_cert:
            self.client.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("pki")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server_cert, server_key = directory / "server.pem", directory / "server.key"
    server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(server_key))
    client = ca.issue_cert("collector@qrng-dd.example")
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(client_key))
    return Pki(ca, ca_file, server_cert, server_key, client, client_cert, client_key)


@pytest.fixture(scope="module")
def gateway(pki: Pki) -> Iterator[RunningGateway]:
    """A real gateway that requires a client certificate from ``pki``'s CA on every route."""
    env = {
        "QRNG_TLS_CERT_FILE": str(pki.server_cert),
        "QRNG_TLS_KEY_FILE": str(pki.server_key),
        "QRNG_TLS_CLIENT_CA_FILE": str(pki.ca_file),
    }
    # Readiness polling (and gw.status()) go through a context that holds the client cert.
    with start_gateway(env, ssl_context=pki.context(client_cert=True)) as gw:
        assert gw.url.startswith("https://")
        yield gw


@pytest.fixture(scope="module")
def appliance() -> Iterator[Running]:
    with start_appliance() as a:
        yield a


def _collector_env(
    gw: RunningGateway, appliance: Running, pki: Pki, collector_id: str, textfile: Path
) -> dict[str, str]:
    """A collector pushing to ``gw`` over HTTPS, trusting ``pki``'s CA, with no client cert."""
    return {
        "QRNG_COLLECTOR_ID": collector_id,
        "QRNG_HMAC_SECRET_KEY": gw.hmac_hex,
        "QRNG_APPLIANCE_URLS": appliance.url,
        "QRNG_GATEWAY_PUSH_URL": f"{gw.url}/push",
        "QRNG_GATEWAY_CA_FILE": str(pki.ca_file),
        "QRNG_FETCH_INTERVAL_MS": "20",
        "QRNG_FETCH_SIZE": "8192",
        "QRNG_TELEMETRY_INTERVAL_S": "0.5",
        "QRNG_METRICS_TEXTFILE": str(textfile),
    }


def _accepted(gw: RunningGateway, source: str) -> int:
    entry = gw.status()["sources"].get(source)
    return int(entry["packets_accepted"]) if entry else 0


def _counter(textfile: Path, name: str) -> float:
    """The total of counter ``name`` over its labels in the collector's metrics textfile."""
    try:
        text = textfile.read_text()  # written by rename: never half a file
    except FileNotFoundError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    )


def _ssl_error(err: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` under an httpx exception, if any.

    httpx wraps httpcore's exception, which wraps the ``ssl`` one; depending on the layer the
    original is the ``__cause__``, the ``__context__`` or the first argument.
    """
    seen: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if isinstance(current, ssl.SSLError):
            return current
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return None


# -- end to end ----------------------------------------------------------------------------


def test_a_collector_with_a_client_certificate_pushes_over_mutual_tls(
    gateway: RunningGateway, appliance: Running, pki: Pki, tmp_path: Path
) -> None:
    """With the three QRNG_GATEWAY_* files set, the gateway accepts the collector's packets."""
    textfile = tmp_path / "collector.prom"
    env = _collector_env(gateway, appliance, pki, "mtls", textfile)
    env["QRNG_GATEWAY_CLIENT_CERT_FILE"] = str(pki.client_cert)
    env["QRNG_GATEWAY_CLIENT_KEY_FILE"] = str(pki.client_key)
    with start_collector(env) as collector:
        try:
            eventually(lambda: _accepted(gateway, "mtls") > 3, what="packets accepted over mTLS")
            eventually(lambda: _counter(textfile, "qrng_collector_pushed_bytes") > 0,
                       what="collector counts bytes delivered")  # fmt: skip
            telemetry = eventually(lambda: gateway.status()["sources"]["mtls"].get("telemetry"),
                                   what="heartbeat accepted")  # fmt: skip
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- collector ---\n{collector.stderr()}") from None
    assert telemetry["collector_id"] == "mtls"


def test_a_collector_without_a_client_certificate_gets_nothing_in(
    gateway: RunningGateway, appliance: Running, pki: Pki, tmp_path: Path
) -> None:
    """Same collector, same key, same CA, no client certificate: every push fails in TLS.

    The collector has entropy to send (it fetched some), keeps running and counts its push
    attempts as errors, as it would for any unreachable gateway; the gateway has not accepted
    a single packet from it, not even a heartbeat. Ten errors, not one: under TLS 1.3 each
    refusal is an alert after the handshake, and every one must be survived.
    """
    textfile = tmp_path / "collector.prom"
    with start_collector(_collector_env(gateway, appliance, pki, "anonymous", textfile)) as c:

        def errors_while_running() -> bool:
            if c.proc.poll() is not None:
                tail = "\n".join(c.stderr().splitlines()[-12:])
                msg = f"collector exited with status {c.proc.returncode}:\n{tail}"
                raise AssertionError(msg)
            return _counter(textfile, "qrng_collector_push_errors") >= 10

        eventually(errors_while_running, what="collector reports push errors and keeps running")
        assert _counter(textfile, "qrng_collector_fetched_bytes") > 0, "nothing to push"
        assert _counter(textfile, "qrng_collector_pushed_bytes") == 0
        failures = eventually(lambda: c.log_events("push_failed"), what="push_failed logged")
        # Refused in the transport (the TLS alert), not by an HTTP status from the gateway.
        assert all("status" not in f and f.get("error") for f in failures), failures
        assert not c.log_events("push_refused")
    assert "anonymous" not in gateway.status()["sources"]


def test_the_gateway_refuses_a_client_without_a_certificate_in_the_tls_handshake(
    gateway: RunningGateway, pki: Pki
) -> None:
    """granian enforces QRNG_TLS_CLIENT_CA_FILE: no certificate, no HTTP at all.

    With TLS 1.3 the client finishes its side of the handshake before the server has checked
    the (missing) certificate, so the refusal arrives as an alert on the first read; with TLS
    1.2 the handshake itself fails. Either way it is an ``ssl.SSLError``, not a response.
    """
    with httpx.Client(verify=pki.context(client_cert=True), timeout=10) as holder:
        assert holder.get(f"{gateway.url}/health").status_code in (200, 503)  # the control
    tls12 = pki.context(client_cert=False)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    for ctx in (pki.context(client_cert=False), tls12):
        with httpx.Client(verify=ctx, timeout=10) as anonymous:
            with pytest.raises(httpx.TransportError) as refused:
                anonymous.get(f"{gateway.url}/health")
        assert _ssl_error(refused.value) is not None, repr(refused.value)
        with (
            socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
            pytest.raises(ssl.SSLError),
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            # Nothing is sent: the refusal must come whatever the client says (and sending
            # could race the server's close into a reset that hides the alert).
            tls.recv(1024)


def test_a_bad_client_key_stops_the_collector_with_one_line(pki: Pki, tmp_path: Path) -> None:
    """A key that is not the certificate's is one stderr line naming the variable, exit 2."""
    wrong = tmp_path / "other.key"
    pki.ca.issue_cert("someone-else@qrng-dd.example").private_key_pem.write_to_path(str(wrong))
    env = {
        "QRNG_HMAC_SECRET_KEY": HMAC,
        "QRNG_APPLIANCE_URLS": "http://127.0.0.1:9",
        "QRNG_GATEWAY_PUSH_URL": "https://127.0.0.1:9/push",
        "QRNG_GATEWAY_CLIENT_CERT_FILE": str(pki.client_cert),
        "QRNG_GATEWAY_CLIENT_KEY_FILE": str(wrong),
    }
    run = subprocess.run(cli("collector"), env=clean_environ(env), capture_output=True,
                         timeout=60, check=False)  # fmt: skip
    stderr = run.stderr.decode()
    assert run.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert "QRNG_GATEWAY_CLIENT_KEY_FILE" in line
    assert "not the private key of the certificate" in line


# -- the client in process -----------------------------------------------------------------


def _settings(push_url: str, **extra: str) -> CollectorSettings:
    env = {
        "QRNG_HMAC_SECRET_KEY": HMAC,
        "QRNG_APPLIANCE_URLS": "http://127.0.0.1:9",
        "QRNG_GATEWAY_PUSH_URL": push_url,
        **extra,
    }
    return load(CollectorSettings, env)


@pytest.mark.parametrize(
    ("push_url", "warned"),
    [
        ("http://127.0.0.1:7764/push", True),
        ("udp://127.0.0.1:7765", True),
        ("a=udp://127.0.0.1:7765,b=https://127.0.0.1:7764/push", False),
    ],
)
@pytest.mark.anyio
async def test_tls_files_without_an_https_target_are_flagged(
    pki: Pki, push_url: str, warned: bool
) -> None:
    """Client certificate set but nothing to present it to: a warning, not a refusal.

    A forgotten ``https://`` would otherwise push in the clear without a word.
    """
    settings = _settings(
        push_url,
        QRNG_GATEWAY_CLIENT_CERT_FILE=str(pki.client_cert),
        QRNG_GATEWAY_CLIENT_KEY_FILE=str(pki.client_key),
    )
    with capture_logs() as logs:
        client = push_client(settings)
    await client.aclose()
    assert ("push_tls_unused" in [e["event"] for e in logs]) is warned, logs


@pytest.mark.anyio
async def test_no_tls_files_means_no_warning() -> None:
    """The default (plain push URL, no TLS files) stays as quiet as before."""
    with capture_logs() as logs:
        client = push_client(_settings("http://127.0.0.1:7764/push"))
    await client.aclose()
    assert logs == []
