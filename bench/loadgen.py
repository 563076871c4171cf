"""The open-loop latency generator, and the HTTP/1.1 plumbing every load generator shares.

Generators run in their own process (`bench.workers.in_process`) on raw asyncio streams, on
uvloop when it is installed: an HTTP client library would cost more than the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from bench.plan import HOST

__all__ = ["close_all", "open_loop", "open_loop_worker", "read_response", "run_async"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop if installed (a faster client), else on asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
    if match:
        await reader.readexactly(int(match[1]))
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def close_all(streams: Sequence[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in streams:
        writer.close()
    for _, writer in streams:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def open_loop_worker(
    port: int, path: str, header: str, rate: float, seconds: float, warmup: float, conns: int
) -> dict[str, Any]:
    return run_async(open_loop(port, path, header, rate, seconds, warmup, conns))


async def open_loop(
    port: int, path: str, header: str, rate: float, seconds: float, warmup: float, conns: int
) -> dict[str, Any]:
    """Open-loop load at ``rate`` req/s; latency from each request's *scheduled* time."""
    import numpy as np

    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{header}\r\n".encode()
    streams = [await asyncio.open_connection(HOST, port) for _ in range(conns)]
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    total = int(rate * (warmup + seconds))
    clock = time.perf_counter
    t0 = clock() + 0.05
    measure_from = t0 + warmup
    latencies: list[float] = []
    send_lag: list[float] = []
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    async def dispatch() -> None:
        i = 0
        while i < total:
            now = clock()
            due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
            while i < due:
                queue.put_nowait(t0 + i / rate)
                i += 1
            wait = t0 + i / rate - clock()
            # Timers have ~1 ms resolution: sleep until 1.5 ms before, then spin.
            await asyncio.sleep(wait - 0.0015 if wait > 0.002 else 0)
        for _ in streams:
            queue.put_nowait(None)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (scheduled := await queue.get()) is not None:
            sent = clock()
            try:
                writer.write(request)
                status = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                failures.append(f"{type(err).__name__}: {err}")
                return
            if scheduled >= measure_from:
                latencies.append(clock() - scheduled)
                send_lag.append(sent - scheduled)
                statuses[status] += 1

    tasks = [asyncio.ensure_future(connection(r, w)) for r, w in streams]
    await asyncio.wait_for(dispatch(), warmup + seconds + 5)
    _done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    await close_all(streams)
    expected = total - int(rate * warmup)
    lat = np.array(latencies) * 1000.0
    lag = np.array(send_lag) * 1000.0 if send_lag else np.zeros(1)
    ok = statuses.get(200, 0)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if lat.size else None

    return {
        "rate": rate,
        "seconds": seconds,
        "expected": expected,
        "completed": int(lat.size),
        "errors": expected - ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": float(lat.max()) if lat.size else None,
        "send_lag_p99_ms": float(np.percentile(lag, 99)),
        "failures": failures[:5],
    }
