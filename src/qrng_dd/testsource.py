"""``qrng-dd test-source URL``: check an appliance before it goes live.

Fetches bytes through the same source classes the collector uses (so TLS, CA file and answer
checks are the production ones), runs them through the SP 800-90B health monitor and then the
statistical report of :mod:`qrng_dd.gateway.randomness`, and prints both. Exit status 0 when the
source passes, 1 when it fails, 2 when it cannot be read or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from qrng_dd.collector.health import HealthMonitor
from qrng_dd.collector.sources import SourceError, open_source
from qrng_dd.gateway.randomness import MIN_BYTES, randomness_report

CHUNK = 65_536
MAX_BYTES = 100_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="https://appliance[:port], http://127.0.0.1:8443 or file://")
    parser.add_argument("--bytes", type=int, default=1_000_000, help="bytes to test (1,000,000)")
    parser.add_argument("--claimed-entropy-bits", type=float, default=7.0, metavar="H")
    parser.add_argument(
        "--alpha-log2", type=int, default=40, choices=range(20, 41), metavar="20..40",
        help="false-alarm rate 2^-N per sample of the health tests (default 40)",
    )  # fmt: skip
    parser.add_argument("--ca-file", type=Path, help="CA certificate that signed the appliance")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS (not advised)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def _collect(args: argparse.Namespace) -> tuple[bytes, dict[str, Any]]:
    verify: Any = str(args.ca_file) if args.ca_file else not args.insecure
    monitor = HealthMonitor(args.claimed_entropy_bits, alpha_log2=args.alpha_log2)
    parts: list[bytes] = []
    alarms: list[dict[str, Any]] = []
    async with httpx.AsyncClient(verify=verify, timeout=30) as client:
        source = open_source(args.url, client)
        left = args.bytes
        while left:
            chunk = await source.fetch(min(CHUNK, left))
            verdict = monitor.check(chunk, time.monotonic())
            if verdict.failed_test is not None:
                alarms.append(
                    {
                        "test": verdict.failed_test.value,
                        "at_byte": args.bytes - left + (verdict.failure_offset or 0),
                    }
                )
                monitor.reset()
            parts.append(chunk)
            left -= len(chunk)
    health = {
        "claimed_entropy_bits": args.claimed_entropy_bits,
        "alpha": f"2^-{args.alpha_log2}",
        "rct_cutoff": monitor.rct_cutoff,
        "apt_cutoff": monitor.apt_cutoff,
        "alarms": alarms,
        "passed": not alarms,
    }
    return b"".join(parts), health


def run(args: argparse.Namespace) -> int:
    """Fetch, test, print; see the module docstring for the exit status."""
    if not MIN_BYTES <= args.bytes <= MAX_BYTES:
        print(f"qrng-dd test-source: --bytes must be {MIN_BYTES}..{MAX_BYTES}", file=sys.stderr)
        return 2
    if not 0 < args.claimed_entropy_bits <= 8:
        print("qrng-dd test-source: --claimed-entropy-bits must be in (0, 8]", file=sys.stderr)
        return 2
    try:
        data, health = anyio.run(_collect, args)
    except (SourceError, OSError, ValueError) as err:
        print(f"qrng-dd test-source: cannot read {args.url}: {err}", file=sys.stderr)
        return 2
    report = randomness_report(data)
    passed = report["passed"] and bool(health["passed"])
    if args.json:
        print(json.dumps({"source": args.url, "health_tests": health, "report": report,
                          "passed": passed}, indent=2))  # fmt: skip
        return 0 if passed else 1
    print(f"source: {args.url}  bytes tested: {len(data)}")
    print(
        f"SP 800-90B health tests (H={health['claimed_entropy_bits']}, "
        f"alpha={health['alpha']}, RCT cutoff "
        f"{health['rct_cutoff']}, APT cutoff {health['apt_cutoff']}): "
        + ("pass" if health["passed"] else f"FAIL {health['alarms']}")
    )
    for test in report["tests"]:
        if "p_value" in test:
            detail = f"p={test['p_value']:.4f}"
        else:
            detail = f"{test['blocks_failed']}/{test['blocks_tested']} blocks failed"
        print(f"  {'pass' if test['passed'] else 'FAIL':4}  {test['name']:28} {detail}")
    print(
        f"  Shannon entropy {report['shannon_entropy_bits_per_byte']:.4f} bits/byte, "
        f"min-entropy {report['min_entropy_bits_per_byte']:.4f} bits/byte"
    )
    print(f"verdict: {report['verdict']}; source {'PASSES' if passed else 'FAILS'}")
    return 0 if passed else 1
