"""The results of one run: rows, the printed table and the JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.plan import SEED, Plan

__all__ = ["Report", "Row", "fmt", "format_table", "machine_info", "verdict", "write_results"]


@dataclass
class Row:
    """One line of the table (and of the JSON ``results``)."""

    case: str
    metric: str
    value: float | None
    unit: str
    target: str = ""
    verdict: str = ""  # PASS, MISS or "" (informational)
    x_ceiling: float | None = None  # share of the best bare-ASGI figure
    x_seed: float | None = None  # speed-up over the seed (>1 is better)
    errors: int | None = None
    note: str = ""


@dataclass
class Report:
    """Everything a run produced."""

    plan: Plan
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    ceiling: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.case}: {fmt(row.value)} {row.unit} {row.verdict}".rstrip(), flush=True)
        return row

    @property
    def best_ceiling(self) -> float | None:
        return max(self.ceiling.values()) if self.ceiling else None

    def to_json(self) -> dict[str, Any]:
        verdicts = Counter(row.verdict for row in self.rows if row.verdict)
        return {
            "schema": 1,
            "machine": self.machine,
            "plan": asdict(self.plan),
            "ceiling": {**self.ceiling, "best": self.best_ceiling},
            "seed": dict(SEED),
            "results": [asdict(row) for row in self.rows],
            "summary": {
                "pass": verdicts.get("PASS", 0),
                "miss": verdicts.get("MISS", 0),
                "failures": self.failures,
            },
            "details": self.details,
            "commands": self.commands,
        }


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def format_table(report: Report) -> str:
    """The results as one fixed-width text table."""
    header = ("case", "metric", "value", "unit", "target", "verdict", "x ceiling", "x seed",
              "errors", "note")  # fmt: skip
    lines = [header]
    for r in report.rows:
        lines.append(
            (
                r.case,
                r.metric,
                fmt(r.value),
                r.unit,
                r.target,
                r.verdict,
                "-" if r.x_ceiling is None else f"{r.x_ceiling:.2f}",
                "-" if r.x_seed is None else f"{r.x_seed:.1f}x",
                "-" if r.errors is None else str(r.errors),
                r.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append(" | ".join([*cells, line[-1]]).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 4)
    best = report.best_ceiling
    if best is not None:
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in report.ceiling.items())
        out.append(f"ceiling (bare ASGI, req/s): {parts}; best {best:,.0f}")
    return "\n".join(out)


def write_results(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python and server versions, load average."""
    from importlib import metadata

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("uvicorn", "granian", "starlette", "uvloop", "httptools", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    wrk = shutil.which("wrk")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "wrk": wrk,
        "load_before": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
