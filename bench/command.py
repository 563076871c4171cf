"""``python -m bench``: the options, then every chosen case in turn, one table, one JSON file."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.cases_client import case_client
from bench.cases_collector import case_cpu
from bench.cases_ingest import case_e2e, case_ingest, case_udp
from bench.cases_serving import (
    case_accesslog,
    case_ceiling,
    case_granian_gateway,
    case_rss,
    case_small_and_latency,
)
from bench.harness import Bench
from bench.plan import CASES, Plan
from bench.report import Report, format_table, machine_info, write_results

__all__ = ["add_arguments", "main", "run"]

_PROG = "python -m bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--quick", action="store_true", help="short runs (CI-like smoke test)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results.json"),
        metavar="FILE",
        help="JSON result file (default bench-results.json)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(CASES)} (default: all)",
    )
    parser.add_argument("--seconds", type=int, default=None, help="override wrk duration")


def _steps(cases: set[str]) -> list[tuple[str, Callable[[Bench], None]]]:
    """The chosen cases in run order; small, latency and bulk share one gateway."""
    steps: list[tuple[str, Callable[[Bench], None]]] = []
    if "ceiling" in cases:
        steps.append(("ceiling", case_ceiling))
    if cases & {"small", "latency", "bulk"}:
        steps.append(("small/latency/bulk", lambda b: case_small_and_latency(b, cases)))
    named: dict[str, Callable[[Bench], None]] = {
        "accesslog": case_accesslog,
        "granian": case_granian_gateway,
        "ingest": case_ingest,
        "e2e": case_e2e,
        "udp": case_udp,
        "cpu": case_cpu,
        "rss": case_rss,
        "client": case_client,
    }
    return steps + [(name, fn) for name, fn in named.items() if name in cases]


def run(args: argparse.Namespace) -> int:
    """Run the selected cases; print the table; write the JSON.

    Returns:
        0, or 1 if a case crashed, 2 for an unknown case.
    """
    cases = {c.strip() for c in str(args.cases).split(",") if c.strip()}
    unknown = cases - set(CASES)
    if unknown:
        print(f"{_PROG}: unknown case(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    plan = Plan.make(bool(args.quick))
    if args.seconds:
        plan.wrk_seconds = int(args.seconds)
    report = Report(plan, machine_info())
    report.details["_cases"] = sorted(cases)
    print(f"{_PROG}: {', '.join(c for c in CASES if c in cases)}"
          f"{' (quick)' if plan.quick else ''}; load {report.machine['load_before']}",
          flush=True)  # fmt: skip
    for name, fn in _steps(cases):
        print(f"[{name}]", flush=True)
        with contextlib.ExitStack() as stack:
            try:
                fn(Bench(plan, report, stack))
            except Exception as err:  # one broken case must not lose the others
                report.failures.append(f"{name}: {type(err).__name__}: {err}")
                print(f"  FAILED: {type(err).__name__}: {err}", flush=True)
    report.machine["load_after"] = list(os.getloadavg())
    print()
    print(format_table(report))
    if report.failures:
        print("failed cases:", *report.failures, sep="\n  ")
    write_results(report, args.output)
    print(f"results written to {args.output}")
    return 1 if report.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench [options]``; a developer's ``GRANIAN_*`` settings are dropped first,
    so they cannot change what the granian command lines measure."""
    for name in [name for name in os.environ if name.startswith("GRANIAN_")]:
        del os.environ[name]
    parser = argparse.ArgumentParser(prog=_PROG, description="qrng-dd benchmarks on loopback.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
