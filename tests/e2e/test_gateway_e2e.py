"""The real ``qrng-dd gateway`` process on loopback: once-only serving, metrics, P1, TLS, exit."""

from __future__ import annotations

import itertools
import shutil
import socket
import ssl
import subprocess
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from qrng_dd.wire.telemetry import encode_telemetry
from tests.support.gateway import (
    RunningGateway,
    clean_environ,
    free_port,
    free_udp_port,
    gateway_command,
    make_raw,
    push_packets,
    start_gateway,
    stop,
    tree_connections,
    wait_until,
)

pytestmark = pytest.mark.e2e

POOL_BYTES = 1_048_576
PACKET_BYTES = 65_536
BLOCK = 16
FAST = {"QRNG_RATE_LIMIT": "1000000"}


def _stray_connections(pid: int, ports: set[int]) -> list[Any]:
    """Sockets of ``pid`` (and its worker) neither listening nor the local end of our ports."""
    stray = []
    for conn in tree_connections(pid):
        if conn.status == psutil.CONN_LISTEN:
            continue
        if conn.laddr and conn.laddr.port in ports:
            continue  # an accepted client connection, or our bound UDP receiver
        stray.append(conn)
    return stray


def _status(gw: RunningGateway, client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/status", headers=gw.auth)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _disjoint_in(pushed: bytes, served: list[bytes]) -> bool:
    """Whether every served chunk is a distinct, non-overlapping stretch of the pushed bytes."""
    spans = []
    for chunk in served:
        start = pushed.find(chunk)
        if start < 0:
            return False
        spans.append((start, start + len(chunk)))
    spans.sort()
    return all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_a_full_pool_is_served_exactly_once_to_concurrent_clients() -> None:
    """64 concurrent clients drain a full pool: no block twice, every byte accounted for."""
    with start_gateway({**FAST, "QRNG_BUFFER_SIZE": str(POOL_BYTES)}) as gw, gw.client() as client:
        ports = {gw.port}
        pushed_parts: list[bytes] = []
        for _ in range(POOL_BYTES // PACKET_BYTES):
            pushed_parts += push_packets(gw.url, gw.key, 1, PACKET_BYTES, client=client)
            assert _stray_connections(gw.proc.pid, ports) == []
        pushed = b"".join(pushed_parts)
        assert len(pushed) == POOL_BYTES
        before = _status(gw, client)
        assert before["buffer_bytes_available"] == POOL_BYTES
        assert before["buffer_fill_percent"] == 100.0

        binary: list[bytes] = []
        other_requests = 0
        completed = 0
        stray_seen: list[Any] = []

        async def worker(url: str, ac: httpx.AsyncClient) -> None:
            nonlocal other_requests, completed
            while True:
                response = await ac.get(url, headers=gw.auth)
                completed += 1
                if completed % 64 == 0:
                    stray_seen.extend(_stray_connections(gw.proc.pid, ports))
                if response.status_code == 503:
                    assert response.headers["content-type"].startswith("application/problem")
                    assert int(response.headers["retry-after"]) >= 1
                    return
                assert response.status_code == 200, response.text
                if url.endswith("binary"):
                    assert len(response.content) == 4096
                    binary.append(response.content)
                else:
                    other_requests += 1

        async def drain() -> None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with gw.async_client(limits=limits) as ac, anyio.create_task_group() as tg:
                urls = ["/api/random?bytes=4096&encoding=binary"] * 58
                urls += ["/api/uuid?count=10"] * 3 + ["/api/integers?count=50&min=-9&max=9"] * 3
                for url in urls:
                    tg.start_soon(worker, url, ac)

        anyio.run(drain)

        assert stray_seen == []
        assert completed > 64
        assert other_requests > 0
        blocks = [chunk[i : i + BLOCK] for chunk in binary for i in range(0, len(chunk), BLOCK)]
        assert len(set(blocks)) == len(blocks)
        assert _disjoint_in(pushed, binary)

        after = _status(gw, client)
        available = after["buffer_bytes_available"]
        assert available < 4096
        assert after["total_bytes_served"] == POOL_BYTES - available
        assert after["total_bytes_served"] >= 4096 * len(binary)
        served_metric = [
            sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "qrng_bytes_served_total"
        ]
        assert served_metric == [after["total_bytes_served"]]

        refused = client.get("/api/random?bytes=4096&encoding=binary", headers=gw.auth)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert _status(gw, client)["buffer_bytes_available"] == available
        assert _stray_connections(gw.proc.pid, ports) == []


def test_gateway_opens_no_outbound_connection_while_serving_and_ingesting() -> None:
    """P1: every socket of the process listens or is the local end of our TCP/UDP ports."""
    udp_port = free_udp_port()
    env = {**FAST, "QRNG_UDP_LISTEN": f"127.0.0.1:{udp_port}"}
    with start_gateway(env) as gw, gw.client() as client:
        ports = {gw.port, udp_port}
        kinds = {c.type for c in tree_connections(gw.proc.pid)}
        assert socket.SOCK_DGRAM in kinds  # the UDP receiver is there to be checked
        assert _stray_connections(gw.proc.pid, ports) == []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(5):
                udp.sendto(
                    make_raw(gw.key, b"\x07" * 512, source="udp-col"), ("127.0.0.1", udp_port)
                )
        wait_until(lambda: "udp-col" in _status(gw, client)["sources"], what="UDP packets ingested")
        for _ in range(5):
            push_packets(gw.url, gw.key, 2, 4096, client=client)
            assert client.get("/api/random?bytes=1024", headers=gw.auth).status_code == 200
            assert client.get("/metrics").status_code == 200
            assert _stray_connections(gw.proc.pid, ports) == []
        assert _status(gw, client)["total_bytes_served"] == 5 * 1024


def _metrics_after_telemetry(gw: RunningGateway, client: httpx.Client) -> str:
    stats = {"health": {"appliance-1": "quarantined"}, "fetch_errors": {"appliance-1": 3}}
    raw = make_raw(gw.key, encode_telemetry(stats), source="col-1", flags=3)
    assert client.post("/push", content=raw).status_code == 200
    push_packets(gw.url, gw.key, 1, 2048, source="col-1", client=client)
    assert client.get("/api/random?bytes=16", headers=gw.auth).status_code == 200
    assert client.get("/push").status_code == 405
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


_SEED_RULES = """\
groups:
  - name: qrng-dd-seed
    rules:
      - alert: BufferCriticallyLow
        expr: qrng_buffer_fill_percent < 10
        for: 5m

      - alert: HighErrorRate
        expr: rate(qrng_collector_fetch_errors_total[5m]) > 0.1
        for: 2m
"""


def test_promtool_accepts_the_metrics_and_the_seed_alert_rules(tmp_path: Path) -> None:
    """promtool lints /metrics clean, and the seed's alert rules name metrics we export."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (CI installs it): cannot lint /metrics")
    with start_gateway() as gw, gw.client() as client:
        text = _metrics_after_telemetry(gw, client)
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    rules = tmp_path / "seed-alerts.yml"
    rules.write_text(_SEED_RULES, encoding="utf-8")
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert "2 rules found" in check.stdout.decode()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert "qrng_buffer_fill_percent" in exported
    assert "qrng_collector_fetch_errors_total" in exported
    assert 'qrng_collector_fetch_errors_total{appliance="appliance-1",source="col-1"} 3.0' in text
    assert 'qrng_source_health{appliance="appliance-1",source="col-1"} 0.0' in text


# -- TLS -----------------------------------------------------------------------------------


def _tls_files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert = tmp_path / "server.pem"
    key = tmp_path / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    return {"QRNG_TLS_CERT_FILE": str(cert), "QRNG_TLS_KEY_FILE": str(key)}


def _client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def _handshake(ctx: ssl.SSLContext, port: int) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_tls_serves_1_2_and_later_and_refuses_1_1(tmp_path: Path) -> None:
    """Over QRNG_TLS_* the gateway speaks HTTPS, negotiates TLS >= 1.2 and refuses TLS 1.1."""
    ca = trustme.CA()
    trusted = _client_context(ca)
    with start_gateway(_tls_files(tmp_path, ca), ssl_context=trusted) as gw:
        assert gw.url.startswith("https://")
        with gw.client() as client:
            response = client.get("/health")
            assert response.status_code in (200, 503)
            assert "status" in response.json()
        assert _handshake(trusted, gw.port) in ("TLSv1.2", "TLSv1.3")
        only_12 = _client_context(ca)
        only_12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _handshake(only_12, gw.port) == "TLSv1.2"

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        ca.configure_trust(old)
        with pytest.raises(ssl.SSLError) as refused:
            _handshake(old, gw.port)
        assert refused.value.reason != "NO_PROTOCOLS_AVAILABLE", "client could not offer 1.1"
        with httpx.Client(verify=_client_context(trustme.CA())) as stranger:
            with pytest.raises(httpx.ConnectError):
                stranger.get(f"{gw.url}/health")


def test_tls_with_a_client_ca_requires_a_client_certificate(tmp_path: Path) -> None:
    """With QRNG_TLS_CLIENT_CA_FILE only clients holding a certificate from that CA get in."""
    ca = trustme.CA()
    client_ca = tmp_path / "client-ca.pem"
    ca.cert_pem.write_to_path(str(client_ca))
    with_cert = _client_context(ca, ca.issue_cert("client@qrng-dd.example"))
    env = {**_tls_files(tmp_path, ca), "QRNG_TLS_CLIENT_CA_FILE": str(client_ca)}
    with start_gateway(env, ssl_context=with_cert) as gw:
        with gw.client() as client:
            assert client.get("/health").status_code in (200, 503)
            assert client.get("/api/status", headers=gw.auth).status_code == 200
        with httpx.Client(verify=_client_context(ca), timeout=10) as anonymous:
            with pytest.raises(httpx.TransportError):
                anonymous.get(f"{gw.url}/health")
        other_ca = trustme.CA()
        foreign = _client_context(ca, other_ca.issue_cert("mallory@qrng-dd.example"))
        with httpx.Client(verify=foreign, timeout=10) as mallory:
            with pytest.raises(httpx.TransportError):
                mallory.get(f"{gw.url}/health")


# -- process lifecycle ---------------------------------------------------------------------


def test_sigterm_stops_the_gateway_with_status_zero() -> None:
    """SIGTERM shuts the gateway down gracefully: exit status 0, no traceback."""
    with start_gateway() as gw:
        push_packets(gw.url, gw.key, 1, 1024)
        assert stop(gw.proc, deadline_s=15) == 0
        assert "Traceback" not in gw.stderr()


_VALID = {
    "QRNG_HOST": "127.0.0.1",
    "QRNG_HMAC_SECRET_KEY": "ab" * 32,
    "QRNG_API_KEYS": "valid-api-key-0123456789",
}


_BAD_SETTINGS = [
    ("QRNG_API_KEYS", "valid-api-key-0123456789,,other-api-key-0123456789"),
    ("QRNG_HMAC_SECRET_KEY", "ab" * 16),
    ("QRNG_BUFFER_OVERFLOW_POLICY", "recycle"),
    ("QRNG_BUFFER_SIZE", "-1"),
]


def test_bad_configuration_exits_non_zero_with_one_line_naming_the_variable() -> None:
    """Invalid settings (or a busy port) stop the CLI at start with one stderr line, no trace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = str(busy.getsockname()[1])
        cases = [(name, value, name) for name, value in _BAD_SETTINGS]
        cases.append(("QRNG_PORT", busy_port, f"cannot listen on 127.0.0.1:{busy_port}"))
        # The processes run side by side: each spends its time importing, not checking.
        runs = []
        for name, value, expected in cases:
            env = clean_environ({**_VALID, "QRNG_PORT": str(free_port()), name: value})
            proc = subprocess.Popen(
                gateway_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            runs.append((name, value, expected, proc))
        for name, value, expected, proc in runs:
            with proc:
                _, err = proc.communicate(timeout=60)
            stderr = err.decode()
            case = f"{name}={value!r}: {stderr}"
            assert proc.returncode not in (0, None), case
            assert "Traceback" not in stderr, case
            lines = stderr.strip().splitlines()
            assert len(lines) == 1, case
            assert expected in lines[0], case
            if name == "QRNG_HMAC_SECRET_KEY":
                assert value not in stderr, case  # P6: a secret is never echoed, even a wrong one
