"""P3 across crashes and the link's health, with real processes on loopback.

- A gateway killed with SIGKILL and restarted on the same ``QRNG_STATE_DIR`` refuses every
  packet the first instance accepted (as a replay: the memory, not the clock, refuses it)
  and no 16-byte block is served twice across the two lives.
- Without a state dir, a restarted gateway refuses the replays too, for a collector whose
  clock runs 30 s ahead and one 30 s behind (the quiet start).
- Heartbeats keep the link up while the pool sits full under ``discard``; a stopped collector
  turns ``/health`` degraded.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import psutil
import pytest

from qrng_dd.gateway.state import STATE_FILE
from tests.support.diode import eventually, start_appliance, start_collector
from tests.support.gateway import RunningGateway, make_raw, start_gateway

pytestmark = pytest.mark.e2e

BLOCK = 16


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the gateway and its worker, as a crash or an OOM kill of the container would."""
    root = psutil.Process(proc.pid)
    family = [*root.children(recursive=True), root]
    for process in family:
        process.kill()
    psutil.wait_procs(family, timeout=10)
    proc.wait()


def _push(gw: RunningGateway, raw: bytes) -> httpx.Response:
    with gw.client() as client:
        return client.post("/push", content=raw)


def _draw(gw: RunningGateway, total: int) -> bytes:
    """``total`` bytes from the pool, in binary draws of at most 65,536."""
    out = bytearray()
    with gw.client() as client:
        while len(out) < total:
            n = min(65_536, total - len(out))
            response = client.get(
                "/api/random", params={"bytes": n, "encoding": "binary"}, headers=gw.auth
            )
            assert response.status_code == 200, response.text
            out += response.content
    return bytes(out)


def _blocks(data: bytes) -> list[bytes]:
    return [data[i : i + BLOCK] for i in range(0, len(data) - BLOCK + 1, BLOCK)]


def _no_block_twice(*draws: bytes) -> None:
    blocks = [b for d in draws for b in _blocks(d)]
    assert len(blocks) == len(set(blocks)), "a 16-byte block was served twice"


def _status_codes(gw: RunningGateway, packets: Iterable[bytes]) -> list[int]:
    with gw.client() as client:
        return [client.post("/push", content=raw).status_code for raw in packets]


def test_a_killed_gateway_restarted_on_its_state_dir_refuses_every_replay(tmp_path: Path) -> None:
    """SIGKILL mid-life; the next life refuses all 20 accepted packets as replays."""
    state = tmp_path / "state"
    env = {"QRNG_STATE_DIR": str(state)}
    with start_gateway(env) as first:
        packets = [make_raw(first.key, os.urandom(4096)) for _ in range(20)]
        assert _status_codes(first, packets) == [200] * 20
        served_first = _draw(first, 10 * 4096)
        _kill_tree(first.proc)
        hmac_hex, api_key = first.hmac_hex, first.api_key
    assert json.loads((state / STATE_FILE).read_text())["sources"]["collector"]["seq"] > 0
    # A skew of 60 s would let every one of these in on time alone: only the memory refuses.
    again = {
        **env,
        "QRNG_HMAC_SECRET_KEY": hmac_hex,
        "QRNG_API_KEYS": api_key,
        "QRNG_MAX_CLOCK_SKEW_S": "60",
    }
    with start_gateway(again) as second:
        assert _status_codes(second, packets) == [409] * 20
        status = second.status()
        assert status["rejected_packets"]["replay"] == 20
        assert status["buffer_bytes_available"] == 0
        assert status["state"]["remembers_previous_run"] is True
        fresh = make_raw(second.key, os.urandom(4096))
        assert _push(second, fresh).status_code == 200  # no quiet start with a memory
        served_second = _draw(second, 4096)
    _no_block_twice(served_first, served_second)


@pytest.mark.parametrize("offset_s", [30.0, -30.0], ids=["collector-ahead", "collector-behind"])
def test_without_a_state_dir_a_restart_refuses_replays_whatever_the_collector_clock(
    tmp_path: Path, offset_s: float
) -> None:
    """A collector clock 30 s off, skew 60 s, no state dir in the second life: all refused."""
    state = tmp_path / "state"
    state.mkdir()
    # The first life remembers an (empty) earlier run, so it takes the offset packets at once.
    (state / STATE_FILE).write_text('{"format": 1, "gateway_id": "gateway", "sources": {}}')
    skew = {"QRNG_MAX_CLOCK_SKEW_S": "60"}
    with start_gateway({**skew, "QRNG_STATE_DIR": str(state)}) as first:
        packets = [
            make_raw(
                first.key,
                os.urandom(4096),
                source="offset",
                ts_us=int((time.time() + offset_s) * 1_000_000),
            )
            for _ in range(10)
        ]
        assert _status_codes(first, packets) == [200] * 10
        served_first = _draw(first, 4 * 4096)
        _kill_tree(first.proc)
        keys = {"QRNG_HMAC_SECRET_KEY": first.hmac_hex, "QRNG_API_KEYS": first.api_key}
    with start_gateway({**skew, **keys}) as second:
        codes = _status_codes(second, packets)
        status = second.status()
        health = httpx.get(f"{second.url}/health").json()
        log = second.stderr()
    assert codes == [400] * 10
    assert status["rejected_packets"]["stale"] == 10
    assert status["buffer_bytes_available"] == 0
    assert status["state"]["remembers_previous_run"] is False
    warnings = " ".join(health["warnings"])
    assert "no QRNG_STATE_DIR" in warnings
    assert "quiet start" in warnings
    assert '"quiet_start"' in log  # and in the start-up log
    _no_block_twice(served_first)


def test_heartbeats_keep_the_link_up_under_a_full_pool_and_a_silent_link_is_degraded() -> None:
    """Full under discard for over three intervals: link up; collector stopped: degraded."""
    interval = {"QRNG_TELEMETRY_INTERVAL_S": "1"}
    gateway_env = {
        **interval,
        "QRNG_BUFFER_SIZE": "65536",
        "QRNG_BUFFER_OVERFLOW_POLICY": "discard",
    }
    with start_appliance() as appliance, start_gateway(gateway_env) as gw:
        collector_env = {
            **interval,
            "QRNG_HMAC_SECRET_KEY": gw.hmac_hex,
            "QRNG_APPLIANCE_URLS": appliance.url,
            "QRNG_GATEWAY_PUSH_URL": f"{gw.url}/push",
            "QRNG_FETCH_INTERVAL_MS": "20",
        }
        with start_collector(collector_env) as collector:
            # Full, and full for longer than three telemetry intervals: nothing leaves a full
            # pool under discard, so the oldest byte's age says how long it has been full.
            eventually(
                lambda: (
                    gw.status()["oldest_data_age_seconds"] > 4.0
                    and gw.status()["buffer_fill_percent"] == 100.0
                ),
                30,
                "pool full for four telemetry intervals",
            )
            status = gw.status()
            health = httpx.get(f"{gw.url}/health")
            metrics = httpx.get(f"{gw.url}/metrics").text
            assert status["link_up"] is True
            assert status["sources"]["collector"]["telemetry_age_seconds"] < 3.0
            assert (health.status_code, health.json()["status"]) == (200, "healthy")
            assert not any("link down" in w for w in health.json()["warnings"])
            assert "qrng_link_up 1.0" in metrics
            collector.proc.terminate()
            assert collector.proc.wait(timeout=30) == 0

        def degraded() -> dict[str, object] | None:
            body: dict[str, object] = httpx.get(f"{gw.url}/health").json()
            return body if body["status"] == "degraded" else None

        body = eventually(degraded, 20, "degraded once the collector is gone")
        assert any(str(w).startswith("link down") for w in body["warnings"])  # type: ignore[attr-defined]
        assert gw.status()["link_up"] is False
        assert "qrng_link_up 0.0" in httpx.get(f"{gw.url}/metrics").text
