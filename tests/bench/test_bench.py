"""The benchmark's plumbing (`bench`, run as ``python -m bench``): no timing is asserted, only
shapes, commands and that the harness starts what it measures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from bench.cases_serving import small_row
from bench.command import add_arguments, run
from bench.harness import Bench, parse_wrk, server_command
from bench.loadgen import open_loop
from bench.plan import HOST, Plan
from bench.report import Report, format_table
from bench.workers import in_process, make_packets

from qrng_dd.wire.packet import PacketKey, decode

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
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cpu_case_writes_json_and_prints_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The in-process cpu case fills the JSON file and the table with five well-formed rows."""
    out = tmp_path / "results.json"
    assert run(_args("--quick", "--cases", "cpu", "--output", str(out))) == 0
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


def test_unknown_case_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown case name is exit status 2, one line, and no result file."""
    out = tmp_path / "r.json"
    assert run(_args("--cases", "cpu,nope", "--output", str(out))) == 2
    assert capsys.readouterr().err == "python -m bench: unknown case(s): nope\n"
    assert not out.exists()


def test_parse_wrk_counts_every_error() -> None:
    """Socket errors and non-2xx answers both count as errors."""
    result = parse_wrk(WRK_OUTPUT)
    assert result["rps"] == 52100.0
    assert result["requests"] == 104200
    assert result["seconds"] == 2.0
    assert result["errors"] == 6


def test_table_shows_ratios_to_ceiling_and_seed() -> None:
    """A small-request row carries its share of the best ceiling and its speed-up on the seed."""
    report = Report(Plan.make(True), {})
    report.ceiling = {"granian": 80_000.0, "uvicorn": 50_000.0}
    with contextlib.ExitStack() as stack:
        small_row(Bench(report.plan, report, stack), "small /api/uuid",
                  {"rps": 44_000.0, "errors": 0})  # fmt: skip
    row = report.rows[0]
    assert row.verdict == "PASS"
    assert row.x_ceiling == pytest.approx(0.55)
    assert row.x_seed == pytest.approx(44_000 / 438)
    table = format_table(report)
    assert "0.55" in table
    assert "best 80,000" in table


def test_open_loop_generator_against_a_tiny_server() -> None:
    """Every scheduled request after the warm-up is answered and timed."""
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
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await open_loop(port, "/", "", 200.0, 0.3, 0.1, 2)

    result = asyncio.run(main())
    assert result["expected"] == 60
    assert result["completed"] == 60
    assert result["errors"] == 0
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "send_lag_p99_ms"):
        assert isinstance(result[key], float)


def test_packets_are_one_stream_with_seq_and_time_moving_together() -> None:
    """Pre-made packets decode under the key, in one source, seq and ts_us both +1 each."""
    key_hex = "11" * 32
    raws = make_packets(key_hex, "bench-1", 3, 64, encrypted=False, seq0=7)
    packets = [decode(raw, PacketKey.from_hex(key_hex)) for raw in raws]
    assert [p.seq for p in packets] == [7, 8, 9]
    assert [p.ts_us - packets[0].ts_us for p in packets] == [0, 1, 2]
    assert {p.source for p in packets} == {"bench-1"}
    assert {p.data for p in packets} == {packets[0].data}
    assert not any(p.flags for p in packets)


def test_in_process_returns_the_result_or_raises_the_error() -> None:
    """A spawned worker hands back its value; one that fails is a RuntimeError naming it."""
    assert in_process(parse_wrk, WRK_OUTPUT, timeout=60)["errors"] == 6
    with pytest.raises(RuntimeError, match="parse_wrk: RuntimeError: cannot read wrk output"):
        in_process(parse_wrk, "nothing", timeout=60)


def test_server_commands_name_the_app_by_module() -> None:
    """The documented command lines (docs/BENCHMARKS.md) load bench.apps by name."""
    granian = server_command("granian", 8001, "bench.apps:bare_app")
    uvicorn = server_command("uvicorn", 8002, "bench.apps:bare_app")
    assert granian[-1] == "bench.apps:bare_app"
    assert "--factory" not in granian
    assert uvicorn[1:3] == ["bench.apps:bare_app", "--host"]
    factory = server_command("granian", 8003, "bench.apps:gateway_app", factory=True)
    assert factory[-2:] == ["--factory", "bench.apps:gateway_app"]


@pytest.mark.e2e
def test_bare_app_is_served_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness starts uvicorn on bench.apps:bare_app even outside the checkout."""
    monkeypatch.chdir(tmp_path)
    report = Report(Plan.make(True), {})
    with contextlib.ExitStack() as stack:
        bare = Bench(report.plan, report, stack).bare("uvicorn")
        response = httpx.get(f"{bare.url}/anything", timeout=5)
    assert response.status_code == 200
    assert response.content == b"0123456789abcdef" * 4
    assert bare.proc.poll() is not None
    assert report.commands == [" ".join(bare.proc.args)]  # type: ignore[arg-type]


def test_python_dash_m_bench_shows_its_options() -> None:
    """``python -m bench --help`` runs from the checkout and lists the cases."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m bench")
    assert "ceiling, small, latency" in done.stdout
