"""Load generators in their own processes: pool fill, HTTP ingest and paced UDP.

`in_process` runs a function in a fresh *spawned* process and hands back its result, so a
generator never shares a core or a GIL with the harness. Packets are made with the tests'
`tests.support.gateway.make_raw`, pre-generated before the clock starts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from tests.support.gateway import make_raw

from bench.loadgen import close_all, read_response, run_async
from bench.plan import HOST, MB, MIB
from qrng_dd.wire.packet import FLAG_ENCRYPTED, MAX_DATA_BYTES, PacketKey

__all__ = ["fill_worker", "in_process", "ingest_worker", "make_packets", "udp_worker"]

T = TypeVar("T")


def in_process(fn: Callable[..., T], *args: Any, timeout: float) -> T:
    """Run ``fn(*args)`` in a fresh (spawned) process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_entry, args=(fn, args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"{fn.__name__} did not finish in {timeout:.0f} s")
        kind, value = parent.recv()
    except EOFError as err:
        raise RuntimeError(f"{fn.__name__} died (exit code {proc.exitcode})") from err
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if kind == "error":
        raise RuntimeError(f"{fn.__name__}: {value}")
    result: T = value
    return result


def _worker_entry(fn: Callable[..., Any], args: tuple[Any, ...], conn: Connection) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which raises
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def make_packets(
    key_hex: str, source: str, count: int, size: int, *, encrypted: bool = True, seq0: int = 1
) -> list[bytes]:
    """``count`` encoded packets from ``source``, all carrying the same ``size`` random bytes."""
    key = PacketKey.from_hex(key_hex)
    flags = FLAG_ENCRYPTED if encrypted else 0
    data = os.urandom(size)
    # seq and ts_us both advance by one per packet, as a collector's do: a missing packet is
    # then a gap (seq jumped by no more than the clock), never taken for a collector restart.
    ts_us = int(time.time() * 1_000_000)
    return [
        make_raw(key, data, source=source, flags=flags, seq=seq0 + i, ts_us=ts_us + i)
        for i in range(count)
    ]


def _post(port: int, raw: bytes) -> bytes:
    head = (
        f"POST /push HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def fill_worker(port: int, key_hex: str, nbytes: int) -> dict[str, Any]:
    """Push ``nbytes`` of unencrypted 1 MiB packets (prefill; not a measurement)."""

    async def main() -> dict[str, Any]:
        count = -(-nbytes // MAX_DATA_BYTES)
        statuses: Counter[int] = Counter()
        source = f"fill-{os.getpid()}-{time.monotonic_ns()}"
        reader, writer = await asyncio.open_connection(HOST, port)
        done = 0
        while done < count:
            batch = make_packets(key_hex, source, min(64, count - done), MAX_DATA_BYTES,
                                  encrypted=False, seq0=done + 1)  # fmt: skip
            for raw in batch:
                writer.write(_post(port, raw))
                statuses[await read_response(reader)] += 1
            done += len(batch)
        await close_all([(reader, writer)])
        errors = sum(v for k, v in statuses.items() if k != 200)
        return {"packets": count, "errors": errors, "status": dict(statuses)}

    return run_async(main())


def ingest_worker(
    port: int, key_hex: str, size: int, per_conn: int, conns: int, seconds: float
) -> dict[str, Any]:
    """Pre-generate packets, then POST them on ``conns`` keep-alive connections."""
    started = time.perf_counter()
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    warm = max(1, per_conn // 20)
    lists = [make_packets(key_hex, f"ingest-{tag}-{c}", per_conn, size) for c in range(conns)]
    generated = time.perf_counter() - started

    async def main() -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        streams = [await asyncio.open_connection(HOST, port) for _ in range(conns)]
        sent = [0] * conns

        async def push(c: int, stop_at: int, deadline: float) -> None:
            reader, writer = streams[c]
            while sent[c] < stop_at and time.perf_counter() < deadline:
                writer.write(_post(port, lists[c][sent[c]]))
                statuses[await read_response(reader)] += 1
                sent[c] += 1

        far = time.perf_counter() + 3600
        await asyncio.gather(*(push(c, warm, far) for c in range(conns)))
        statuses.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(push(c, per_conn, t0 + seconds) for c in range(conns)))
        elapsed = time.perf_counter() - t0
        await close_all(streams)
        ok = statuses.get(200, 0)
        return {
            "size": size,
            "packets": ok,
            "errors": sum(statuses.values()) - ok,
            "status": {str(k): v for k, v in statuses.items()},
            "seconds": elapsed,
            "bytes_per_s": ok * size / elapsed,
            "packets_per_s": ok / elapsed,
            "generated": per_conn * conns,
            "generate_seconds": generated,
            "ran_out": all(s >= per_conn for s in sent),
        }

    return run_async(main())


def udp_worker(
    port: int, key_hex: str, source: str, rate_mb_s: float, seconds: float, payload: int
) -> dict[str, Any]:
    """Send pre-built datagrams of ``payload`` entropy bytes, paced to ``rate_mb_s``; never
    read."""
    count = max(1, int(rate_mb_s * MB * seconds / payload))
    t_gen = time.perf_counter()
    packets = make_packets(key_hex, source, count, payload)
    generated = time.perf_counter() - t_gen
    interval = payload / (rate_mb_s * MB)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * MIB)
    sock.connect((HOST, port))
    send_errors = 0
    clock = time.perf_counter
    t0 = clock()
    i = 0
    while i < count:
        due = min(count, int((clock() - t0) / interval) + 1)
        while i < due:
            try:
                sock.send(packets[i])
            except OSError:
                send_errors += 1
            i += 1
        ahead = t0 + i * interval - clock()
        if ahead > 0.001:
            time.sleep(ahead - 0.0005)
    elapsed = clock() - t0
    sock.close()
    return {
        "sent": count,
        "send_errors": send_errors,
        "seconds": elapsed,
        "offered_mb_s": count * payload / elapsed / MB,
        "generate_seconds": generated,
        "datagram_bytes": len(packets[0]),
    }
