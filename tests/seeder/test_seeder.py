"""``qrng-dd seed``: the pure parts byte for byte, every bad option as one line and exit
status 2, and the real thing against a gateway on loopback, adding to this machine's kernel
pool (the ioctl needs root: CI runs as root, and these tests fail, not skip, without it)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from qrng_dd.client import Client
from qrng_dd.errors import ConfigError
from qrng_dd.seeder.command import (
    Seeder,
    _stop_on_signals,
    add_arguments,
    parse_options,
    read_api_key,
)
from qrng_dd.seeder.kernel import (
    RNDADDENTROPY,
    DeviceError,
    EntropyDevice,
    _refusal,
    entropy_request,
    mix,
)
from qrng_dd.seeder.options import (
    MAX_BYTES,
    SeedOptions,
    check_api_key,
    check_url,
    is_loopback,
    parse_count,
    parse_credit,
    parse_interval,
)
from qrng_dd.seeder.stats import (
    SeedStats,
    load_stats,
    parse_textfile,
    render_textfile,
    write_textfile,
)
from tests.support.diode import cli
from tests.support.gateway import (
    RunningGateway,
    clean_environ,
    free_port,
    push_packets,
    start_gateway,
    stop,
    wait_until,
)

KEY = "k" * 32
PROCESS_TIMEOUT_S = 60


def _require_root() -> None:
    assert os.geteuid() == 0, "RNDADDENTROPY needs CAP_SYS_ADMIN: run these tests as root"


# --- the ioctl request and mixing ------------------------------------------------------------


def test_rndaddentropy_is_iow_r_3_of_two_ints() -> None:
    """The constant is _IOW('R', 0x03, int[2]) as include/uapi/linux/random.h defines it."""
    assert RNDADDENTROPY == 0x40085203


def test_the_request_is_credit_then_length_then_the_bytes() -> None:
    """struct rand_pool_info: entropy_count, buf_size, buf, as a mutable buffer."""
    request = entropy_request(b"abc", 17)
    assert request == struct.pack("ii", 17, 3) + b"abc"
    assert isinstance(request, bytearray)  # fcntl.ioctl refuses immutable args over 1024 bytes


@pytest.mark.parametrize(
    ("quantum", "local", "mixed"),
    [
        (b"", b"", b""),
        (b"\x00\xff\x0f", b"\x00\x00\x00", b"\x00\xff\x0f"),
        (b"\x00\xff\x0f", b"\xff\xff\xff", b"\xff\x00\xf0"),
        (b"\x12\x34", b"\x12\x34", b"\x00\x00"),
        (b"\x01\x00\x00\x00", b"\x00\x00\x00\x80", b"\x01\x00\x00\x80"),
    ],
)
def test_mix_is_bytewise_xor(quantum: bytes, local: bytes, mixed: bytes) -> None:
    """Known answers, leading zero bytes kept."""
    assert mix(quantum, local) == mixed


@given(st.binary(max_size=MAX_BYTES).flatmap(lambda q: st.tuples(st.just(q), _same_length(q))))
def test_mixing_twice_with_the_same_local_bytes_gives_the_quantum_bytes(
    pair: tuple[bytes, bytes],
) -> None:
    """XOR is its own inverse and keeps the length."""
    quantum, local = pair
    assert len(mix(quantum, local)) == len(quantum)
    assert mix(mix(quantum, local), local) == quantum


def _same_length(data: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=len(data), max_size=len(data))


def test_mixing_inputs_of_different_lengths_is_refused() -> None:
    """A short draw is never padded."""
    with pytest.raises(ValueError, match="3 bytes with 2"):
        mix(b"abc", b"ab")


# --- option checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("64", 64), (str(MAX_BYTES), MAX_BYTES)])
def test_bytes_in_range_are_taken(text: str, count: int) -> None:
    """1..4096."""
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["0", "-1", str(MAX_BYTES + 1), "abc", "", "1.5", "nan"])
def test_bytes_out_of_range_are_refused(text: str) -> None:
    """Zero, too many, not a whole number."""
    with pytest.raises(ConfigError, match=r"^--bytes must be a whole number in 1\.\.4096"):
        parse_count(text)


@pytest.mark.parametrize(("text", "seconds"), [("300", 300.0), ("0.2", 0.2), ("1e-3", 0.001)])
def test_positive_finite_intervals_are_taken(text: str, seconds: float) -> None:
    """Any positive, finite number of seconds up to a day."""
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "abc", "", "86401"])
def test_other_intervals_are_refused(text: str) -> None:
    """Zero, negative, not a number, infinite, more than a day."""
    with pytest.raises(ConfigError, match=r"^--interval must be seconds above 0"):
        parse_interval(text)


@pytest.mark.parametrize(("text", "bits"), [("0", 0), ("1", 1), ("512", 512)])
def test_credit_up_to_eight_bits_a_byte_is_taken(text: str, bits: int) -> None:
    """0..8 * bytes."""
    assert parse_credit(text, 64) == bits


@pytest.mark.parametrize("text", ["513", "-1", "abc", "1.5", ""])
def test_other_credits_are_refused(text: str) -> None:
    """No byte carries more than 8 bits; negative or fractional credit means nothing."""
    with pytest.raises(ConfigError, match=r"^--credit-bits must be a whole number in 0\.\.512"):
        parse_credit(text, 64)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("localhost.example.com", False),
        ("qrng.example", False),
    ],
)
def test_loopback_is_localhost_127_slash_8_and_ipv6_one(host: str, loopback: bool) -> None:
    """Names other than localhost are not trusted to resolve to loopback."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "allow", "checked"),
    [
        ("http://127.0.0.1:7764", False, "http://127.0.0.1:7764"),
        ("http://localhost:7764/", False, "http://localhost:7764"),
        ("http://[::1]:7764", False, "http://[::1]:7764"),
        ("https://qrng.example:7764", False, "https://qrng.example:7764"),
        ("https://qrng.example/prefix/", False, "https://qrng.example/prefix"),
        ("http://10.1.2.3:7764", True, "http://10.1.2.3:7764"),
    ],
)
def test_https_anywhere_and_http_on_loopback_are_accepted(
    url: str, allow: bool, checked: str
) -> None:
    """Cleartext off the host only with --allow-insecure-http."""
    assert check_url(url, allow_insecure_http=allow) == checked


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.1.2.3:7764", "clear text"),
        ("http://qrng.example", "clear text"),
        ("ftp://127.0.0.1", r"not an http\(s\)://"),
        ("http://", r"not an http\(s\)://"),
        ("127.0.0.1:7764", r"not an http\(s\)://"),
        ("http://127.0.0.1:99999", "not a valid URL"),
    ],
)
def test_other_urls_are_refused(url: str, why: str) -> None:
    """Cleartext to another host, another scheme, no host, a bad port."""
    with pytest.raises(ConfigError, match=why):
        check_url(url, allow_insecure_http=False)


def test_an_api_key_is_stripped_and_checked() -> None:
    """A key file may end in a newline."""
    assert check_api_key(f"  {KEY}\n", "file") == KEY


@pytest.mark.parametrize("key", ["", " \n", "abc def", "abc\ndef", "schlüssel", "abc\x00"])
def test_a_key_that_cannot_go_in_a_header_is_refused_without_being_shown(key: str) -> None:
    """The message names where the key came from, never the key."""
    with pytest.raises(ConfigError, match=r"^the origin ") as info:
        check_api_key(key, "the origin")
    if key.strip():
        assert key.strip() not in str(info.value)


def test_the_key_file_wins_over_the_environment(tmp_path: Path) -> None:
    """An explicit file is what the operator meant."""
    path = tmp_path / "key"
    path.write_text(f"{KEY}\n")
    assert read_api_key(path, {"QRNG_GATEWAY_API_KEY": "other-key-0000000000"}) == KEY
    assert read_api_key(None, {"QRNG_GATEWAY_API_KEY": KEY}) == KEY


@pytest.mark.parametrize("environ", [{}, {"QRNG_GATEWAY_API_KEY": ""}])
def test_no_key_anywhere_is_refused(environ: dict[str, str]) -> None:
    """There is no key on the command line to fall back on."""
    with pytest.raises(ConfigError, match=r"^no API key: set QRNG_GATEWAY_API_KEY"):
        read_api_key(None, environ)


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    """Missing file, a directory, empty file."""
    with pytest.raises(ConfigError, match=r"cannot read .*No such file"):
        read_api_key(tmp_path / "missing", {})
    with pytest.raises(ConfigError, match=r"cannot read .*Is a directory"):
        read_api_key(tmp_path, {})
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_api_key(tmp_path / "empty", {})


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_the_url_from_the_environment() -> None:
    """64 bytes every 300 s, no credit, /dev/random; the URL from QRNG_GATEWAY_URL."""
    options = parse_options(
        _args(), {"QRNG_GATEWAY_API_KEY": KEY, "QRNG_GATEWAY_URL": "https://qrng.example/"}
    )
    assert (options.url, options.api_key, options.count) == ("https://qrng.example", KEY, 64)
    assert (options.interval_s, options.credit_bits, options.once) == (300.0, 0, False)
    assert options.device == Path("/dev/random")
    assert options.textfile is None
    assert KEY not in repr(options)
    local = parse_options(_args(), {"QRNG_GATEWAY_API_KEY": KEY})
    assert local.url == "http://127.0.0.1:7764"


def test_the_url_option_wins_over_the_environment() -> None:
    """And is checked like any other."""
    environ = {"QRNG_GATEWAY_API_KEY": KEY, "QRNG_GATEWAY_URL": "http://qrng.example"}
    options = parse_options(_args("--gateway-url", "http://[::1]:1"), environ)
    assert options.url == "http://[::1]:1"
    with pytest.raises(ConfigError, match="clear text"):
        parse_options(_args(), environ)


# --- the textfile ----------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_textfile_is_prometheus_text_with_the_four_series() -> None:
    """Counters with _total, the timestamp as a gauge; what Prometheus's parser reads back."""
    stats = SeedStats().added(64, 8, 1_700_000_000.5).added(64, 0, 1_700_000_300.25).failed()
    text = render_textfile(stats)
    assert "# TYPE qrng_seed_bytes_added_total counter" in text
    assert "# TYPE qrng_seed_last_success_timestamp_seconds gauge" in text
    assert _samples(text) == {
        "qrng_seed_bytes_added_total": 128,
        "qrng_seed_bits_credited_total": 8,
        "qrng_seed_failures_total": 1,
        "qrng_seed_last_success_timestamp_seconds": 1_700_000_300.25,
    }


def test_the_counters_read_back_from_the_textfile() -> None:
    """So a timer-driven --once run carries on from the last one."""
    stats = SeedStats(bytes_added=640, bits_credited=80, failures=3, last_success_s=1.5e9)
    assert parse_textfile(render_textfile(stats)) == stats
    assert parse_textfile(render_textfile(SeedStats())) == SeedStats()


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "qrng_seed_bytes_added_total nan\n", "qrng_seed_bytes_added_total -5\n"],
)
def test_a_textfile_that_is_not_ours_counts_from_zero(text: str) -> None:
    """A missing or odd value is 0, never an error."""
    assert parse_textfile(text) == SeedStats()


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(tmp_path: Path) -> None:
    """Mode 0644, the old content replaced, no temporary file left behind."""
    path = tmp_path / "seed.prom"
    path.write_text("old\n")
    write_textfile(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["seed.prom"]


# --- the device (root) -----------------------------------------------------------------------


def test_the_device_takes_the_largest_addition() -> None:
    """4096 bytes, more than the 1024 fcntl.ioctl copies for an immutable argument."""
    _require_root()
    with EntropyDevice(Path("/dev/random")) as device:
        device.add(os.urandom(MAX_BYTES), 0)


def test_a_device_that_is_not_a_random_device_is_refused() -> None:
    """/dev/null opens for writing but does not know RNDADDENTROPY."""
    with pytest.raises(DeviceError, match="not a random device"):
        EntropyDevice(Path("/dev/null"))


def test_a_missing_device_is_refused(tmp_path: Path) -> None:
    """One line naming the path."""
    with pytest.raises(DeviceError, match=r"cannot open .*missing for writing"):
        EntropyDevice(tmp_path / "missing")


# --- the seeder, in process: a MockTransport gateway, a fake device ------------------------


@dataclass
class FakeDevice:
    """Records what would have gone to the kernel."""

    path: Path = Path("/dev/fake-random")
    added: list[tuple[bytes, int]] = field(default_factory=list)

    def add(self, data: bytes, credit_bits: int) -> None:
        self.added.append((data, credit_bits))


Handler = Callable[[httpx.Request], httpx.Response]


def _gateway(served: list[bytes], fail: Callable[[int], bool] = lambda n: False) -> Handler:
    """A gateway that serves fresh bytes (recorded in ``served``), except for draws ``n``
    (counted from 1) for which ``fail(n)`` holds: those get no answer at all."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json={})
        draw = len(served) + 1
        served.append(b"")
        if fail(draw):
            raise httpx.ConnectError("connection refused", request=request)
        served[-1] = os.urandom(int(request.url.params["bytes"]))
        return httpx.Response(200, content=served[-1])

    return handle


def _client(handler: Handler) -> Client:
    return Client("http://127.0.0.1:7764", KEY, max_wait=0, transport=httpx.MockTransport(handler))


def _options(**changes: Any) -> SeedOptions:
    return replace(SeedOptions(url="http://127.0.0.1:7764", api_key=KEY), **changes)


def test_a_draw_is_mixed_added_credited_counted_and_written(tmp_path: Path) -> None:
    """The device gets as many bytes as drawn, not the drawn bytes themselves (they were
    mixed), with the credit; the counters carry on from where they were."""
    served: list[bytes] = []
    device = FakeDevice()
    textfile = tmp_path / "seed.prom"
    options = _options(count=32, credit_bits=16, textfile=textfile)
    with _client(_gateway(served)) as client:
        seeder = Seeder(options, client, device, SeedStats(bytes_added=10, failures=1))
        seeder.seed()
    ((data, bits),) = device.added
    assert (len(data), bits) == (32, 16)
    assert data != served[0]
    assert seeder.stats == SeedStats(42, 16, 1, seeder.stats.last_success_s)
    assert time.time() - seeder.stats.last_success_s < 60
    assert parse_textfile(textfile.read_text()) == seeder.stats


def test_a_draw_reaches_the_kernel() -> None:
    """The same through the real device: 4096 bytes, past fcntl's 1024 for immutable args."""
    _require_root()
    with _client(_gateway([])) as client, EntropyDevice(Path("/dev/random")) as device:
        seeder = Seeder(_options(count=MAX_BYTES), client, device, SeedStats())
        seeder.seed()
    assert seeder.stats.bytes_added == MAX_BYTES


def test_once_without_an_answer_is_one_line_counted_and_nothing_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 1, the kind of failure on the line, the failure in the textfile."""
    device = FakeDevice()
    textfile = tmp_path / "seed.prom"
    with _client(_gateway([], fail=lambda n: True)) as client:
        seeder = Seeder(_options(textfile=textfile), client, device, SeedStats())
        assert seeder.once() == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("qrng-dd seed: no bytes from the gateway (unreachable): ")
    assert device.added == []
    assert parse_textfile(textfile.read_text()) == SeedStats(failures=1)


def test_once_with_an_answer_is_exit_status_0() -> None:
    """One addition."""
    device = FakeDevice()
    with _client(_gateway([])) as client:
        assert Seeder(_options(), client, device, SeedStats()).once() == 0
    assert len(device.added) == 1


def test_the_daemon_carries_on_after_failures_until_stopped() -> None:
    """Draws 2 and 3 fail; the loop goes on, and ends (status 0) once ``stop`` is set."""
    stop = threading.Event()
    served: list[bytes] = []

    def fail(draw: int) -> bool:
        if draw == 5:
            stop.set()
        return draw in (2, 3)

    device = FakeDevice()
    with _client(_gateway(served, fail)) as client:
        seeder = Seeder(_options(interval_s=0.001), client, device, SeedStats())
        assert seeder.forever(stop) == 0
    assert len(served) == 5
    assert len(device.added) == 3
    assert (seeder.stats.bytes_added, seeder.stats.failures) == (3 * 64, 2)


def test_a_textfile_that_cannot_be_written_does_not_stop_the_seeder(tmp_path: Path) -> None:
    """The addition happened; the textfile is only a report of it."""
    device = FakeDevice()
    textfile = tmp_path / "gone" / "seed.prom"
    with _client(_gateway([])) as client:
        seeder = Seeder(_options(textfile=textfile), client, device, SeedStats())
        seeder.seed()
    assert len(device.added) == 1
    assert not textfile.exists()


def test_stats_load_from_an_earlier_textfile_or_start_at_zero(tmp_path: Path) -> None:
    """No textfile, a missing one, an existing one."""
    path = tmp_path / "seed.prom"
    assert load_stats(None) == load_stats(path) == SeedStats()
    path.write_text(render_textfile(SeedStats(bytes_added=7)))
    assert load_stats(path) == SeedStats(bytes_added=7)


def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The target is a non-empty directory: the error comes out, the directory stays clean."""
    target = tmp_path / "seed.prom"
    target.mkdir()
    (target / "inside").write_text("")
    with pytest.raises(OSError, match=r"seed\.prom"):
        write_textfile(target, "x\n")
    assert [p.name for p in tmp_path.iterdir()] == ["seed.prom"]


def test_sigterm_and_sigint_set_the_stop_event_and_the_handlers_come_back() -> None:
    """The daemon waits on an Event; a signal only sets it."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        stop = threading.Event()
        with _stop_on_signals(stop):
            os.kill(os.getpid(), sig)
            assert stop.wait(5)
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.EPERM, "(EPERM): adding entropy needs CAP_SYS_ADMIN"),
        (errno.ENOTTY, "it is not a random device"),
        (errno.EINVAL, "it is not a random device"),
        (errno.EIO, "refused RNDADDENTROPY: Input/output error"),
    ],
)
def test_a_refused_ioctl_is_explained(code: int, says: str) -> None:
    """The likely causes get their fix on the line."""
    assert says in _refusal(Path("/dev/random"), OSError(code, os.strerror(code)))


def test_a_textfile_in_a_missing_directory_is_refused() -> None:
    """Found at start, not after the first draw."""
    with pytest.raises(ConfigError, match=r"^--textfile: directory /nonexistent does not exist"):
        parse_options(_args("--textfile", "/nonexistent/seed.prom"), {"QRNG_GATEWAY_API_KEY": KEY})


# --- the command line ------------------------------------------------------------------------


def _run(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = clean_environ({"QRNG_GATEWAY_API_KEY": KEY} if env is None else env)
    return subprocess.run(
        cli("seed", *argv),
        env=environ,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qrng-dd seed: "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


_BAD_OPTIONS: list[tuple[list[str], dict[str, str] | None, str]] = [
    ([], {}, "no API key"),
    ([], {"QRNG_GATEWAY_API_KEY": ""}, "no API key"),
    (["--api-key-file", "/nonexistent/key"], {}, "cannot read /nonexistent/key"),
    (["--interval", "0"], None, "--interval"),
    (["--interval", "-1"], None, "--interval"),
    (["--interval=-1"], None, "--interval"),
    (["--interval", "nan"], None, "--interval"),
    (["--interval", "inf"], None, "--interval"),
    (["--interval", "abc"], None, "--interval"),
    (["--bytes", "0"], None, "--bytes"),
    (["--bytes", "4097"], None, "--bytes"),
    (["--bytes", "abc"], None, "--bytes"),
    (["--bytes", "8", "--credit-bits", "65"], None, "--credit-bits"),
    (["--credit-bits", "-1"], None, "--credit-bits"),
    (["--gateway-url", "http://192.0.2.1:7764"], None, "--allow-insecure-http"),
    ([], {"QRNG_GATEWAY_API_KEY": KEY, "QRNG_GATEWAY_URL": "http://qrng.example"}, "clear text"),
    (["--gateway-url", "file:///dev/zero"], None, "not an http(s)://"),
    (["--textfile", "/nonexistent/seed.prom"], None, "--textfile"),
    (["--ca-file", "/nonexistent/ca.pem"], None, "--ca-file: cannot load /nonexistent/ca.pem"),
    (["--ca-file", "/etc/hostname"], None, "--ca-file: cannot load /etc/hostname"),
]


@pytest.mark.parametrize(("argv", "env", "says"), _BAD_OPTIONS)
def test_a_bad_option_is_one_line_and_exit_status_2(
    argv: list[str], env: dict[str, str] | None, says: str
) -> None:
    """Never a traceback, never the usage text, never the key."""
    result = _run("--once", *argv, env=env)
    assert result.returncode == 2, result.stderr
    assert says in _one_line(result)
    assert KEY not in result.stderr


def test_an_empty_key_file_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """A key file that holds no key is a bad option too."""
    (tmp_path / "key").write_text("\n")
    result = _run("--once", "--api-key-file", str(tmp_path / "key"), env={})
    assert result.returncode == 2
    assert "is empty" in _one_line(result)


#: Root without CAP_SYS_ADMIN: drop it from the bounding set (prctl PR_CAPBSET_DROP = 24,
#: CAP_SYS_ADMIN = 21), then exec the CLI, which starts with the capability gone.
_WITHOUT_SYS_ADMIN = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(24, 21, 0, 0, 0) != 0:
    sys.exit(f"cannot drop CAP_SYS_ADMIN: errno {ctypes.get_errno()}")
os.execv(sys.executable, [sys.executable, "-m", "qrng_dd.cli", "seed", *sys.argv[1:]])
"""


def test_without_cap_sys_admin_the_device_is_refused_before_any_draw() -> None:
    """One line naming EPERM and the capability, exit status 1; the gateway (here: a closed
    port) is never asked, or the line would be about the gateway."""
    _require_root()
    argv = ["--once", "--gateway-url", f"http://127.0.0.1:{free_port()}"]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SYS_ADMIN, *argv],
        env=clean_environ({"QRNG_GATEWAY_API_KEY": KEY}),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    line = _one_line(result)
    assert "EPERM" in line
    assert "CAP_SYS_ADMIN" in line


# --- against a real gateway ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with start_gateway() as gateway:
        push_packets(gateway.url, gateway.key, 8, 4096)
        yield gateway


def _served(gw: RunningGateway) -> int:
    return int(gw.status()["total_bytes_served"])


def _env(gw: RunningGateway, key: str | None = None) -> dict[str, str]:
    return {"QRNG_GATEWAY_URL": gw.url, "QRNG_GATEWAY_API_KEY": key or gw.api_key}


def _textfile_samples(path: Path) -> dict[str, float]:
    try:
        return _samples(path.read_text())
    except FileNotFoundError:
        return {}


def _log_events(stderr: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines()]
    return events


@pytest.mark.e2e
def test_once_adds_64_bytes_from_the_gateway_to_the_kernel(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """Exit 0, one log line saying 64 bytes were added and 0 bits credited, exactly 64 bytes
    served by the gateway, and the textfile's counters."""
    _require_root()
    textfile = tmp_path / "seed.prom"
    before = _served(gw)
    started = time.time()
    result = _run(
        "--once", "--bytes", "64", "--credit-bits", "0", "--textfile", str(textfile),
        env=_env(gw),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (event,) = _log_events(result.stderr)
    assert event["event"] == "entropy_added"
    assert (event["bytes_added"], event["bits_credited"]) == (64, 0)
    assert gw.api_key not in result.stderr
    assert _served(gw) - before == 64
    samples = _samples(textfile.read_text())
    assert samples["qrng_seed_bytes_added_total"] == 64
    assert samples["qrng_seed_bits_credited_total"] == 0
    assert samples["qrng_seed_failures_total"] == 0
    assert started <= samples["qrng_seed_last_success_timestamp_seconds"] <= time.time()


@pytest.mark.e2e
def test_a_wrong_key_in_once_mode_is_one_line_and_exit_status_1(gw: RunningGateway) -> None:
    """The gateway's 401 as one line; nothing served."""
    before = _served(gw)
    wrong = "w" * 32
    result = _run("--once", env=_env(gw, key=wrong))
    assert result.returncode == 1
    assert "(unauthorized)" in _one_line(result)
    assert wrong not in result.stderr
    assert _served(gw) == before


@pytest.mark.e2e
def test_an_unreachable_gateway_in_once_mode_is_one_line_and_counted(tmp_path: Path) -> None:
    """Exit 1 with one line; the textfile counts the failure on top of the earlier counters."""
    _require_root()
    textfile = tmp_path / "seed.prom"
    earlier = SeedStats(bytes_added=640, bits_credited=16, failures=2, last_success_s=1.5e9)
    textfile.write_text(render_textfile(earlier))
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("--once", "--gateway-url", url, "--textfile", str(textfile))
    assert result.returncode == 1
    line = _one_line(result)
    assert "(unreachable)" in line
    assert url in line
    assert parse_textfile(textfile.read_text()) == earlier.failed()


def _start_daemon(
    tmp_path: Path, env: Mapping[str, str], *argv: str
) -> tuple[subprocess.Popen[bytes], Path]:
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(cli("seed", *argv), env=clean_environ(env), stderr=sink)
    return proc, stderr


@pytest.mark.e2e
def test_the_daemon_adds_every_interval_and_stops_on_sigterm(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """At least two additions of 64 bytes (counted in the textfile and by the gateway), then
    exit status 0 on SIGTERM; the key comes from a file and never reaches the log."""
    _require_root()
    key_file = tmp_path / "key"
    key_file.write_text(gw.api_key + "\n")
    textfile = tmp_path / "seed.prom"
    before = _served(gw)
    proc, stderr = _start_daemon(
        tmp_path, {"QRNG_GATEWAY_URL": gw.url}, "--interval", "0.2",
        "--api-key-file", str(key_file), "--textfile", str(textfile),
    )  # fmt: skip
    try:
        wait_until(
            lambda: _textfile_samples(textfile).get("qrng_seed_bytes_added_total", 0) >= 128,
            deadline_s=30,
            what="two additions",
        )
        assert proc.poll() is None
    finally:
        status = stop(proc)
    assert status == 0, stderr.read_text()
    events = _log_events(stderr.read_text())
    added = [e for e in events if e["event"] == "entropy_added"]
    assert len(added) >= 2
    assert all(e["bytes_added"] == 64 and e["bits_credited"] == 0 for e in added)
    assert events[0]["event"] == "seed_started"
    assert events[-1]["event"] == "seed_stopped"
    assert gw.api_key not in stderr.read_text()
    samples = _textfile_samples(textfile)
    assert samples["qrng_seed_failures_total"] == 0
    assert _served(gw) - before == samples["qrng_seed_bytes_added_total"] == 64 * len(added)


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_daemon_keeps_going_while_the_gateway_is_unreachable(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Failures are logged and counted, the process stays up, and stops cleanly on a signal."""
    _require_root()
    textfile = tmp_path / "seed.prom"
    proc, stderr = _start_daemon(
        tmp_path, {"QRNG_GATEWAY_API_KEY": KEY}, "--interval", "0.2", "--textfile",
        str(textfile), "--gateway-url", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    try:
        wait_until(
            lambda: _textfile_samples(textfile).get("qrng_seed_failures_total", 0) >= 2,
            deadline_s=30,
            what="two failures",
        )
        assert proc.poll() is None
        proc.send_signal(signum)
        status = proc.wait(timeout=PROCESS_TIMEOUT_S)
    finally:
        stop(proc)
    assert status == 0, stderr.read_text()
    events = _log_events(stderr.read_text())
    failed = [e for e in events if e["event"] == "seed_failed"]
    assert len(failed) >= 2
    assert all(e["kind"] == "unreachable" for e in failed)
    assert events[-1]["event"] == "seed_stopped"
    assert _textfile_samples(textfile)["qrng_seed_bytes_added_total"] == 0


@pytest.mark.e2e
def test_a_gateway_behind_a_private_ca_needs_ca_file(tmp_path: Path) -> None:
    """With --ca-file naming the CA the draw succeeds over https://; without it the
    certificate is refused, one line and exit status 1, and nothing is served."""
    _require_root()
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {"QRNG_TLS_CERT_FILE": str(cert), "QRNG_TLS_KEY_FILE": str(key)}
    with start_gateway(tls, ssl_context=ssl.create_default_context(cafile=ca_file)) as gateway:
        with gateway.client() as client:
            push_packets(gateway.url, gateway.key, 1, 4096, client=client)
        refused = _run("--once", env=_env(gateway))
        assert refused.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in _one_line(refused)
        assert _served(gateway) == 0
        trusted = _run("--once", "--ca-file", str(ca_file), env=_env(gateway))
        assert trusted.returncode == 0, trusted.stderr
        assert _served(gateway) == 64
