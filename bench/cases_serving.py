"""Cases that measure the gateway serving requests: the ceiling, small requests, latency, bulk,
the access log's cost, the granian what-if, and the gateway's memory."""

from __future__ import annotations

import os
import time
from typing import Any

from tests.support.gateway import RunningGateway, process_tree, stop

from bench.harness import Bench
from bench.plan import BULK_BYTES, BULK_PATH, MB, MIB, SEED, SMALL_PATHS
from bench.report import Row, fmt, verdict

__all__ = [
    "case_accesslog",
    "case_ceiling",
    "case_granian_gateway",
    "case_rss",
    "case_small_and_latency",
    "small_row",
]


def case_ceiling(b: Bench) -> None:
    for server in ("granian", "uvicorn"):
        bare = b.bare(server)
        result = b.run_wrk(f"{bare.url}/", b.plan.wrk_seconds)
        b.report.ceiling[server] = result["rps"]
        b.report.details[f"ceiling_{server}"] = result
        b.report.add(Row(f"ceiling: bare ASGI on {server}", "req/s", result["rps"], "req/s",
                         errors=result["errors"], x_ceiling=None,
                         note="wrk -t1 -c32"))  # fmt: skip
        if server == "granian" and "latency" in b.report.details.get("_cases", []):
            lat = b.open_loop(bare.url, "/")
            b.report.details["ceiling_granian_latency"] = lat
            b.report.add(Row("ceiling: bare ASGI on granian @1000 req/s", "P99", lat["p99_ms"],
                             "ms", errors=lat["errors"],
                             note=f"P50 {fmt(lat['p50_ms'])} ms; generator floor"))  # fmt: skip
        stop(bare.proc)


def small_row(b: Bench, case: str, result: dict[str, Any], note: str = "") -> None:
    """A small-request row: req/s, its share of the ceiling and its speed-up over the seed."""
    best = b.report.best_ceiling
    share = result["rps"] / best if best else None
    ok = None if share is None else (share >= 0.5 and result["errors"] == 0)
    b.report.add(Row(case, "req/s", result["rps"], "req/s", ">= 50% of ceiling, 0 errors",
                     verdict(ok), share, result["rps"] / SEED["req_s"], result["errors"],
                     note))  # fmt: skip


def _wrk(b: Bench, gateway: RunningGateway, path: str, seconds: int, *, refill: bool) -> Any:
    """wrk against ``path`` with the gateway's key; the pool topped up after the warm-up."""
    between = (lambda: b.fill(gateway)) if refill else None
    return b.run_wrk(f"{gateway.url}{path}", seconds, api_key=gateway.api_key, between=between)


def case_small_and_latency(b: Bench, cases: set[str]) -> None:
    gateway = b.gateway(buffer_bytes=b.plan.main_pool_bytes)
    b.fill(gateway)
    if "small" in cases:
        for path in SMALL_PATHS:
            b.fill(gateway)
            result = _wrk(b, gateway, path, b.plan.wrk_seconds, refill=True)
            b.report.details[f"small {path}"] = result
            small_row(b, f"small {path}", result, "access log off")
    if "latency" in cases:
        for path in SMALL_PATHS:
            b.fill(gateway)
            lat = b.open_loop(gateway.url, path, api_key=gateway.api_key)
            b.report.details[f"latency {path}"] = lat
            p99 = lat["p99_ms"]
            ok = p99 is not None and p99 <= 2.0 and lat["errors"] == 0
            b.report.add(Row(f"latency {path} @1000 req/s", "P99", p99, "ms", "<= 2 ms",
                             verdict(ok), None, SEED["p99_ms"] / p99 if p99 else None,
                             lat["errors"],
                             f"P50 {fmt(lat['p50_ms'])} ({fmt(SEED['p50_ms'] / lat['p50_ms'])}x"
                             f" seed), P95 {fmt(lat['p95_ms'])}, max {fmt(lat['max_ms'])}"
                             ))  # fmt: skip
    if "bulk" in cases:
        served = 0
        total_seconds = 0.0
        errors = 0
        for _ in range(b.plan.bulk_slices):
            b.fill(gateway)
            # The warm-up drains the pool too: top it up again before the timed slice.
            result = _wrk(b, gateway, BULK_PATH, b.plan.bulk_seconds, refill=True)
            served += result["requests"] - result["errors"]
            total_seconds += result["seconds"]
            errors += result["errors"]
        # Only answers that carried bytes count; a 503 (pool ran dry) is an error, and makes
        # the rate a lower bound: the slice outlasted the pool.
        mb_s = served * BULK_BYTES / total_seconds / MB
        b.report.details["bulk"] = {
            "served": served, "seconds": total_seconds, "errors": errors, "mb_s": mb_s,
        }  # fmt: skip
        dry = f"; pool ran dry: {errors:,} answers 503" if errors else ""
        pool = f"{b.plan.main_pool_bytes // MIB} MiB pool refilled before each"
        slices = f"{b.plan.bulk_slices} x {b.plan.bulk_seconds} s"
        b.report.add(Row("bulk /api/random?bytes=65536&encoding=binary", "MB/s", mb_s, "MB/s",
                         ">= 1000 MB/s", verdict(mb_s >= 1000 and errors == 0), errors=errors,
                         note=f"{slices}, {pool}{dry}"))  # fmt: skip
    stop(gateway.proc)


def case_accesslog(b: Bench) -> None:
    """Every small route with the access log off and on at its default (level info, JSON)."""
    rps: dict[bool, dict[str, float]] = {}
    for on in (False, True):
        gateway = b.gateway(buffer_bytes=256 * MIB, access_log=on,
                            log_level="info" if on else "warning")  # fmt: skip
        b.fill(gateway)
        state = "on (level info)" if on else "off"
        rps[on] = {}
        for path in SMALL_PATHS:
            result = _wrk(b, gateway, path, b.plan.wrk_seconds, refill=False)
            rps[on][path] = result["rps"]
            b.report.details[f"accesslog_{on} {path}"] = result
            small_row(b, f"access log {state}: {path}", result)
        assert gateway.stderr_file is not None  # start_gateway always captures it
        log_bytes = os.fstat(gateway.stderr_file.fileno()).st_size
        b.report.details[f"accesslog_{on}"] = {"log_bytes": log_bytes}
        stop(gateway.proc)
    slowdowns = [1 - rps[True][path] / rps[False][path] for path in SMALL_PATHS]
    b.report.add(Row("access log cost", "slowdown", 100 * max(slowdowns), "%",
                     note="worst 1 - on/off of the small routes; log written "
                     f"{b.report.details['accesslog_True']['log_bytes'] / MB:.1f} MB"))  # fmt: skip


def case_granian_gateway(b: Bench) -> None:
    gateway = b.gateway(buffer_bytes=256 * MIB, server="granian")
    b.fill(gateway)
    result = _wrk(b, gateway, SMALL_PATHS[0], b.plan.wrk_seconds, refill=False)
    b.report.details["whatif_granian"] = result
    best = b.report.best_ceiling
    b.report.add(Row(f"what-if: gateway app on granian {SMALL_PATHS[0]}", "req/s", result["rps"],
                     "req/s", x_ceiling=result["rps"] / best if best else None,
                     x_seed=result["rps"] / SEED["req_s"], errors=result["errors"],
                     note="informational: the granian command line, bench.apps:gateway_app"
                     ))  # fmt: skip
    stop(gateway.proc)


def _tree_pss(pid: int) -> int:
    """Memory of the gateway: the granian supervisor plus its worker (which holds the pool).

    Summed as PSS (each shared page counted once across the processes), so pages the worker
    shares with its supervisor are not counted twice.
    """
    return sum(p.memory_full_info().pss for p in process_tree(pid))


def case_rss(b: Bench) -> None:
    gateway = b.gateway(buffer_bytes=10 * MIB)
    empty = _tree_pss(gateway.proc.pid)
    b.fill(gateway, 20 * MIB)  # twice the pool, under "replace": full and evicting
    status = gateway.status()
    time.sleep(0.5)
    rss = _tree_pss(gateway.proc.pid)
    b.report.details["rss"] = {"empty": empty, "full": rss, "fill": status["buffer_fill_percent"]}
    b.report.add(Row("gateway memory (PSS, supervisor + worker), 10 MiB pool full", "PSS",
                     rss / MB, "MB", "<= 100 MB",
                     verdict(rss / MB <= 100), note=f"empty pool: {empty / MB:.1f} MB; "
                     f"fill {status['buffer_fill_percent']:.0f}%"))  # fmt: skip
    stop(gateway.proc)
