"""Entropy quality for operators: the self-test endpoint and `qrng-dd test-source`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qrng_dd.collector.batchtests import BatchTest
from qrng_dd.collector.health import HealthTest
from qrng_dd.config import GatewaySettings, load
from qrng_dd.gateway.server import build_app
from qrng_dd.gateway.service import EntropyService
from tests.support.diode import cli, eventually, set_faults, start_appliance, start_collector
from tests.support.gateway import clean_environ, start_gateway

API_KEY = "quality-test-key-0001"


def _service(fill: bytes) -> EntropyService:
    settings = load(
        GatewaySettings,
        {
            "QRNG_HMAC_SECRET_KEY": "ef" * 32,
            "QRNG_API_KEYS": API_KEY,
            "QRNG_ACCESS_LOG": "0",
            "QRNG_MAX_CLOCK_SKEW_S": "0",
        },
    )
    service = EntropyService(settings)
    service.pool.add(fill)
    return service


async def _selftest(service: EntropyService, method: str = "GET", **params: int) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.request(
            method,
            "/api/test/randomness",
            params=params,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )


def _biased(n: int, p_one: float = 0.6) -> bytes:
    bits = np.random.default_rng(7).random(n * 8) < p_one
    return np.packbits(bits).tobytes()


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_selftest_passes_good_bytes(method: str) -> None:
    """OS randomness from the pool gets an overall pass, and the bytes are consumed."""
    service = _service(os.urandom(200_000))
    response = await _selftest(service, method)
    assert response.status_code == 200
    report: dict[str, Any] = response.json()
    assert report["bytes_tested"] == 125_000
    assert report["passed"] is True
    assert service.pool.available == 75_000


@pytest.mark.anyio
async def test_selftest_fails_biased_bytes_on_the_tests_that_should() -> None:
    """Bits set with p = 0.6 fail monobit and frequency; the overall verdict is fail."""
    response = await _selftest(_service(_biased(150_000)), bytes=100_000)
    report = response.json()
    failed = {t["name"] for t in report["tests"] if not t["passed"]}
    assert {"fips140_2_monobit", "sp800_22_frequency"} <= failed
    assert report["passed"] is False
    assert report["verdict"] == "fail"


@pytest.mark.anyio
@pytest.mark.parametrize(("n", "status"), [(100, 400), (0, 400), (-1, 400), (10**9, 400)])
async def test_selftest_bad_sizes_are_refused(n: int, status: int) -> None:
    """Below the 2,500-byte minimum or above the pool's capacity is a 400 problem."""
    response = await _selftest(_service(os.urandom(10_000)), bytes=n)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.anyio
async def test_selftest_short_of_entropy_takes_nothing() -> None:
    """Asking for more than the pool holds is a 503 and the pool is untouched."""
    service = _service(os.urandom(5_000))
    response = await _selftest(service, bytes=10_000)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert service.pool.available == 5_000


def _test_source(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("test-source", *args), env=clean_environ({}), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.e2e
def test_test_source_passes_the_simulator_and_fails_it_when_biased() -> None:
    """An operator's check: exit 0 on good output, 1 once the simulator is biased."""
    with start_appliance() as appliance:
        good = _test_source(appliance.url, "--bytes", "200000")
        assert good.returncode == 0, good.stdout + good.stderr
        assert "PASSES" in good.stdout
        set_faults(appliance, bias=0.2)
        bad = _test_source(appliance.url, "--bytes", "200000", "--json")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert '"passed": false' in bad.stdout


def test_test_source_reports_unreadable_sources_and_bad_arguments(tmp_path: Path) -> None:
    """A short file and a too-small --bytes exit 2 with one line."""
    short = tmp_path / "short"
    short.write_bytes(b"x" * 10)
    result = _test_source(short.as_uri(), "--bytes", "5000")
    assert result.returncode == 2
    assert "short read" in result.stderr
    assert _test_source(short.as_uri(), "--bytes", "10").returncode == 2


def test_test_source_flags_a_stuck_file_in_the_health_tests(tmp_path: Path) -> None:
    """A file of one repeated byte trips the repetition count test."""
    stuck = tmp_path / "stuck"
    stuck.write_bytes(b"\x5a" * 10_000)
    result = _test_source(stuck.as_uri(), "--bytes", "10000", "--json")
    assert result.returncode == 1
    assert '"test": "rct"' in result.stdout


@pytest.mark.e2e
def test_a_biased_appliance_is_quarantined_and_shown() -> None:
    """The simulator turned biased mid-run: the collector quarantines it; status shows it."""
    with start_appliance() as appliance, start_gateway() as gw:
        env = {
            "QRNG_HMAC_SECRET_KEY": gw.hmac_hex,
            "QRNG_APPLIANCE_URLS": appliance.url,
            "QRNG_GATEWAY_PUSH_URL": f"{gw.url}/push",
            "QRNG_FETCH_INTERVAL_MS": "20",
            "QRNG_FETCH_SIZE": "8192",
            "QRNG_TELEMETRY_INTERVAL_S": "0.5",
        }
        with start_collector(env) as collector, gw.client() as client:

            def status() -> dict[str, Any]:
                body: dict[str, Any] = client.get("/api/status", headers=gw.auth).json()
                return body

            eventually(lambda: status()["buffer_bytes_available"] > 8192, what="flow")
            set_faults(appliance, bias=0.5)
            eventually(lambda: "quarantined" in str(status()["warnings"]), what="quarantine")
            events = eventually(lambda: collector.log_events("source_quarantined"))
            # Whichever sees it first: SP 800-90B (run first) or the batch tests after them.
            known = {t.value for t in HealthTest} | {t.value for t in BatchTest}
            assert events[0]["test"] in known
