"""Serving the simulator: uvicorn in the caller's loop, TLS, the ``qrng-dd appliance`` command.

Theory of operation
-------------------
`serve_appliance` runs the app (`qrng_dd.simulator.app`) under uvicorn inside the caller's event
loop (the all-in-one demo embeds it), optionally over HTTPS with a self-signed certificate it
generates for 127.0.0.1 and localhost (`generate_self_signed`; the path is published on
`ApplianceAddress.cert_path`, the private key file is deleted as soon as uvicorn has loaded it).
The listening socket is bound by `qrng_dd.net.bind`, so a busy port raises ``OSError`` in the
caller's code. A SIGINT or SIGTERM is re-raised only after that cleanup. `add_arguments` and
`run` are the ``qrng-dd appliance`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import anyio
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette

from qrng_dd.net import bind
from qrng_dd.simulator.app import create_app
from qrng_dd.simulator.faults import Faults

__all__ = [
    "ApplianceAddress",
    "add_arguments",
    "generate_self_signed",
    "run",
    "serve_appliance",
]

log = logging.getLogger(__name__)


def generate_self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1, ::1 and localhost into `directory`.

    Appliances ship self-signed certificates (DESIGN §6); this one lets the collector's
    ``QRNG_APPLIANCE_CA_FILE`` path be tested for real. The certificate is its own trust
    anchor, so it carries the extensions a strict verifier (``VERIFY_X509_STRICT``) wants. The
    key file is created with mode 0600 and its contents are never logged.

    Args:
        directory: an existing directory, private to the caller.

    Returns:
        ``(cert_path, key_path)``, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qrng-dd appliance simulator")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "appliance-cert.pem"
    key_path = directory / "appliance-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_pem)
    return cert_path, key_path


@dataclass
class ApplianceAddress:
    """Where a running simulator listens; `serve_appliance` fills it in before `ready` is set.

    Attributes:
        url: base URL, e.g. ``https://127.0.0.1:8443``, with the real port when 0 was asked.
        port: the bound port.
        cert_path: the certificate a client must trust when serving TLS, else None. The file
            lives only as long as the server runs.
    """

    url: str = ""
    port: int = 0
    cert_path: Path | None = None


class _Server(uvicorn.Server):
    """A uvicorn server that reports when it listens and leaves signal re-raising to us.

    uvicorn re-raises a captured SIGINT/SIGTERM as soon as it has shut down, and the default
    SIGTERM action ends the process on the spot, before `serve_appliance` could remove its
    temporary directory. So this server only records the signals; `serve_appliance` re-raises
    them after its cleanup, and an embedding program still sees them.
    """

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = started
        self.signals: list[int] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signal handlers can be installed from the main thread only, as in uvicorn.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _load_config(app: Starlette, certfile: str | None, keyfile: str | None) -> uvicorn.Config:
    """Build and load the uvicorn config, then delete the key file, now held in memory (P6).

    Synchronous on purpose: it runs once at start and takes milliseconds.
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    config.load()
    if keyfile is not None:
        Path(keyfile).unlink()
    return config


async def serve_appliance(
    host: str,
    port: int,
    *,
    tls: bool,
    faults: Faults,
    ready: anyio.Event | None = None,
    address: ApplianceAddress | None = None,
) -> None:
    """Serve the simulator until cancelled (or, when run in the main thread, SIGINT/SIGTERM).

    Runs uvicorn inside the current event loop, so a caller can embed it next to a collector
    and a gateway. With `tls`, a fresh self-signed certificate is generated into a temporary
    directory that is removed when the server stops.

    Args:
        host: address to listen on.
        port: port to listen on; 0 picks a free one (see `address`).
        tls: serve HTTPS with a generated self-signed certificate.
        faults: the faults to apply, shared with the caller.
        ready: set once the server accepts connections.
        address: filled in with the URL, real port and certificate path before `ready` is set.

    Raises:
        OSError: the address cannot be bound.
    """
    address = address if address is not None else ApplianceAddress()
    faults.validate()
    with contextlib.ExitStack() as stack:
        certfile = keyfile = None
        if tls:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qrng-dd-appliance-"))
            cert_path, key_path = generate_self_signed(Path(tmp))
            certfile, keyfile = str(cert_path), str(key_path)
            address.cert_path = cert_path
        sock = stack.enter_context(bind(host, port))
        address.port = sock.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        address.url = f"{'https' if tls else 'http'}://{shown_host}:{address.port}"
        config = _load_config(create_app(faults), certfile, keyfile)

        def started() -> None:
            log.warning(
                "appliance SIMULATOR (not quantum: bytes from os.urandom) listening on %s%s",
                address.url,
                f"; trust {address.cert_path}" if address.cert_path else "",
            )
            if ready is not None:
                ready.set()

        server = _Server(config, started)
        try:
            await server.serve(sockets=[sock])
        except anyio.get_cancelled_exc_class():
            # Cancelled mid-run: close the listener and connections before unwinding, or
            # the event loop keeps serving a socket that its owner believes closed.
            server.should_exit = True
            if server.started:
                with anyio.CancelScope(shield=True):
                    await server.shutdown(sockets=[sock])
            raise
    # Cleaned up; now let a SIGINT or SIGTERM that stopped us act as it would have.
    for sig in reversed(server.signals):
        signal.raise_signal(sig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``qrng-dd appliance`` options (DESIGN §9) to `parser`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on")
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a generated self-signed certificate"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, metavar="F", help="fraction answered 500"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, metavar="N", help="delay added to each request"
    )
    parser.add_argument("--stuck", action="store_true", help="emit one repeated byte value")
    parser.add_argument(
        "--bias", type=float, default=0.0, metavar="F", help="each bit is 1 with P = 0.5 + F/2"
    )
    parser.add_argument(
        "--max-bitrate", type=int, default=0, metavar="BPS", help="bit-rate cap, 0 = none"
    )
    parser.add_argument(
        "--repeat",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of draws that replay earlier output (last 1 MiB)",
    )
    parser.add_argument(
        "--drift", type=float, default=0.0, metavar="F", help="bias gained per MiB served"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``qrng-dd appliance`` with parsed `args` until interrupted.

    Returns:
        0 after a clean stop, 1 if the port cannot be bound, 2 for a bad option.
    """
    faults = Faults(
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        stuck=args.stuck,
        bias=args.bias,
        max_bitrate=args.max_bitrate,
        repeat=args.repeat,
        drift=args.drift,
    )
    try:
        faults.validate()
    except ValueError as err:
        option, _, rest = str(err).partition(" ")
        print(f"qrng-dd appliance: --{option.replace('_', '-')} {rest}", file=sys.stderr)
        return 2

    async def main() -> None:
        await serve_appliance(args.host, args.port, tls=args.tls, faults=faults)

    try:
        anyio.run(main)
    except OSError as err:
        print(
            f"qrng-dd appliance: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0
