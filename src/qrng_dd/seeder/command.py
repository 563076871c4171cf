"""``qrng-dd seed``: the command, the one-shot run and the daemon (see the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Final

import structlog

from qrng_dd import logs
from qrng_dd.client import Client, ClientError
from qrng_dd.client.protocol import DEFAULT_URL, KEY_VARIABLE, URL_VARIABLE
from qrng_dd.errors import ConfigError
from qrng_dd.seeder.kernel import DeviceError, EntropyDevice, EntropySink, mix
from qrng_dd.seeder.options import (
    MAX_BYTES,
    SeedOptions,
    check_api_key,
    check_url,
    parse_count,
    parse_credit,
    parse_interval,
)
from qrng_dd.seeder.stats import SeedStats, load_stats, render_textfile, write_textfile

log = structlog.get_logger("qrng_dd.seeder")

#: Seconds for each request to the gateway.
TIMEOUT_S: Final = 10.0
#: Seconds one draw may wait on the gateway's ``Retry-After`` (429, 503) before it fails.
MAX_WAIT_S: Final = 30.0
_PREFIX: Final = "qrng-dd seed"


# --- I/O -------------------------------------------------------------------------------------


def read_api_key(path: Path | None, environ: Mapping[str, str]) -> str:
    """The API key: from ``path`` if given, else from ``QRNG_GATEWAY_API_KEY``.

    Raises:
        ConfigError: no key, or the file cannot be read, or it does not hold one key.
    """
    if path is None:
        if not environ.get(KEY_VARIABLE):
            msg = f"no API key: set {KEY_VARIABLE} or pass --api-key-file"
            raise ConfigError(msg)
        return check_api_key(environ[KEY_VARIABLE], KEY_VARIABLE)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        msg = f"--api-key-file: cannot read {path}: {reason}"
        raise ConfigError(msg) from err
    return check_api_key(text, f"--api-key-file {path}")


def parse_options(args: argparse.Namespace, environ: Mapping[str, str]) -> SeedOptions:
    """Checked options from the command line and the environment.

    Raises:
        ConfigError: the first option that is wrong, as one line.
    """
    count = parse_count(args.bytes)
    credit_bits = parse_credit(args.credit_bits, count)
    interval_s = parse_interval(args.interval)
    url = args.gateway_url or environ.get(URL_VARIABLE) or DEFAULT_URL
    url = check_url(url, allow_insecure_http=args.allow_insecure_http)
    if args.textfile is not None and not args.textfile.parent.is_dir():
        msg = f"--textfile: directory {args.textfile.parent} does not exist"
        raise ConfigError(msg)
    return SeedOptions(
        url=url,
        api_key=read_api_key(args.api_key_file, environ),
        count=count,
        interval_s=interval_s,
        once=args.once,
        credit_bits=credit_bits,
        device=args.device,
        textfile=args.textfile,
        ca_file=args.ca_file,
        log_format=args.log_format,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Seeder:
    """Draws from the gateway, mixes, adds to the device, counts."""

    def __init__(
        self, options: SeedOptions, client: Client, device: EntropySink, stats: SeedStats
    ) -> None:
        self.options = options
        self.client = client
        self.device = device
        self.stats = stats

    def seed(self) -> None:
        """One draw and addition.

        Raises:
            ClientError: the gateway gave no bytes; nothing was added, the failure is counted.
            DeviceError: the kernel refused them.
        """
        count, bits = self.options.count, self.options.credit_bits
        try:
            quantum = self.client.random_bytes(count)
        except ClientError:
            self.stats = self.stats.failed()
            self._save()
            raise
        self.device.add(mix(quantum, os.urandom(count)), bits)
        self.stats = self.stats.added(count, bits, time.time())
        self._save()
        log.info(
            "entropy_added", bytes_added=count, bits_credited=bits, device=str(self.device.path)
        )

    def once(self) -> int:
        """:meth:`seed` for a one-shot run: 0, or 1 after one line on stderr."""
        try:
            self.seed()
        except ClientError as err:
            _print(f"no bytes from the gateway ({err.kind}): {_one_line(str(err))}")
            return 1
        return 0

    def forever(self, stop: threading.Event) -> int:
        """:meth:`seed` every interval until ``stop`` is set; a gateway failure waits for the
        next interval. Returns 0."""
        options = self.options
        log.info(
            "seed_started",
            gateway=options.url,
            bytes=options.count,
            credit_bits=options.credit_bits,
            interval_s=options.interval_s,
            device=str(options.device),
        )
        while not stop.is_set():
            try:
                self.seed()
            except ClientError as err:
                log.warning(
                    "seed_failed",
                    kind=err.kind,
                    error=_one_line(str(err)),
                    failures_total=self.stats.failures,
                )
            stop.wait(options.interval_s)
        log.info("seed_stopped", bytes_added_total=self.stats.bytes_added)
        return 0

    def _save(self) -> None:
        if self.options.textfile is None:
            return
        try:
            write_textfile(self.options.textfile, render_textfile(self.stats))
        except OSError as err:
            log.warning("textfile_failed", path=str(self.options.textfile), error=str(err))


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM or SIGINT for the duration; the old handlers come back after."""

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print(line: str) -> None:
    print(f"{_PREFIX}: {line}", file=sys.stderr)


# --- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Numbers are taken as text and checked in run(): a ConfigError is one line on stderr,
    # where an argparse type error would print the usage too.
    parser.add_argument(
        "--gateway-url",
        metavar="URL",
        help=f"the gateway (default ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the API key (default ${KEY_VARIABLE}; never on the command line)",
    )
    parser.add_argument(
        "--bytes", default="64", metavar="N", help=f"bytes per draw, 1..{MAX_BYTES} (64)"
    )
    parser.add_argument(
        "--interval", default="300", metavar="SECONDS", help="seconds between draws (300)"
    )
    parser.add_argument(
        "--once", action="store_true", help="one draw, then exit (for boot or a timer)"
    )
    parser.add_argument(
        "--credit-bits",
        default="0",
        metavar="N",
        help="entropy credited to the kernel per draw, 0..8*bytes (0: mix only, trust nothing)",
    )
    parser.add_argument(
        "--device", type=Path, default=Path("/dev/random"), help="the device (/dev/random)"
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow http:// to a host other than loopback (the key and bytes travel in clear)",
    )
    parser.add_argument(
        "--textfile", type=Path, metavar="PATH", help="node-exporter textfile to write"
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        metavar="PATH",
        help="CA bundle (PEM) to trust for an https:// gateway (default: the system's)",
    )
    parser.add_argument("--log-format", choices=("json", "console"), default="json", help="(json)")


def _trust(ca_file: Path | None) -> bool | ssl.SSLContext:
    """TLS trust for the gateway: the system's CAs, or only those in ``ca_file``.

    Raises:
        ConfigError: ``ca_file`` cannot be read or holds no PEM certificate.
    """
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        msg = f"--ca-file: cannot load {ca_file}: {err.strerror or err}"
        raise ConfigError(msg) from err


def run(args: argparse.Namespace) -> int:
    """Seed once or until SIGTERM/SIGINT.

    Returns 0 on success, 1 when the gateway gave nothing (``--once``) or the device refused.

    Raises:
        ConfigError: a bad option (the CLI prints it as one line, exit status 2).
    """
    options = parse_options(args, os.environ)
    verify = _trust(options.ca_file)
    logs.configure(options.log_format)
    # httpx logs every request at INFO: two lines per draw that say nothing the seeder's own
    # line does not, and --once promises one line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        device = EntropyDevice(options.device)
    except DeviceError as err:
        _print(str(err))
        return 1
    # A daemon waits on Retry-After no longer than its interval: the next draw comes anyway.
    max_wait = MAX_WAIT_S if options.once else min(MAX_WAIT_S, options.interval_s)
    client = Client(
        options.url,
        options.api_key,
        timeout=TIMEOUT_S,
        max_wait=max_wait,
        verify=verify,
    )
    with device, client:
        seeder = Seeder(options, client, device, load_stats(options.textfile))
        try:
            if options.once:
                return seeder.once()
            stop = threading.Event()
            with _stop_on_signals(stop):
                return seeder.forever(stop)
        except DeviceError as err:
            _print(str(err))
            return 1
