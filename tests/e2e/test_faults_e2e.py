"""P5 end to end: no byte a faulty appliance serves reaches the pool (the fault matrix).

Each case runs real processes: appliance simulators, one gateway and three collectors side by
side, so one fault is seen three ways at once:

* ``alone``: the faulty appliance is the collector's only source (``QRNG_MIN_SOURCES=1``);
* ``pair-1``: a healthy appliance beside it, ``QRNG_MIN_SOURCES=1`` (output goes on);
* ``pair-2``: the same pair, ``QRNG_MIN_SOURCES=2`` (output stops).

The proof is in counters kept by two parties that do not trust each other: the simulator
counts the bytes it served while healthy (``GET /sim/stats``), the gateway counts the bytes it
pooled per collector (``qrng_bytes_received_total``) and the collector reports, per appliance,
the bytes that went into its output (``mixed_bytes`` in its telemetry). A faulty appliance
that never served a healthy byte must have contributed zero bytes, and its collector in
``alone`` and ``pair-2`` must have pooled zero bytes at the gateway. For the mid-run switch,
what was pooled can never exceed what was served before the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.diode import Running, eventually, set_faults, start_appliance, start_collector
from tests.support.gateway import RunningGateway, start_gateway

pytestmark = pytest.mark.e2e

FETCH = 4096
SETUPS = {"alone": "1", "pair-1": "1", "pair-2": "2"}


def _name(appliance: Running) -> str:
    """The appliance's name in the collector's telemetry (host:port)."""
    return appliance.url.removeprefix("http://")


def _sim_stats(appliance: Running) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{appliance.url}/sim/stats", timeout=5).json()
    return stats


def _received(gw: RunningGateway) -> dict[str, float]:
    """Bytes pooled per collector, from the gateway's own metrics."""
    with gw.client() as client:
        text = client.get("/metrics").text
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "qrng_bytes_received"
        for sample in family.samples
        if sample.name == "qrng_bytes_received_total"
    }


def _telemetry(gw: RunningGateway, collector_id: str) -> dict[str, Any]:
    entry = gw.status()["sources"].get(collector_id, {})
    telemetry: dict[str, Any] = entry.get("telemetry", {})
    return telemetry


@contextlib.contextmanager
def _matrix(*faulty_flags: str) -> Iterator[tuple[RunningGateway, list[Running], Running]]:
    """A gateway, a healthy appliance, one faulty appliance per setup, three collectors."""
    with contextlib.ExitStack() as stack:
        gw = stack.enter_context(start_gateway())
        healthy = stack.enter_context(start_appliance())
        faulty = [stack.enter_context(start_appliance(*faulty_flags)) for _ in SETUPS]
        for (setup, min_sources), bad in zip(SETUPS.items(), faulty, strict=True):
            sources = [bad] if setup == "alone" else [healthy, bad]
            stack.enter_context(
                start_collector(
                    {
                        "QRNG_COLLECTOR_ID": setup,
                        "QRNG_HMAC_SECRET_KEY": gw.hmac_hex,
                        "QRNG_APPLIANCE_URLS": ",".join(a.url for a in sources),
                        "QRNG_GATEWAY_PUSH_URL": f"{gw.url}/push",
                        "QRNG_MIN_SOURCES": min_sources,
                        "QRNG_FETCH_INTERVAL_MS": "20",
                        "QRNG_FETCH_SIZE": str(FETCH),
                        "QRNG_TELEMETRY_INTERVAL_S": "0.2",
                    }
                )
            )
        yield gw, faulty, healthy


def _caught(gw: RunningGateway, faulty: list[Running], rounds_after: int = 8) -> None:
    """Wait until every collector quarantined its faulty appliance and fetched on after it."""
    for setup, bad in zip(SETUPS, faulty, strict=True):

        def quarantined(setup: str = setup, bad: Running = bad) -> bool:
            t = _telemetry(gw, setup)
            return bool(t.get("health_failures", {}).get(_name(bad), 0) >= 1)

        eventually(quarantined, 30, f"{setup}: faulty appliance quarantined")
    # Then some more rounds, so a leak after the quarantine would have had its chance.
    start = _telemetry(gw, "pair-1")["fetched_bytes"]
    healthy_name = next(n for n in start if n not in {_name(b) for b in faulty})
    eventually(
        lambda: (
            _telemetry(gw, "pair-1")["fetched_bytes"][healthy_name]
            >= start[healthy_name] + rounds_after * FETCH
        ),
        30,
        "more rounds after the quarantine",
    )


def _assert_nothing_pooled_beyond_healthy(gw: RunningGateway, faulty: list[Running]) -> None:
    """Pooled and mixed bytes first, then the simulators' healthy counts: pooled(t1) <=
    healthy(t1) <= healthy(t2), so the order of reading cannot make the check pass wrongly."""
    received = _received(gw)
    mixed = {setup: _telemetry(gw, setup)["mixed_bytes"] for setup in SETUPS}
    healthy = [_sim_stats(bad)["healthy_bytes"] for bad in faulty]
    for (setup, bad), clean in zip(zip(SETUPS, faulty, strict=True), healthy, strict=True):
        assert mixed[setup][_name(bad)] <= clean, (setup, mixed[setup], clean)
    assert received.get("alone", 0.0) <= healthy[0]
    assert received.get("pair-2", 0.0) <= min(healthy[2], mixed["pair-2"][_name(faulty[2])])
    assert received.get("pair-1", 0.0) > 0  # the healthy appliance kept the flow going


@pytest.mark.parametrize(
    "flags",
    [["--stuck"], ["--bias", "0.1"], ["--bias", "0.2"], ["--bias", "0.3"], ["--bias", "0.5"]],
    ids=["stuck", "bias-0.1", "bias-0.2", "bias-0.3", "bias-0.5"],
)
def test_a_source_faulty_from_the_start_pools_zero_bytes(flags: list[str]) -> None:
    """Stuck or biased from its first byte: not one byte of it in any collector's output,
    nothing pooled without a healthy partner, the healthy partner's flow intact."""
    with _matrix(*flags) as (gw, faulty, _):
        _caught(gw, faulty)
        assert [_sim_stats(bad)["healthy_bytes"] for bad in faulty] == [0, 0, 0]
        _assert_nothing_pooled_beyond_healthy(gw, faulty)
        assert _received(gw).get("alone", 0.0) == 0
        assert _received(gw).get("pair-2", 0.0) == 0


def test_a_source_replaying_its_own_output_pools_nothing_it_replayed() -> None:
    """--repeat 1: after its first draw every draw is old output; the repeat test catches the
    second draw, and the first (held back) goes with it."""
    with _matrix("--repeat", "1") as (gw, faulty, _):
        _caught(gw, faulty)
        for bad in faulty:
            stats = _sim_stats(bad)
            assert stats["repeated_bytes"] > 0
        mixed = {setup: _telemetry(gw, setup)["mixed_bytes"] for setup in SETUPS}
        assert [mixed[s][_name(b)] for s, b in zip(SETUPS, faulty, strict=True)] == [0, 0, 0]
        assert _received(gw).get("alone", 0.0) == 0
        assert _received(gw).get("pair-2", 0.0) == 0


def test_a_source_turning_biased_mid_run_pools_nothing_served_after_the_switch() -> None:
    """Healthy, flowing, then bias 0.3: pooled bytes never exceed the healthy bytes served
    before the switch, in every setup."""
    with _matrix() as (gw, faulty, _):
        for setup, bad in zip(SETUPS, faulty, strict=True):

            def flowing(setup: str = setup, bad: Running = bad) -> bool:
                mixed = _telemetry(gw, setup).get("mixed_bytes", {})
                return bool(mixed.get(_name(bad), 0) > 4 * FETCH)

            eventually(flowing, 30, f"{setup}: flow before the switch")
        for bad in faulty:
            set_faults(bad, bias=0.3)
        _caught(gw, faulty)
        assert all(_sim_stats(bad)["faulty_bytes"] > 0 for bad in faulty)
        _assert_nothing_pooled_beyond_healthy(gw, faulty)
