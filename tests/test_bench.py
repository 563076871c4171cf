"""The benchmark harness's plumbing, in tiny mode: no timing is asserted, only shapes."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from qrng_dd import bench

ROW_KEYS = {
    "case",
    "metric",
    "value",
    "unit",
    "target",
    "verdict",
    "x_ceiling",
    "x_seed",
    "errors",
    "note",
}

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.00us  100.00us   3.00ms   90.00%
    Req/Sec    52.10k     1.20k   54.00k    80.00%
  104200 requests in 2.00s, 14.01MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  52100.00
Transfer/sec:      7.00MB
"""


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cpu_case_writes_json_and_prints_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert bench.run(_args("--quick", "--cases", "cpu", "--output", str(out))) == 0
    data = json.loads(out.read_text())
    assert {"schema", "machine", "plan", "ceiling", "seed", "results", "summary"} <= set(data)
    assert {"nproc", "cpu_model", "python", "load_before", "load_after"} <= set(data["machine"])
    assert data["plan"]["quick"] is True
    assert data["seed"] == {"p50_ms": 3.62, "p99_ms": 9.13, "req_s": 438.0}
    assert data["summary"]["failures"] == []
    rows = data["results"]
    assert len(rows) == 5
    for row in rows:
        assert set(row) == ROW_KEYS
    speeds, (alarms,) = rows[:4], rows[4:]
    for row in speeds:
        assert row["value"] > 0
        assert row["unit"] == "MB/s"
    cases = " ".join(row["case"] for row in speeds)
    assert "health" in cases
    assert "batch tests" in cases
    assert "xor" in cases
    assert "hkdf" in cases
    # The false-alarm row: 64 MiB of healthy bytes in --quick, and a verdict on them.
    assert (alarms["metric"], alarms["unit"], alarms["target"]) == ("64 MiB", "alarms", "0")
    assert alarms["verdict"] == ("PASS" if alarms["value"] == 0 else "MISS")
    assert data["details"]["false_alarms"]["bytes"] == 64 * 1024 * 1024
    printed = capsys.readouterr().out
    assert "collector cpu: health" in printed
    assert "x ceiling" in printed
    assert str(out) in printed


def test_unknown_case_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert bench.run(_args("--cases", "cpu,nope", "--output", str(out))) == 2
    assert not out.exists()


def test_parse_wrk_counts_every_error() -> None:
    result = bench.parse_wrk(WRK_OUTPUT)
    assert result["rps"] == 52100.0
    assert result["requests"] == 104200
    assert result["seconds"] == 2.0
    assert result["errors"] == 6


def test_table_shows_ratios_to_ceiling_and_seed() -> None:
    report = bench.Report(bench.Plan.make(True), {})
    report.ceiling = {"granian": 80_000.0, "uvicorn": 50_000.0}
    bench._small_row(report_bench(report), "small /api/uuid", {"rps": 44_000.0, "errors": 0})
    row = report.rows[0]
    assert row.verdict == "PASS"
    assert row.x_ceiling == pytest.approx(0.55)
    assert row.x_seed == pytest.approx(44_000 / 438)
    table = bench.format_table(report)
    assert "0.55" in table
    assert "best 80,000" in table


def report_bench(report: bench.Report) -> bench.Bench:
    """A Bench without services: enough for the row helpers."""
    b = bench.Bench.__new__(bench.Bench)
    b.report = report
    b.plan = report.plan
    return b


def test_open_loop_generator_against_a_tiny_server() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> dict[str, object]:
        server = await asyncio.start_server(handle, bench.HOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await bench._open_loop(port, "/", "", 200.0, 0.3, 0.1, 2)

    result = asyncio.run(main())
    assert result["expected"] == 60
    assert result["completed"] == 60
    assert result["errors"] == 0
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "send_lag_p99_ms"):
        assert isinstance(result[key], float)
