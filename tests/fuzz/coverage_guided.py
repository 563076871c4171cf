"""Coverage-guided fuzzing of the frame and body parsers with atheris (``make fuzz``).

Run: ``.venv/bin/python -m tests.fuzz.coverage_guided -atheris_runs=1000000`` (any libFuzzer
flag works; a corpus directory given as an argument is used, and grown, instead of the
built-in seeds).

The first input byte picks the target, the rest is its input:

0. ``open_frame(raw)``, what any peer reaches;
1. ``parse_body(body)`` and 2. ``unpack_bounded(body)``, behind the tag;
3. ``decode(raw)``, every stateless check;
4. the verifier's ``check`` on the body wrapped in a frame with a *valid* tag, so the fuzzer
   explores the parsers and checks a keyed peer reaches;
5. ``decode_telemetry(data)``, the map a telemetry packet carries.

Each target may refuse with ``PacketError``; any other exception is a crash. The seeds are
valid packets and bodies (plain, encrypted, telemetry), so the fuzzer starts from inputs that
pass every check and mutates from there.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from qrng_dd.errors import PacketError
    from qrng_dd.gateway.verifier import PacketVerifier
    from qrng_dd.wire import packet as wire
    from qrng_dd.wire.telemetry import decode_telemetry, encode_telemetry

KEY = bytes(range(32))
NOW = 1_764_201_600.0
NOW_US = int(NOW * 1_000_000)
_KEY = wire.PacketKey(KEY)
#: ``marks={}``: a verifier with a (empty) sequence memory, so no quiet start refuses all.
_VERIFIER = PacketVerifier(_KEY, "gateway", clock=lambda: NOW, marks={})
TARGETS = 6


def _signed(body: bytes) -> bytes:
    """``body`` in a version-1 frame under its true tag: past the MAC, into the parsers."""
    return b"\x93\x01" + _pack_bin(body) + _pack_bin(_KEY.tag(body))


def _pack_bin(data: bytes) -> bytes:
    if len(data) < 256:
        return b"\xc4" + len(data).to_bytes(1, "big") + data
    if len(data) < 65_536:
        return b"\xc5" + len(data).to_bytes(2, "big") + data
    return b"\xc6" + len(data).to_bytes(4, "big") + data


def run_one(data: bytes) -> None:
    """One input: the target its first byte picks. Raises anything but PacketError."""
    if not data:
        return
    target, rest = data[0] % TARGETS, data[1:]
    try:
        if target == 0:
            wire.open_frame(rest)
        elif target == 1:
            wire.parse_body(rest)
        elif target == 2:
            wire.unpack_bounded(rest, "body", max_array_len=8, max_str_len=64)
        elif target == 3:
            wire.decode(rest, _KEY)
        elif target == 4:
            _VERIFIER.check(_signed(rest))
        else:
            decode_telemetry(rest)
    except PacketError:
        pass


def seeds() -> list[bytes]:
    """Valid packets for every target, prefixed with the byte that picks it."""
    rng = random.Random(19)
    out = []
    for flags, data in ((0, rng.randbytes(64)), (1, rng.randbytes(64)),
                        (3, encode_telemetry({"data_seq": 5, "health": {"a": "healthy"}})),
                        (1, rng.randbytes(2000))):  # fmt: skip
        packet = wire.Packet(rng.randbytes(16), flags, "collector", "gateway", 7, NOW_US, data)
        raw = wire.encode(packet, _KEY)
        body, _ = wire.open_frame(raw)
        out += [b"\x00" + raw, b"\x01" + body, b"\x02" + body, b"\x03" + raw, b"\x04" + body]
        if flags & wire.FLAG_TELEMETRY:
            out.append(b"\x05" + data)
    return out


def main(argv: list[str]) -> None:
    """Run libFuzzer on :func:`run_one`; without a corpus directory, on the built-in seeds."""
    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="qrng-fuzz-corpus-"))
        for i, seed in enumerate(seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("QRNG_LOG_LEVEL", "error")
    main(sys.argv)
