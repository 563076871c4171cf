"""What every fuzz suite shares: how long it runs, where it starts, where its figures go.

- ``QRNG_FUZZ_SCALE`` (float, default 1) multiplies the number of generated inputs: the
  default keeps ``make test`` bounded, ``make fuzz`` runs 20 times as many.
- ``QRNG_FUZZ_SEED`` (an integer) replaces the default derandomized run, so CI replays the
  same inputs every time and a developer can still explore new ones on purpose.
- ``QRNG_FUZZ_REPORT_DIR``: each suite writes its figures there as ``<suite>.json`` (the lead
  aggregates them into docs/RELIABILITY.md); unset, nothing is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

#: Writes one suite's figures; returns the file written, or None when no directory is set.
ReportWriter = Callable[[str, Mapping[str, Any]], Path | None]


def _scale() -> float:
    text = os.environ.get("QRNG_FUZZ_SCALE", "1")
    try:
        scale = float(text)
    except ValueError:
        raise pytest.UsageError(f"QRNG_FUZZ_SCALE must be a number, got {text!r}") from None
    if not scale > 0:
        raise pytest.UsageError(f"QRNG_FUZZ_SCALE must be above 0, got {text!r}")
    return scale


def _seed() -> int | None:
    text = os.environ.get("QRNG_FUZZ_SEED")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise pytest.UsageError(f"QRNG_FUZZ_SEED must be an integer, got {text!r}") from None


@pytest.fixture(scope="session")
def fuzz_scale() -> float:
    """``QRNG_FUZZ_SCALE``: multiply each suite's base number of inputs by this."""
    return _scale()


@pytest.fixture(scope="session")
def fuzz_seed() -> int | None:
    """``QRNG_FUZZ_SEED``, or None for the derandomized (reproducible) default."""
    return _seed()


@pytest.fixture(scope="session")
def fuzz_report() -> ReportWriter:
    """A writer of ``$QRNG_FUZZ_REPORT_DIR/<suite>.json`` (a no-op when that is unset)."""

    def write(suite: str, figures: Mapping[str, Any]) -> Path | None:
        directory = os.environ.get("QRNG_FUZZ_REPORT_DIR")
        if not directory:
            return None
        path = Path(directory) / f"{suite}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    return write
