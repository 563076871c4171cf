"""Cases that measure entropy coming in: HTTP ingest, end to end from the simulator, and UDP."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.diode import start_appliance, start_collector
from tests.support.gateway import RunningGateway, free_udp_port, metric_total, scrape, stop

from bench.harness import Bench, parse_wrk
from bench.plan import KIB, MB, MIB, UDP_JUMBO_PAYLOAD, UDP_PAYLOAD
from bench.report import Row, verdict
from bench.workers import in_process, ingest_worker, make_packets, udp_worker

__all__ = ["case_e2e", "case_ingest", "case_udp"]

_PUSH_LUA = Path(__file__).with_name("push.lua")
#: How long the first bytes may take to travel simulator -> collector -> gateway.
_E2E_START_DEADLINE_S = 30.0


def case_ingest(b: Bench) -> None:
    plan = b.plan
    gateway = b.gateway(buffer_bytes=64 * MIB)
    conns = plan.ingest_connections
    per_conn_big = max(20, plan.ingest_budget_bytes // (64 * KIB) // conns)
    big = in_process(ingest_worker, gateway.port, gateway.hmac_hex, 64 * KIB, per_conn_big,
                     conns, plan.ingest_seconds, timeout=600)  # fmt: skip
    b.report.details["ingest_64k"] = big
    mb_s = big["bytes_per_s"] / MB
    b.report.add(Row("ingest POST /push, 64 KiB packets", "MB/s", mb_s, "MB/s", ">= 300 MB/s",
                     verdict(mb_s >= 300 and big["errors"] == 0), errors=big["errors"],
                     note=f"{big['packets_per_s']:,.0f} packets/s, {conns} connections, "
                     f"verified+decrypted, Python client"))  # fmt: skip
    small = _ingest_wrk(b, gateway, KIB, conns)
    b.report.details["ingest_1k"] = small
    pps = small["packets_per_s"]
    b.report.add(Row("ingest POST /push, 1 KiB packets", "packets/s", pps, "packets/s",
                     ">= 15,000 packets/s", verdict(pps >= 15_000 and small["errors"] == 0),
                     errors=small["errors"],
                     note=f"{small['packets_per_s'] * KIB / MB:.1f} MB/s, wrk -t{conns} "
                     f"-c{conns} -s bench/push.lua"))  # fmt: skip
    stop(gateway.proc)


#: Packets pre-built per wrk thread for each second of the run: above any rate one
#: connection reaches here, so a run never runs out (it would show as 409 errors).
_WRK_PACKETS_PER_CONN_S = 6000


def _ingest_wrk(b: Bench, gateway: RunningGateway, size: int, conns: int) -> dict[str, Any]:
    """POST pre-built ``size``-byte packets with wrk, one source per thread and connection.

    A Python client spends more per request than the gateway does on a 1 KiB packet; wrk
    (the tool of the ceiling rows) does not.
    """
    if b.wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    seconds = max(1, round(b.plan.ingest_seconds))
    per_conn = _WRK_PACKETS_PER_CONN_S * (seconds + 1)
    tag = f"wrk-{time.monotonic_ns() % 10**9}"
    with tempfile.TemporaryDirectory() as folder:
        for c in range(conns):
            packets = make_packets(gateway.hmac_hex, f"ingest-{tag}-{c}", per_conn, size)
            with open(f"{folder}/{c}.bin", "wb") as out:
                for raw in packets:
                    out.write(len(raw).to_bytes(4, "big") + raw)
        argv = [b.wrk, f"-t{conns}", f"-c{conns}", f"-d{seconds}s", "-s", str(_PUSH_LUA),
                f"{gateway.url}/push", "--", folder]  # fmt: skip
        done = subprocess.run(  # noqa: S603 - our own argv
            argv, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    result = parse_wrk(done.stdout)
    ok = result["requests"] - result["errors"]
    return {**result, "size": size, "packets": ok, "packets_per_s": ok / result["seconds"]}


def case_e2e(b: Bench) -> None:
    plan = b.plan
    gateway = b.gateway(buffer_bytes=256 * MIB)
    urls = [b.stack.enter_context(start_appliance()).url for _ in range(plan.e2e_appliances)]
    collector = b.stack.enter_context(
        start_collector(
            {
                "QRNG_HMAC_SECRET_KEY": gateway.hmac_hex,
                "QRNG_COLLECTOR_ID": "bench-collector",
                "QRNG_APPLIANCE_URLS": ",".join(urls),
                "QRNG_GATEWAY_PUSH_URL": f"{gateway.url}/push",
                "QRNG_FETCH_SIZE": "1048576",
                "QRNG_FETCH_INTERVAL_MS": "1",
                "QRNG_COLLECTOR_BUFFER_SIZE": str(64 * MIB),
                "QRNG_LOG_LEVEL": "warning",
            }
        )
    )

    def received() -> float:
        return metric_total(scrape(gateway.url), "qrng_bytes_received_total")

    warm_deadline = time.monotonic() + _E2E_START_DEADLINE_S
    while received() == 0:
        if collector.proc.poll() is not None or time.monotonic() > warm_deadline:
            raise RuntimeError(f"no bytes reached the gateway: {collector.stderr()[-600:]}")
        time.sleep(0.2)
    time.sleep(2.0)  # warm-up: health start-up, connections, first fetches
    t1, b1 = time.perf_counter(), received()
    time.sleep(plan.e2e_seconds)
    t2, b2 = time.perf_counter(), received()
    mb_s = (b2 - b1) / (t2 - t1) / MB
    b.report.details["e2e"] = {"bytes": b2 - b1, "seconds": t2 - t1, "appliances": len(urls)}
    b.report.add(Row("end to end: simulator -> collector -> gateway (HTTP)", "MB/s", mb_s, "MB/s",
                     ">= 60 MB/s", verdict(mb_s >= 60), note=f"{len(urls)} appliance(s), "
                     f"fetch 1 MiB every 1 ms, xor, encrypted"))  # fmt: skip
    stop(collector.proc)
    stop(gateway.proc)


def case_udp(b: Bench) -> None:
    plan = b.plan
    udp_port = free_udp_port()
    gateway = b.gateway(buffer_bytes=256 * MIB, udp_port=udp_port)
    for payload, rates, target in (
        (UDP_PAYLOAD, plan.udp_rates_mb_s, None),
        (UDP_JUMBO_PAYLOAD, plan.udp_jumbo_rates_mb_s, 100.0),
    ):
        best = None
        for rate in rates:
            delivered, loss = _udp_rate(b, gateway, udp_port, payload, rate)
            if loss < 0.1:
                best = max(best or 0.0, delivered)
        frame = "1500-byte MTU" if payload == UDP_PAYLOAD else "9000-byte jumbo frames"
        b.report.add(Row(f"UDP ingest, {payload}-byte payloads: best rate with < 0.1% loss",
                         "MB/s", best, "MB/s",
                         f">= {target:g} MB/s, < 0.1% loss" if target else "",
                         verdict(best is not None and best >= target) if target else "",
                         note=f"{frame}, paced Python sender"))  # fmt: skip
    stop(gateway.proc)


def _udp_rate(
    b: Bench, gateway: RunningGateway, udp_port: int, payload: int, rate: float
) -> tuple[float, float]:
    """Offer ``rate`` MB/s for the plan's seconds; return (delivered MB/s, loss %)."""
    source = f"udp-{payload}-{int(rate)}-{time.monotonic_ns() % 10**9}"
    before = scrape(gateway.url)
    sent = in_process(udp_worker, udp_port, gateway.hmac_hex, source, rate, b.plan.udp_seconds,
                      payload, timeout=600)  # fmt: skip
    # The kernel buffer may still hold datagrams: wait until the count stops moving.
    accepted, last_change, previous = 0.0, time.perf_counter(), -1.0
    while time.perf_counter() - last_change < 0.3:
        after = scrape(gateway.url)
        accepted = metric_total(after, "qrng_packets_accepted_total", source=source)
        if accepted != previous:
            previous, last_change = accepted, time.perf_counter()
        time.sleep(0.05)
    gaps = metric_total(after, "qrng_sequence_gaps_total", source=source)
    rejected = metric_total(after, "qrng_packets_rejected_total") - metric_total(
        before, "qrng_packets_rejected_total"
    )
    loss = 100.0 * (sent["sent"] - accepted) / sent["sent"]
    gap_loss = 100.0 * gaps / sent["sent"]
    delivered = accepted * payload / sent["seconds"] / MB
    b.report.details[f"udp_{payload}_{rate}"] = {**sent, "accepted": accepted, "gaps": gaps,
                                                 "rejected": rejected, "loss_pct": loss,
                                                 "gap_loss_pct": gap_loss}  # fmt: skip
    b.report.add(Row(f"UDP ingest, {payload}-byte payloads, offered {rate:g} MB/s", "delivered",
                     delivered, "MB/s", note=f"offered {sent['offered_mb_s']:.1f} MB/s, loss "
                     f"{loss:.3f}% (gaps {gap_loss:.3f}%), rejected {rejected:g}"))  # fmt: skip
    return delivered, loss
