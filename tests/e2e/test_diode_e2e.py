"""The whole diode as real processes on loopback: simulator -> collector -> gateway."""

from __future__ import annotations

import functools
import re
import secrets
import shlex
import signal
import subprocess
from collections.abc import Iterator

import psutil
import pytest

from tests.support.diode import (
    Running,
    cli,
    eventually,
    run_process,
    set_faults,
    start_appliance,
    start_collector,
)
from tests.support.gateway import RunningGateway, clean_environ, free_port, start_gateway

pytestmark = pytest.mark.e2e


def _collector_env(gw: RunningGateway, *appliances: Running, **extra: str) -> dict[str, str]:
    env = {
        "QRNG_HMAC_SECRET_KEY": gw.hmac_hex,
        "QRNG_APPLIANCE_URLS": ",".join(a.url for a in appliances),
        "QRNG_GATEWAY_PUSH_URL": f"{gw.url}/push",
        "QRNG_FETCH_INTERVAL_MS": "20",
        "QRNG_FETCH_SIZE": "8192",
        "QRNG_TELEMETRY_INTERVAL_S": "0.5",
    }
    env.update(extra)
    return env


def _accepted(gw: RunningGateway, source: str = "collector") -> int:
    entry = gw.status()["sources"].get(source)
    return int(entry["packets_accepted"]) if entry else 0


def _holds_more_than(gw: RunningGateway, count: int) -> bool:
    return bool(gw.status()["buffer_bytes_available"] > count)


def _drain(gw: RunningGateway, chunk: int = 65536) -> bytes:
    """What the gateway's pool holds, through /api/random, until it is seen empty (the
    collector keeps pushing meanwhile: waiting for a 503 races its pushes)."""
    parts: list[bytes] = []
    with gw.client() as c:
        while True:
            n = min(chunk, gw.status()["buffer_bytes_available"])
            if n == 0:
                return b"".join(parts)
            r = c.get("/api/random", params={"bytes": n, "encoding": "binary"}, headers=gw.auth)
            if r.status_code == 503:
                return b"".join(parts)
            assert r.status_code == 200, r.text
            parts.append(r.content)


def _take_what_is_held(gw: RunningGateway, chunk: int = 65536) -> bytes:
    """What the pool holds at one look, drawn in chunks: bounded, where :func:`_drain`
    chases a collector that keeps pushing (and can lose that race on a loaded machine)."""
    parts: list[bytes] = []
    left = gw.status()["buffer_bytes_available"]
    with gw.client() as c:
        while left:
            n = min(chunk, left)
            r = c.get("/api/random", params={"bytes": n, "encoding": "binary"}, headers=gw.auth)
            assert r.status_code == 200, r.text  # the pool only grew since the look
            parts.append(r.content)
            left -= n
    return b"".join(parts)


@pytest.fixture
def appliance() -> Iterator[Running]:
    with start_appliance() as a:
        yield a


def test_entropy_flows_and_every_pushed_byte_is_accounted_for(appliance: Running) -> None:
    """served + pooled + dropped at the gateway == bytes the collector says it delivered."""
    with start_gateway({"QRNG_BUFFER_SIZE": "250000"}) as gw:
        with start_collector(_collector_env(gw, appliance)) as collector:
            eventually(lambda: gw.status()["buffer_bytes_available"] > 4096, what="first bytes")
            served = len(_take_what_is_held(gw))
            # Keep fetching until the small pool has overflowed at least once.
            eventually(lambda: gw.status()["bytes_dropped"] > 0 or None, 30, "pool overflow")
            served += len(_take_what_is_held(gw))
            collector.proc.send_signal(signal.SIGTERM)
            assert collector.proc.wait(timeout=20) == 0
            stopped = collector.log_events("collector_stopped")
        assert stopped, collector.stderr()
        delivered = stopped[0]["pushed_bytes"]["gateway"]
        status = gw.status()
        assert status["total_bytes_served"] == served
        accounted = served + status["buffer_bytes_available"] + status["bytes_dropped"]
        assert accounted + status["bytes_evicted"] == delivered
        assert status["rejected_packets"]["replay"] == 0


def test_two_gateways_fed_by_one_collector_never_share_a_block(appliance: Running) -> None:
    """Split fan-out: no 16-byte block is served by both gateways."""
    hmac_hex = secrets.token_hex(32)
    common = {"QRNG_HMAC_SECRET_KEY": hmac_hex}
    with (
        start_gateway({**common, "QRNG_GATEWAY_ID": "g0"}) as g0,
        start_gateway({**common, "QRNG_GATEWAY_ID": "g1"}) as g1,
    ):
        env = _collector_env(g0, appliance)
        env["QRNG_GATEWAY_PUSH_URL"] = f"g0={g0.url}/push,g1={g1.url}/push"
        with start_collector(env):
            for gw in (g0, g1):
                eventually(functools.partial(_holds_more_than, gw, 32768))
        outputs = [_drain(g0), _drain(g1)]
    blocks = [{out[i : i + 16] for i in range(0, len(out) - 15, 16)} for out in outputs]
    assert len(blocks[0]) > 1000
    assert len(blocks[1]) > 1000
    assert not blocks[0] & blocks[1]


def test_restarts_on_either_side_recover_by_themselves(appliance: Running) -> None:
    """A new collector is accepted at once; a restarted gateway is refilled by the collector."""
    with start_gateway() as gw:
        env = _collector_env(gw, appliance)
        with start_collector(env):
            eventually(lambda: _accepted(gw) > 3, what="first collector accepted")
        before = _accepted(gw)
        with start_collector(env):
            eventually(lambda: _accepted(gw) > before + 3, what="restarted collector accepted")
        status = gw.status()
        assert status["rejected_packets"]["replay"] == 0
        assert status["sources"]["collector"]["restarts"] == 1
        port, hmac_hex, api_key = gw.port, gw.hmac_hex, gw.api_key
    overrides = {"QRNG_PORT": str(port), "QRNG_HMAC_SECRET_KEY": hmac_hex, "QRNG_API_KEYS": api_key}
    with start_gateway(overrides) as gw:
        with start_collector(env):
            eventually(lambda: _accepted(gw) > 2, what="collector before the gateway restart")
            gw.proc.send_signal(signal.SIGTERM)
            gw.proc.wait(timeout=20)
            with start_gateway(overrides) as gw2:
                eventually(lambda: _accepted(gw2) > 2, 30, "collector refilled the new gateway")


def test_one_failing_appliance_of_two_keeps_the_flow_and_shows_in_status() -> None:
    """Errors on one appliance: flow goes on, status names it; all failing pauses, then recovers."""
    with start_appliance() as a, start_appliance() as b, start_gateway() as gw:
        with start_collector(_collector_env(gw, a, b)):
            eventually(lambda: _accepted(gw) > 2, what="flow")
            set_faults(b, error_rate=1.0)
            name_b = b.url.removeprefix("http://")

            def errors_shown() -> bool:
                telemetry = gw.status()["sources"]["collector"].get("telemetry", {})
                return bool(telemetry.get("fetch_errors", {}).get(name_b, 0) > 0)

            eventually(errors_shown, what="fetch errors in status")
            filled = gw.status()["buffer_bytes_available"]
            eventually(lambda: gw.status()["buffer_bytes_available"] > filled + 32768)
            set_faults(a, error_rate=1.0)

            def paused() -> bool:
                telemetry = gw.status()["sources"]["collector"].get("telemetry", {})
                return bool(telemetry.get("output_paused"))

            eventually(paused, what="output paused with every appliance failing")
            set_faults(a, error_rate=0.0)
            set_faults(b, error_rate=0.0)
            eventually(lambda: not paused(), 30, "flow resumed")


def test_a_stuck_appliance_is_quarantined_and_its_bytes_never_served(appliance: Running) -> None:
    """Switched to stuck output mid-run: quarantined, shown, and no stuck byte reaches clients."""
    with start_gateway() as gw:
        with start_collector(_collector_env(gw, appliance)):
            eventually(lambda: gw.status()["buffer_bytes_available"] > 16384, what="flow")
            set_faults(appliance, stuck=True)

            def quarantined() -> bool:
                return "quarantined" in str(gw.status()["warnings"])

            eventually(quarantined, what="quarantine in status")
            with gw.client() as c:
                metrics = c.get("/metrics").text
            assert re.search(
                r'qrng_source_health\{appliance="[^"]+",source="collector"\} 0\.0', metrics
            )
            served = _drain(gw)
            set_faults(appliance, stuck=False)
            eventually(lambda: not quarantined(), 40, "flow resumed after the cool-down")
    assert len(served) > 16384
    assert b"\xa5" * 8 not in served


def test_the_collector_has_no_listening_socket(appliance: Running) -> None:
    """psutil lists the collector's sockets: none listens, none is UDP."""
    with start_gateway() as gw, start_collector(_collector_env(gw, appliance)) as collector:
        eventually(lambda: _accepted(gw) > 2, what="flow")
        for _ in range(5):
            conns = psutil.Process(collector.proc.pid).net_connections(kind="inet")
            assert conns, "the collector should hold client connections"
            assert all(c.status != psutil.CONN_LISTEN for c in conns)
            assert all(c.raddr for c in conns)  # every socket is connected somewhere


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"QRNG_APPLIANCE_URLS": ""}, "QRNG_APPLIANCE_URLS"),
        ({"QRNG_GATEWAY_PUSH_URL": "gateway:7764/push"}, "QRNG_GATEWAY_PUSH_URL"),
        ({"QRNG_GATEWAY_PUSH_URL": "a=http://h/push,a=udp://h:1"}, "appears twice"),
    ],
)
def test_bad_collector_configuration_is_one_line(override: dict[str, str], needle: str) -> None:
    """No appliance, a malformed push URL, duplicate ids: one line, non-zero exit."""
    env = clean_environ(
        {
            "QRNG_HMAC_SECRET_KEY": "ab" * 32,
            "QRNG_APPLIANCE_URLS": "http://127.0.0.1:1",
            "QRNG_GATEWAY_PUSH_URL": "http://127.0.0.1:2/push",
            **override,
        }
    )
    result = subprocess.run(cli("collector"), env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_the_demo_prints_a_curl_line_that_returns_random_hex() -> None:
    """`qrng-dd demo` then its printed curl line gives 64 hex characters; Ctrl-C exits 0."""
    port = free_port()
    with run_process(cli("demo", "--port", str(port)), clean_environ({})) as demo:
        line = eventually(
            lambda: next(
                (ln.strip() for ln in demo.stdout().splitlines() if "bytes=32" in ln), None
            ),
            60,
            "the demo's curl lines",
        )
        out = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
        assert re.fullmatch(r"[0-9a-f]{64}", out.stdout.strip()), out.stdout
        assert "/mcp" in demo.stdout()
        assert "api_key=" not in demo.stdout()  # keys go in headers, never in printed URLs
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=30) == 0
