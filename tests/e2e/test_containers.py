"""The container image and the Compose stack, built and run for real.

What README's Deployment section tells a site to do, done here end to end on a Docker engine:

1. ``deploy/base-image.sh``: the base image from Debian packages (debootstrap), no registry;
2. ``docker build --build-arg BASE_IMAGE=qrng-dd-base:bookworm``: the project image, offline
   (``--network none``) from a wheelhouse made with ``pip wheel``, in a copy of the tree so
   the work tree stays clean;
3. ``docker compose --env-file ... -f deploy/compose/docker-compose.yml --profile simulator
   --profile mcp up -d``: appliance simulator, collector, gateway and MCP server, with an HMAC
   key and an API key made for this run. The ``monitoring`` profile (Prometheus, Grafana) is
   not started: its images come from Docker Hub, which this suite never reaches.

Then: bytes through the gateway's published port, ``/health``, ``/metrics``, MCP over
streamable HTTP with the SDK's client, the two networks (the appliance side reaches nothing on
the gateway side; the gateway reaches nothing on the appliance side; the collector listens on
nothing), a restart of every container in turn with no 16-byte block ever served twice, and
``compose down`` leaving nothing of the project behind.

The engine is the one ``DOCKER_HOST`` names, else a private dockerd started for the session
(tests/support/docker.py). Missing Docker is a failure with one message, not a skip. Every wait
polls against a deadline. ``QRNG_DD_BASE_CACHE=/path/base.tar`` keeps the base image's root
file system between runs on one machine (base-image.sh --tarball); by default it is built anew.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from mcp import Client
from tests.support.docker import Docker, DockerUnavailableError, docker_engine, run_checked
from tests.support.gateway import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
BASE_SCRIPT = ROOT / "deploy" / "base-image.sh"
BASE_TAG = "qrng-dd-base:bookworm"
IMAGE_TAG = "qrng-dd:local"
PROJECT = "qrng-dd-e2e"
SERVICES = ("appliance", "collector", "gateway", "mcp")
#: A small pool: 10 % (the /health threshold) is 26 KB, a few fetches of the collector.
POOL_BYTES = 262_144
BLOCK = 16
#: The gateway's largest request; also what one drain step takes.
REQUEST_BYTES = 65_536
#: The collector's own backlog (QRNG_COLLECTOR_BUFFER_SIZE default) that may follow a drain.
COLLECTOR_BACKLOG = 1_048_576
DEADLINE_S = 90.0
BUILD_TIMEOUT_S = 900.0
#: Connect timeout of a network probe: a dropped SYN shows as a timeout of this length.
PROBE_TIMEOUT_S = 1.5

#: Run inside a container: try TCP connections, print {"target": "open"|"refused"|"blocked"}.
#: "refused" means packets got there and back (a host with nothing listening); "blocked" means
#: nothing came back at all (dropped, unreachable, no route, no such name).
_PROBE = """\
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=float(sys.argv[1])).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "blocked"
targets = sys.argv[2:]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
"""

#: Run inside a container: which sockets of its processes (the role and any worker it forks;
#: the container's own PID namespace) are in LISTEN state.
_LISTENING = """\
import json, os
inodes = set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        continue
    inodes |= {link[8:-1] for link in fds if link.startswith("socket:[")}
listening = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            listening.append(fields[1])
print(json.dumps({"listening": listening, "sockets_seen": bool(inodes)}))
"""

T = TypeVar("T")
TIMINGS: dict[str, float] = {}


_RETRY_ON: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    AssertionError,
    OSError,
    KeyError,
    ValueError,
)


def _eventually(
    what: str,
    attempt: Callable[[], T | None],
    deadline_s: float = DEADLINE_S,
    retry_on: tuple[type[Exception], ...] = _RETRY_ON,
) -> T:
    """Poll ``attempt`` until it returns something other than None, or fail after the deadline.

    An exception of ``retry_on`` counts as "not yet" (the last one is shown on failure).
    """
    deadline = time.monotonic() + deadline_s
    last: BaseException | None = None
    while True:
        try:
            value = attempt()
        except retry_on as err:
            value, last = None, err
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s (last error: {last!r})")
        time.sleep(0.2)  # polling interval, bounded by the deadline


# -- the engine and the images -----------------------------------------------------------------


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    problem = None
    try:
        with docker_engine() as engine:
            yield engine
    except DockerUnavailableError as err:
        problem = str(err)
    if problem is not None:  # outside the handler: the message alone, no chained traceback
        pytest.fail(problem, pytrace=False)


@dataclass(frozen=True)
class Images:
    base_id: str
    image_id: str


def _build_context(target: Path) -> Path:
    """A copy of what the Dockerfile needs, plus ./wheels from `pip wheel` (offline build)."""
    context = target / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    # What a site without PyPI carries in: every wheel the project needs, and hatchling for
    # building the project itself. Same command as the README's.
    run_checked(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            "wheels",
            ".",
            "hatchling",
        ],
        cwd=context,
        timeout=BUILD_TIMEOUT_S,
    )
    return context


@pytest.fixture(scope="module")
def images(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Images:
    """The base image (deploy/base-image.sh) and the project image built on it, offline."""
    started = time.monotonic()
    command = ["bash", str(BASE_SCRIPT)]
    if cache := os.environ.get("QRNG_DD_BASE_CACHE"):
        command += ["--tarball", cache]
    run_checked(command, env=docker.env(), timeout=BUILD_TIMEOUT_S)
    TIMINGS["base image (deploy/base-image.sh)"] = time.monotonic() - started

    started = time.monotonic()
    context = _build_context(tmp_path_factory.mktemp("image"))
    TIMINGS["wheelhouse (pip wheel)"] = time.monotonic() - started
    started = time.monotonic()
    docker.run(
        "build",
        "--network",
        "none",
        "--build-arg",
        f"BASE_IMAGE={BASE_TAG}",
        "-t",
        IMAGE_TAG,
        str(context),
        timeout=BUILD_TIMEOUT_S,
    )
    TIMINGS["docker build"] = time.monotonic() - started
    return Images(
        docker.output("image", "inspect", "--format", "{{.Id}}", BASE_TAG),
        docker.output("image", "inspect", "--format", "{{.Id}}", IMAGE_TAG),
    )


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    docker: Docker
    env_file: Path
    api_key: str
    mcp_token: str
    gateway_url: str
    mcp_url: str
    served: list[bytes] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 180.0) -> str:
        return self.docker.output(
            "compose",
            "--project-name",
            PROJECT,
            "--env-file",
            str(self.env_file),
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            "simulator",
            "--profile",
            "mcp",
            *args,
            timeout=timeout,
        )

    def container(self, service: str) -> str:
        """The container id of a service (exactly one)."""
        ids = self.compose("ps", "--all", "--quiet", service).split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data = json.loads(self.docker.output("inspect", self.container(service)))
        assert isinstance(data, list)
        first = data[0]
        assert isinstance(first, dict)
        return first

    def address(self, service: str, network: str) -> str:
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        return str(networks[f"{PROJECT}_{network}"]["IPAddress"])

    def probe(self, service: str, *targets: str) -> dict[str, str]:
        out = self.docker.output(
            "exec", self.container(service), "python", "-c", _PROBE, str(PROBE_TIMEOUT_S), *targets
        )
        result = json.loads(out)
        assert isinstance(result, dict)
        return {str(k): str(v) for k, v in result.items()}

    def metric(self, client: httpx.Client, name: str, labels: str = "") -> float:
        text = client.get("/metrics").text
        pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
        match = re.search(pattern, text, re.MULTILINE)
        assert match, f"{name}{labels} not in /metrics"
        return float(match.group(1))

    def take(self, client: httpx.Client, count: int = REQUEST_BYTES) -> bytes | None:
        """``count`` bytes from /api/random (recorded as served), or None on 503."""
        response = client.get(
            "/api/random",
            params={"bytes": count, "encoding": "binary"},
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        if response.status_code == 503:
            return None
        assert response.status_code == 200, response.text
        assert len(response.content) == count
        self.served.append(response.content)
        return response.content

    def health(self, client: httpx.Client) -> dict[str, Any] | None:
        response = client.get("/health")
        if response.status_code != 200:
            return None
        body = response.json()
        assert isinstance(body, dict)
        return body


def _env_file(path: Path, api_key: str, mcp_token: str, gateway_port: int, mcp_port: int) -> None:
    hmac_key = secrets.token_hex(32)
    lines = {
        "QRNG_HMAC_SECRET_KEY": hmac_key,
        "QRNG_API_KEYS": api_key,
        "QRNG_GATEWAY_API_KEY": api_key,
        "QRNG_MCP_AUTH_TOKEN": mcp_token,
        "QRNG_APPLIANCE_URLS": "http://appliance:8443",
        "QRNG_BUFFER_SIZE": str(POOL_BYTES),
        # The first start (a new state volume) is a quiet start of this length.
        "QRNG_MAX_CLOCK_SKEW_S": "2",
        # The default rate limit (100/s) is a client's; the suite drains pools on purpose.
        "QRNG_RATE_LIMIT": "1000",
        "QRNG_DD_IMAGE": IMAGE_TAG,
        "QRNG_DD_GATEWAY_PORT": f"127.0.0.1:{gateway_port}",
        "QRNG_DD_MCP_PORT": f"127.0.0.1:{mcp_port}",
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    path.chmod(0o600)


def _docker_health(stack: Stack) -> str | None:
    health = stack.inspect("gateway")["State"].get("Health") or {}
    return "healthy" if health.get("Status") == "healthy" else None


@pytest.fixture(scope="module")
def stack(
    docker: Docker, images: Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    api_key = secrets.token_urlsafe(24)
    mcp_token = secrets.token_urlsafe(24)
    gateway_port, mcp_port = free_port(), free_port()
    env_file = folder / "qrng-dd.env"
    _env_file(env_file, api_key, mcp_token, gateway_port, mcp_port)
    stack = Stack(
        docker,
        env_file,
        api_key,
        mcp_token,
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{mcp_port}/mcp",
    )
    started = time.monotonic()
    try:
        stack.compose("up", "--detach", "--no-build", "--pull", "never")
        with httpx.Client(base_url=stack.gateway_url, timeout=5.0) as client:
            _eventually(
                "gateway /health 200 through the published port", lambda: stack.health(client)
            )
        TIMINGS["compose up -> /health 200"] = time.monotonic() - started
        _eventually("Docker health status of the gateway: healthy", lambda: _docker_health(stack))
        TIMINGS["compose up -> Docker 'healthy'"] = time.monotonic() - started
        yield stack
    finally:
        with contextlib.suppress(AssertionError):
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")
        _print_timings(images)


def _print_timings(images: Images) -> None:
    for name, seconds in TIMINGS.items():
        print(f"[containers] {name}: {seconds:.1f}")  # shown with -s or -rA


# -- the image ---------------------------------------------------------------------------------


def test_the_image_is_non_root_with_a_healthcheck_and_no_build_tools(
    docker: Docker, images: Images
) -> None:
    """Built on the Debian base: uid 10001, a HEALTHCHECK, `qrng-dd` entry point, no pip."""
    config = json.loads(docker.output("image", "inspect", IMAGE_TAG))[0]
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == ["qrng-dd"]
    assert config["Config"]["Cmd"] == ["gateway"]
    assert "/health" in " ".join(config["Config"]["Healthcheck"]["Test"])
    assert config["Config"]["Labels"]["org.opencontainers.image.base.name"] == BASE_TAG
    size_mb = config["Size"] / 1e6
    TIMINGS["image size (MB)"] = size_mb
    assert size_mb < 400, f"the image grew to {size_mb:.0f} MB"
    out = docker.output(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--entrypoint",
        "sh",
        IMAGE_TAG,
        "-c",
        "id -u; qrng-dd --version; ls /opt/venv/bin; test -e /build && echo HAS-SOURCES; true",
    )
    uid, version, *venv_bin = out.splitlines()
    assert uid == "10001"
    assert re.search(r"\d+\.\d+\.\d+", version), version
    assert "python" in venv_bin
    assert "pip" not in venv_bin
    assert "HAS-SOURCES" not in out


def test_keygen_runs_in_the_image(docker: Docker, images: Images) -> None:
    """`docker run --rm qrng-dd:local keygen` (README) prints a key the gateway accepts."""
    run = ("run", "--rm", "--network", "none", "--read-only", IMAGE_TAG, "keygen")
    key = docker.output(*run)
    assert re.fullmatch(r"[0-9a-f]{64,}", key), key
    api_key = docker.output(*run, "--api-key")
    assert len(api_key) >= 16
    assert api_key != docker.output(*run, "--api-key")


def test_the_base_image_script_is_idempotent(docker: Docker, images: Images) -> None:
    """A second run of deploy/base-image.sh keeps the image it finds (no --force)."""
    result = run_checked(["bash", str(BASE_SCRIPT)], env=docker.env(), timeout=60)
    assert "nothing to do" in result.stderr
    assert docker.output("image", "inspect", "--format", "{{.Id}}", BASE_TAG) == images.base_id
    python = docker.output("run", "--rm", "--network", "none", BASE_TAG, "python3", "--version")
    assert python.startswith("Python 3.11.")


# -- the stack ---------------------------------------------------------------------------------


def test_bytes_health_and_metrics_through_the_published_port(stack: Stack) -> None:
    """/api/random with the run's API key (not without), /health, and the flow in /metrics."""
    with httpx.Client(base_url=stack.gateway_url, timeout=5.0) as client:
        data = _eventually("bytes from /api/random", lambda: stack.take(client, 64))
        assert len(set(data)) > 16
        hexed = client.get(
            "/api/random",
            params={"bytes": 32},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        assert hexed.status_code == 200
        stack.served.append(bytes.fromhex(hexed.text))
        assert client.get("/api/random", params={"bytes": 32}).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * 32}
        assert client.get("/api/random", params={"bytes": 32}, headers=wrong).status_code == 401

        health = stack.health(client)
        assert health is not None
        assert health["status"] in {"healthy", "degraded"}
        assert health["buffer_fill_percent"] >= 10

        assert stack.metric(client, "qrng_packets_accepted_total", '{source="collector"}') > 0
        assert stack.metric(client, "qrng_bytes_received_total", '{source="collector"}') > 0
        assert stack.metric(client, "qrng_buffer_capacity_bytes") == POOL_BYTES
        assert stack.metric(client, "qrng_packets_rejected_total", '{reason="bad_mac"}') == 0
        assert stack.metric(client, "qrng_packets_rejected_total", '{reason="replay"}') == 0


async def _mcp_bytes(url: str, token: str | None, count: int) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
        assert "get_random_bytes" in {tool.name for tool in tools.tools}
        result = await client.call_tool("get_random_base64", {"count": count})
        assert not result.is_error, result
        assert result.structured_content is not None
        return base64.b64decode(result.structured_content["data"])


def _mcp_take(stack: Stack, count: int = 256) -> bytes:
    data = anyio.run(_mcp_bytes, stack.mcp_url, stack.mcp_token, count)
    assert len(data) == count
    stack.served.append(data)
    return data


def test_mcp_over_streamable_http(stack: Stack) -> None:
    """The mcp service answers the SDK's client with the run's token, and 401 without it."""
    _eventually("an MCP tool call", lambda: _mcp_take(stack), retry_on=(Exception,))
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with httpx.Client(timeout=10.0) as http:
        missing = http.post(stack.mcp_url, json=body)
        wrong = http.post(stack.mcp_url, json=body, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401
    assert wrong.status_code == 401


def test_the_two_networks_keep_the_sides_apart(stack: Stack) -> None:
    """Appliance side and gateway side cannot reach each other; only the collector is on both."""
    appliance = stack.address("appliance", "internal")
    collector_inside = stack.address("collector", "internal")
    collector_outside = stack.address("collector", "dmz")
    gateway = stack.address("gateway", "dmz")
    mcp = stack.address("mcp", "dmz")
    networks = {s: set(stack.inspect(s)["NetworkSettings"]["Networks"]) for s in SERVICES}
    assert networks == {
        "appliance": {f"{PROJECT}_internal"},
        "collector": {f"{PROJECT}_internal", f"{PROJECT}_dmz"},
        "gateway": {f"{PROJECT}_dmz"},
        "mcp": {f"{PROJECT}_dmz"},
    }

    # The gateway has no way inward: not to the appliance, not to the collector's inner address
    # (dropped: no answer at all), not even by name. Its own port answers (the probe works).
    inward = stack.probe(
        "gateway",
        f"{appliance}:8443",
        f"{collector_inside}:8443",
        "appliance:8443",
        "127.0.0.1:7764",
        f"{mcp}:8080",
    )
    assert inward == {
        f"{appliance}:8443": "blocked",
        f"{collector_inside}:8443": "blocked",
        "appliance:8443": "blocked",
        "127.0.0.1:7764": "open",
        f"{mcp}:8080": "open",
    }
    # The appliance side reaches nothing of the API clients' side.
    outward = stack.probe("appliance", f"{gateway}:7764", f"{mcp}:8080", "gateway:7764")
    assert set(outward.values()) == {"blocked"}, outward
    # The collector reaches both, and listens on nothing: its outer address answers with
    # refusals (reachable, no listener), never with an open port.
    both = stack.probe("collector", "appliance:8443", "gateway:7764", f"{collector_outside}:7764")
    assert both == {
        "appliance:8443": "open",
        "gateway:7764": "open",
        f"{collector_outside}:7764": "refused",
    }
    # No socket of the collector's process listens. (/proc/net/tcp lists the whole network
    # namespace, Docker's embedded DNS resolver on 127.0.0.11 included: match by inode.)
    listening = stack.docker.output(
        "exec", stack.container("collector"), "python", "-c", _LISTENING
    )
    assert json.loads(listening) == {"listening": [], "sockets_seen": True}
    # The same check does see a listener where there is one.
    gateway_listens = stack.docker.output(
        "exec", stack.container("gateway"), "python", "-c", _LISTENING
    )
    assert json.loads(gateway_listens)["listening"] == ["00000000:1E54"]  # 0.0.0.0:7764
    # Published ports: the gateway's and the MCP server's only (EXPOSE alone publishes nothing).
    published = {s: stack.inspect(s)["HostConfig"]["PortBindings"] or {} for s in SERVICES}
    assert {s: sorted(p) for s, p in published.items()} == {
        "appliance": [],
        "collector": [],
        "gateway": ["7764/tcp"],
        "mcp": ["8080/tcp"],
    }
    assert published["mcp"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"


def _started_at(stack: Stack, service: str) -> str:
    return str(stack.inspect(service)["State"]["StartedAt"])


def _drain(stack: Stack, client: httpx.Client) -> None:
    """Take bytes until the pool holds less than one request (bounded by the pool size)."""
    for _ in range(2 * (POOL_BYTES + COLLECTOR_BACKLOG) // REQUEST_BYTES + 8):
        if stack.take(client) is None:
            return
    pytest.fail("the pool never ran dry: is the collector faster than the suite?")


def _received(stack: Stack, client: httpx.Client) -> float:
    return stack.metric(client, "qrng_bytes_received_total", '{source="collector"}')


def _received_more_than(stack: Stack, client: httpx.Client, mark: float) -> bool | None:
    return True if _received(stack, client) > mark else None


def test_every_container_restarts_and_no_byte_is_served_twice(stack: Stack) -> None:
    """Restart each container in turn: service comes back each time; no block repeats."""
    with httpx.Client(base_url=stack.gateway_url, timeout=10.0) as client:
        for _ in range(4):
            _eventually("bytes before the restarts", lambda: stack.take(client))
        for service in SERVICES:
            before = _started_at(stack, service)
            started = time.monotonic()
            stack.compose("restart", service)
            assert _started_at(stack, service) != before, f"{service} was not restarted"
            assert stack.inspect(service)["State"]["Running"]
            _eventually(f"/health 200 after restarting {service}", lambda: stack.health(client))
            # Fresh entropy must flow again: empty the pool, then see new bytes arrive and
            # be served.
            _drain(stack, client)
            mark = _received(stack, client)
            _eventually(
                f"new packets after restarting {service}",
                partial(_received_more_than, stack, client, mark),
            )
            _eventually(f"bytes after restarting {service}", lambda: stack.take(client))
            if service == "appliance":
                assert stack.probe("collector", "appliance:8443") == {"appliance:8443": "open"}
            if service == "mcp":
                _eventually(
                    "an MCP tool call after its restart",
                    lambda: _mcp_take(stack),
                    retry_on=(Exception,),  # the SDK raises groups of httpx2 errors
                )
            TIMINGS[f"restart {service} -> serving again"] = time.monotonic() - started
        assert stack.metric(client, "qrng_packets_rejected_total", '{reason="replay"}') == 0
        assert stack.metric(client, "qrng_packets_rejected_total", '{reason="bad_mac"}') == 0

    blocks = [chunk[i : i + BLOCK] for chunk in stack.served for i in range(0, len(chunk), BLOCK)]
    assert len(blocks) > 2 * POOL_BYTES // BLOCK, f"only {len(blocks)} blocks served"
    repeats = len(blocks) - len(set(blocks))
    assert repeats == 0, f"{repeats} of {len(blocks)} 16-byte blocks were served twice"


def test_compose_down_leaves_nothing_behind(stack: Stack) -> None:
    """`down` removes containers and networks and keeps the state volume; `down -v` removes it."""

    def leftovers() -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            "containers": stack.docker.output("ps", "--all", "--quiet", "--filter", label).split(),
            "networks": stack.docker.output("network", "ls", "--quiet", "--filter", label).split(),
            "volumes": stack.docker.output("volume", "ls", "--quiet", "--filter", label).split(),
        }

    assert all(leftovers().values()), "the stack is not up"
    stack.compose("down", "--timeout", "20")
    kept = leftovers()
    assert kept["containers"] == []
    assert kept["networks"] == []
    # The gateway's sequence memory outlives `down` on purpose (README, security notes).
    assert kept["volumes"] == [f"{PROJECT}_gateway-state"]
    stack.compose("down", "--volumes", "--timeout", "20")
    assert leftovers() == {"containers": [], "networks": [], "volumes": []}
