"""What ``qrng-dd seed`` did, as a node-exporter textfile that carries the counters across runs."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final


@dataclass(frozen=True, slots=True)
class SeedStats:
    """What the seeder did, as the node-exporter textfile shows it."""

    bytes_added: int = 0
    bits_credited: int = 0
    failures: int = 0
    #: Unix time of the last successful addition; 0 for never.
    last_success_s: float = 0.0

    def added(self, count: int, bits: int, now: float) -> SeedStats:
        return replace(
            self,
            bytes_added=self.bytes_added + count,
            bits_credited=self.bits_credited + bits,
            last_success_s=now,
        )

    def failed(self) -> SeedStats:
        return replace(self, failures=self.failures + 1)


_METRICS: Final = (
    ("qrng_seed_bytes_added_total", "counter", "Bytes added to the kernel's entropy pool."),
    ("qrng_seed_bits_credited_total", "counter", "Bits of entropy credited to the kernel."),
    ("qrng_seed_failures_total", "counter", "Draws from the gateway that failed."),
    (
        "qrng_seed_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last addition to the entropy pool (0: none yet).",
    ),
)


def _values(stats: SeedStats) -> tuple[int, int, int, float]:
    return stats.bytes_added, stats.bits_credited, stats.failures, stats.last_success_s


def render_textfile(stats: SeedStats) -> str:
    """``stats`` in the Prometheus text format, for node-exporter's textfile collector."""
    lines: list[str] = []
    for (name, kind, text), value in zip(_METRICS, _values(stats), strict=True):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


def parse_textfile(text: str) -> SeedStats:
    """The counters a previous :func:`render_textfile` wrote; what is missing or odd is 0."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                value = float(parts[1])
                if math.isfinite(value) and value >= 0:
                    found[parts[0]] = value
    added, credited, failures, last = (found.get(name, 0.0) for name, _, _ in _METRICS)
    return SeedStats(int(added), int(credited), int(failures), last)


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole: written aside, then renamed, so node-exporter
    never reads half a file. Mode 0644: node-exporter runs as another user.

    Raises:
        OSError: the directory is not writable.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            os.fchmod(file.fileno(), 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_stats(path: Path | None) -> SeedStats:
    """The counters in ``path`` from an earlier run; zero if there is none."""
    if path is None:
        return SeedStats()
    try:
        return parse_textfile(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return SeedStats()
