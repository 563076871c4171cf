"""Scale-out: three gateways behind nginx, fed by one collector with split fan-out.

Real processes on loopback: the simulator, one collector pushing to gateway ids g0, g1, g2
(each id gets different bytes), three gateways sharing the HMAC key and the API key, and nginx
(the Debian package) load-balancing clients over them. Checks that every gateway is fed and
serves, that no 16-byte block is ever served twice across the three, and that nginx routes
around a stopped gateway.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.diode import Running, eventually, run_process, start_appliance, start_collector
from tests.support.gateway import RunningGateway, clean_environ, free_port, start_gateway

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
GATEWAY_IDS = ("g0", "g1", "g2")
REQUEST_BYTES = 4096
POOL_BYTES = 4 * 1024 * 1024
#: Filled to this before any client request: far more than the load below takes from any one.
FILL_BYTES = 1024 * 1024
REQUESTS_PER_PHASE = 150
CLIENTS = 4

NGINX_CONF = """\
# Written by tests/test_scaleout.py. Everything lives under the test's tmp_path.
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    # Open-source nginx has no active health checks (that is NGINX Plus' `health_check`);
    # what it offers are passive ones: a gateway that fails one request (max_fails=1: refused
    # connection, timeout, or a 503 listed in proxy_next_upstream) is left out for
    # fail_timeout, and the failed request is retried on the next gateway. A 503 from a
    # gateway means "pool empty, nothing taken" (DESIGN P4), so retrying it elsewhere can
    # never serve a byte twice; retries are GET-only (nginx never retries a POST by default).
    upstream qrng_gateways {{
{servers}
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://qrng_gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
    }}
}}
"""


def _nginx_conf(prefix: Path, port: int, gateways: list[RunningGateway]) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{gw.port} max_fails=1 fail_timeout=30s;" for gw in gateways
    )
    # As root, nginx would run its worker as `nobody`, which cannot reach pytest's 0700
    # tmp_path; run it as whoever runs the test (ignored, with a warning, when not root).
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    return NGINX_CONF.format(user=user, prefix=prefix, port=port, servers=servers)


@contextlib.contextmanager
def _start_nginx(tmp_path: Path, gateways: list[RunningGateway]) -> Iterator[Running]:
    """nginx in the foreground (`daemon off`), load-balancing over ``gateways``."""
    assert NGINX is not None
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, port, gateways))
    argv = [NGINX, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    argv += ["-g", "daemon off;"]
    with run_process(argv, clean_environ({})) as nginx:
        nginx.url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if nginx.proc.poll() is not None:
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                raise AssertionError(f"nginx exited: {nginx.stderr()}{log}")
            try:
                return httpx.get(f"{nginx.url}/health", timeout=2).status_code in (200, 503)
            except httpx.TransportError:
                return False

        eventually(ready, what="nginx ready")
        yield nginx


def _enter_concurrently(
    stack: contextlib.ExitStack, managers: list[contextlib.AbstractContextManager[Any]]
) -> list[Any]:
    """Enter ``managers`` in parallel (each polls its process until ready); exit via ``stack``.

    Every manager that entered is registered on ``stack`` before the first failure is raised.
    """
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        values: list[Any] = []
        errors: list[Exception] = []
        for manager, future in zip(managers, futures, strict=True):
            try:
                values.append(future.result())
            except Exception as err:  # re-raised below, once cleanup is registered
                errors.append(err)
            else:
                stack.push(manager.__exit__)
    if errors:
        raise errors[0]
    return values


def _holds(gw: RunningGateway, n: int) -> bool:
    return int(gw.status()["buffer_bytes_available"]) >= n


def _accepted(status: dict[str, Any]) -> int:
    entry = status["sources"].get("collector")
    return int(entry["packets_accepted"]) if entry else 0


def _fetch_through(url: str, api_key: str, n: int) -> list[httpx.Response]:
    """``n`` requests of REQUEST_BYTES binary bytes through ``url``, CLIENTS at a time."""

    def one_client(count: int) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=10.0) as client:
            return [
                client.get(
                    "/api/random",
                    params={"bytes": REQUEST_BYTES, "encoding": "binary"},
                    headers={"Authorization": f"Bearer {api_key}"},
                )
                for _ in range(count)
            ]

    shares = [n // CLIENTS + (1 if i < n % CLIENTS else 0) for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        return [r for responses in pool.map(one_client, shares) for r in responses]


def _drain(gw: RunningGateway) -> list[bytes]:
    """Everything left in a gateway's pool, taken directly until it answers 503."""
    chunks: list[bytes] = []
    with gw.client() as c:
        while True:
            n = min(65536, gw.status()["buffer_bytes_available"]) or 1
            r = c.get("/api/random", params={"bytes": n, "encoding": "binary"}, headers=gw.auth)
            if r.status_code == 503:
                return chunks
            assert r.status_code == 200, r.text
            chunks.append(r.content)


def _assert_no_block_served_twice(chunks: list[bytes]) -> None:
    """No 16-byte block of any response occurs anywhere else, at any offset, in any response."""
    seen: dict[bytes, tuple[int, int]] = {}
    for i, chunk in enumerate(chunks):
        for offset in range(0, len(chunk) - 15, 16):
            block = chunk[offset : offset + 16]
            assert block not in seen, f"block served twice: response {i} and {seen[block][0]}"
            seen[block] = (i, offset)
    # A duplicate run need not be 16-byte aligned in both places: scan every offset.
    for i, chunk in enumerate(chunks):
        for offset in range(len(chunk) - 15):
            where = seen.get(chunk[offset : offset + 16])
            assert where is None or where == (i, offset), f"bytes served twice: {i}@{offset}"


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian package `nginx`)")
def test_three_gateways_behind_nginx_serve_every_byte_once_and_survive_one_stopping(
    tmp_path: Path,
) -> None:
    """nginx spreads load over 3 split-fed gateways; no block twice; one stopped, all still 200."""
    common = {
        "QRNG_HMAC_SECRET_KEY": secrets.token_hex(32),
        "QRNG_API_KEYS": secrets.token_urlsafe(24),
        "QRNG_BUFFER_SIZE": str(POOL_BYTES),
        # One API key for every client: the per-key limits must not be what this measures.
        "QRNG_RATE_LIMIT": "100000",
    }
    served: list[bytes] = []
    with contextlib.ExitStack() as stack:
        appliance, *gateways = _enter_concurrently(
            stack,
            [start_appliance()]
            + [start_gateway({**common, "QRNG_GATEWAY_ID": gid}) for gid in GATEWAY_IDS],
        )
        api_key = gateways[0].api_key
        push = ",".join(
            f"{gid}={gw.url}/push" for gid, gw in zip(GATEWAY_IDS, gateways, strict=True)
        )
        collector_env = {
            "QRNG_HMAC_SECRET_KEY": common["QRNG_HMAC_SECRET_KEY"],
            "QRNG_APPLIANCE_URLS": appliance.url,
            "QRNG_GATEWAY_PUSH_URL": push,
            "QRNG_FETCH_INTERVAL_MS": "20",
            "QRNG_FETCH_SIZE": "65536",
        }
        with start_collector(collector_env) as collector:
            for gw in gateways:
                eventually(partial(_holds, gw, FILL_BYTES), 30, f"{gw.url} filled")
            collector.proc.send_signal(signal.SIGTERM)
            assert collector.proc.wait(timeout=20) == 0, collector.stderr()
        before = [gw.status() for gw in gateways]
        assert all(_accepted(s) > 0 for s in before), before
        assert all(s["rejected_packets"]["wrong_dest"] == 0 for s in before)

        nginx = stack.enter_context(_start_nginx(tmp_path, gateways))

        # Phase 1: all three up. Round-robin gives each gateway a share of the requests.
        responses = _fetch_through(nginx.url, api_key, REQUESTS_PER_PHASE)
        assert [r.status_code for r in responses] == [200] * REQUESTS_PER_PHASE
        assert all(len(r.content) == REQUEST_BYTES for r in responses)
        served += [r.content for r in responses]
        after = [gw.status() for gw in gateways]
        for gid, status in zip(GATEWAY_IDS, after, strict=True):
            assert status["total_bytes_served"] > 0, f"{gid} served nothing through nginx"
            assert _accepted(status) > 0
        assert sum(s["total_bytes_served"] for s in after) == REQUESTS_PER_PHASE * REQUEST_BYTES

        # Phase 2: one gateway stopped. Its pool (memory only) is gone with it; the two
        # others still hold far more than this phase takes, so every request must succeed.
        stopped = gateways[1]
        stopped.proc.send_signal(signal.SIGTERM)
        stopped.proc.wait(timeout=20)
        survivors = [gateways[0], gateways[2]]
        available = sum(gw.status()["buffer_bytes_available"] for gw in survivors)
        assert available > 2 * REQUESTS_PER_PHASE * REQUEST_BYTES
        responses = _fetch_through(nginx.url, api_key, REQUESTS_PER_PHASE)
        assert [r.status_code for r in responses] == [200] * REQUESTS_PER_PHASE
        assert all(len(r.content) == REQUEST_BYTES for r in responses)
        served += [r.content for r in responses]
        # nginx did try the stopped gateway (passive check) and retried elsewhere.
        error_log = (tmp_path / "nginx" / "error.log").read_text()
        assert f"127.0.0.1:{stopped.port}" in error_log, error_log
        grown = sum(gw.status()["total_bytes_served"] for gw in survivors) - sum(
            after[i]["total_bytes_served"] for i in (0, 2)
        )
        assert grown == REQUESTS_PER_PHASE * REQUEST_BYTES

        # Everything the survivors still hold, taken directly.
        for gw in survivors:
            served += _drain(gw)
        final = [gw.status() for gw in survivors]
        assert all(s["buffer_bytes_available"] == 0 for s in final)

    assert sum(map(len, served)) > 2 * FILL_BYTES
    _assert_no_block_served_twice(served)
