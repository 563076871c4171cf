"""The gateway's fast access-log lines read exactly like structlog's JSON lines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
import structlog

from qrng_dd import logs
from qrng_dd.logs import AccessLog


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_an_access_line_has_structlogs_fields_order_and_types(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("json", "info")
    try:
        fields = {"endpoint": "random", "status": 200, "bytes": 64, "latency_ms": 0.012}
        structlog.get_logger("qrng_dd.gateway.http").info("request", **fields, key="ab12cd34")
        before = time.time()
        access = AccessLog()
        access.write("random", 200, 64, 0.000012, "ab12cd34")  # no loop: written at once
        after = time.time()
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    reference, fast = _lines(capsys.readouterr().err)
    assert list(fast) == list(reference)  # the same keys in the same order
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in reference.items() if k != "timestamp"
    }
    stamp = str(fast["timestamp"])
    assert stamp.endswith("Z")
    seconds = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert int(before) <= seconds + float("0" + stamp[19:-1]) <= after + 1e-6


@pytest.mark.anyio
async def test_lines_leave_in_batches_and_none_is_lost(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    access = AccessLog()
    for i in range(AccessLog.FLUSH_LINES - 1):
        access.write("uuid", 200, i, 0.001, "-")
    assert capsys.readouterr().err == ""  # waiting for the timer or the batch
    access.write("uuid", 200, 10_000, 0.001, "-")  # the batch is full: written now
    assert [line["bytes"] for line in _lines(capsys.readouterr().err)] == [
        *range(AccessLog.FLUSH_LINES - 1),
        10_000,
    ]
    monkeypatch.setattr(AccessLog, "FLUSH_S", 0.0)
    access.write("uuid", 429, 1, 0.001, "-")
    deadline = time.monotonic() + 10
    written = ""
    while not written and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # polling for the loop's timer, bounded by the deadline
        written += capsys.readouterr().err
    assert [line["status"] for line in _lines(written)] == [429]


@pytest.mark.anyio
async def test_one_flush_timer_at_a_time_however_many_batches(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full batches flush at once and leave the one timer running: before, every batch
    scheduled a timer of its own (782 pending after 200,000 lines)."""
    loop = asyncio.get_running_loop()
    scheduled: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def counted(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = call_later(delay, callback, *args)
        scheduled.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_later", counted)
    access = AccessLog()
    for i in range(10 * AccessLog.FLUSH_LINES + 1):
        access.write("uuid", 200, i, 0.001, "-")
    assert len(scheduled) == 1
    assert len(_lines(capsys.readouterr().err)) == 10 * AccessLog.FLUSH_LINES
    access.flush()
    scheduled[0].cancel()
