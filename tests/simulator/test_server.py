"""Tests for serving the simulator (`qrng_dd.simulator.server`): TLS and ``qrng-dd appliance``."""

from __future__ import annotations

import argparse
import socket
import ssl
from pathlib import Path

import anyio
import httpx
import pytest

from qrng_dd.simulator import server
from qrng_dd.simulator.faults import Faults
from qrng_dd.simulator.server import (
    ApplianceAddress,
    add_arguments,
    generate_self_signed,
    run,
    serve_appliance,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_arguments_have_the_documented_defaults() -> None:
    """Defaults are plain HTTP on 127.0.0.1:8443 with no faults (DESIGN §9)."""
    args = _parse()
    assert (args.host, args.port, args.tls) == ("127.0.0.1", 8443, False)
    assert (args.error_rate, args.latency_ms, args.stuck, args.bias, args.max_bitrate) == (
        0.0,
        0,
        False,
        0.0,
        0,
    )
    assert (args.repeat, args.drift) == (0.0, 0.0)
    args = _parse("--tls", "--stuck", "--bias", "0.2", "--max-bitrate", "4000000")
    assert (args.tls, args.stuck, args.bias, args.max_bitrate) == (True, True, 0.2, 4_000_000)
    args = _parse("--repeat", "0.25", "--drift", "0.01")
    assert (args.repeat, args.drift) == (0.25, 0.01)


def test_cli_passes_repeat_and_drift_to_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """run builds its Faults from --repeat and --drift, next to the older fault options."""
    served: list[Faults] = []

    async def fake_serve(host: str, port: int, *, tls: bool, faults: Faults) -> None:
        served.append(faults)

    monkeypatch.setattr(server, "serve_appliance", fake_serve)
    assert run(_parse("--repeat", "0.5", "--drift", "2", "--bias", "0.1")) == 0
    assert served == [Faults(bias=0.1, repeat=0.5, drift=2.0)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bias", "1.5"], "qrng-dd appliance: --bias must be between 0 and 1\n"),
        (["--error-rate", "-0.1"], "qrng-dd appliance: --error-rate must be between 0 and 1\n"),
        (["--latency-ms", "-1"], "qrng-dd appliance: --latency-ms must be between 0 and "),
        (["--max-bitrate", "-1"], "qrng-dd appliance: --max-bitrate must be at least 0\n"),
        (["--bias", "nan"], "qrng-dd appliance: --bias must be between 0 and 1\n"),
        (["--repeat", "1.5"], "qrng-dd appliance: --repeat must be between 0 and 1\n"),
        (["--drift", "-0.1"], "qrng-dd appliance: --drift must be a finite number, at least 0\n"),
        (["--drift", "inf"], "qrng-dd appliance: --drift must be a finite number, at least 0\n"),
    ],
)
def test_cli_refuses_bad_fault_values_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option prints one line naming it and returns 2 without serving."""
    assert run(_parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_cli_reports_a_busy_port_and_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use is one clear line and exit status 1, not a traceback."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        assert run(_parse("--port", str(port))) == 1
    assert capsys.readouterr().err.startswith(
        f"qrng-dd appliance: cannot listen on 127.0.0.1:{port}"
    )


def _strict_context(cafile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@pytest.mark.anyio
async def test_served_over_https_with_a_certificate_the_client_can_trust() -> None:
    """serve_appliance(tls=True) on a free port answers over HTTPS, verified against its cert."""
    ready = anyio.Event()
    address = ApplianceAddress()
    faults = Faults()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve_tls, faults, ready, address)
            await ready.wait()
            assert address.url == f"https://127.0.0.1:{address.port}"
            assert address.cert_path is not None
            cert_path: Path = address.cert_path
            key_path = anyio.Path(cert_path.parent / "appliance-key.pem")
            assert not await key_path.exists(), "the key must not stay on disk once loaded"
            context = _strict_context(str(cert_path))
            async with httpx.AsyncClient(base_url=address.url, verify=context) as client:
                response = await client.get("/api/2.0/streambytes", params={"size": 1024})
                posted = await client.post("/sim/faults", json={"stuck": True})
                stuck = await client.get("/api/2.0/streambytes", params={"size": 32})
            tg.cancel_scope.cancel()
    assert response.status_code == 200
    assert len(response.content) == 1024
    assert posted.json()["stuck"] is True
    assert len(set(stuck.content)) == 1
    assert not await anyio.Path(cert_path).exists()


async def _serve_tls(faults: Faults, ready: anyio.Event, address: ApplianceAddress) -> None:
    await serve_appliance("127.0.0.1", 0, tls=True, faults=faults, ready=ready, address=address)


def test_self_signed_key_file_is_private(tmp_path: Path) -> None:
    """The generated private key is readable by its owner only."""
    _, key_path = generate_self_signed(tmp_path)
    assert key_path.stat().st_mode & 0o077 == 0
