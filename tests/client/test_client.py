"""The client against a real gateway on loopback: splitting, waiting, errors, the buffer."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import anyio
import pytest

from qrng_dd.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    EntropyBuffer,
    EntropyUnavailableError,
    GatewayUnreachableError,
    RateLimitedError,
    RequestRefusedError,
)
from qrng_dd.client.protocol import Limits, split
from tests.support.diode import eventually
from tests.support.gateway import (
    RunningGateway,
    free_port,
    metric_total,
    push_packets,
    scrape,
    start_gateway,
)

MAX_REQUEST = 1000


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with start_gateway({"QRNG_MAX_REQUEST_BYTES": str(MAX_REQUEST)}) as gateway:
        yield gateway


def _served(gw: RunningGateway) -> int:
    return int(gw.status()["total_bytes_served"])


def _random_requests(gw: RunningGateway, status: str) -> float:
    return metric_total(scrape(gw.url), "qrng_requests_total", endpoint="random", status=status)


def _drain(gw: RunningGateway) -> None:
    with Client(gw.url, gw.api_key, max_wait=0) as client:
        while (left := gw.status()["buffer_bytes_available"]) > 0:
            client.random_bytes(left)


def test_limits_come_from_the_gateways_openapi_document(gw: RunningGateway) -> None:
    with Client(gw.url, gw.api_key) as client:
        assert client.limits() == Limits(random_bytes=MAX_REQUEST, integers=1000, uuids=100)


def test_a_draw_above_the_request_limit_is_split_and_served_in_order(gw: RunningGateway) -> None:
    """2,500 bytes from a gateway serving 1,000 a request: three requests, the pool's bytes in
    the order they were pushed, each counted once as served."""
    _drain(gw)
    pushed = b"".join(push_packets(gw.url, gw.key, 3, 1000))
    before, requests = _served(gw), _random_requests(gw, "200")
    with Client(gw.url, gw.api_key) as client:
        data = client.random_bytes(2500)
    assert data == pushed[:2500]
    assert _served(gw) - before == 2500
    assert _random_requests(gw, "200") - requests == 3


def test_values_split_past_the_per_request_count(gw: RunningGateway) -> None:
    push_packets(gw.url, gw.key, 40, 1000)
    with Client(gw.url, gw.api_key) as client:
        ints = client.integers(2500, -3, 3)
        floats = client.floats(1001)
        ids = client.uuids(101)
    assert len(ints) == 2500
    assert set(ints) == set(range(-3, 4))
    assert len(floats) == 1001
    assert all(0 <= f < 1 for f in floats)
    assert len(set(ids)) == 101


def test_503_waits_for_the_pool_as_retry_after_says(gw: RunningGateway) -> None:
    """An empty pool answers 503 with Retry-After; the client waits, the bytes arrive, the
    draw succeeds. Without a wait budget it raises the client's own error at once."""
    _drain(gw)
    with Client(gw.url, gw.api_key, max_wait=0) as client:
        with pytest.raises(EntropyUnavailableError) as caught:
            client.random_bytes(100)
    assert caught.value.retry_after is not None
    assert caught.value.status == 503

    short = _random_requests(gw, "503")

    def refill_after_a_refusal() -> None:
        eventually(lambda: _random_requests(gw, "503") > short, what="a 503 to the client")
        push_packets(gw.url, gw.key, 1, 500)

    pusher = threading.Thread(target=refill_after_a_refusal)
    pusher.start()
    with Client(gw.url, gw.api_key, max_wait=30) as client:
        assert len(client.random_bytes(100)) == 100
    pusher.join()


def test_429_waits_for_the_bucket_then_raises_past_the_budget() -> None:
    with start_gateway({"QRNG_RATE_LIMIT": "1", "QRNG_RATE_BURST": "2"}) as gw:
        push_packets(gw.url, gw.key, 1, 1000)
        with Client(gw.url, gw.api_key, max_wait=0) as impatient:
            impatient.limits()  # /openapi.json is not rate limited
            impatient.random_bytes(1)
            impatient.random_bytes(1)
            with pytest.raises(RateLimitedError) as caught:
                impatient.random_bytes(1)
        assert caught.value.retry_after is not None
        assert caught.value.retry_after >= 1
        with Client(gw.url, gw.api_key, max_wait=30) as patient:
            assert len(patient.random_bytes(1)) == 1


def test_a_bad_key_is_the_clients_own_error(gw: RunningGateway) -> None:
    with Client(gw.url, "not-a-key-" * 3) as client:
        with pytest.raises(AuthenticationError, match="API key"):
            client.random_bytes(1)


def test_no_key_anywhere_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QRNG_GATEWAY_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="QRNG_GATEWAY_API_KEY"):
        Client("http://127.0.0.1:9")


def test_url_and_key_come_from_the_environment(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRNG_GATEWAY_URL", gw.url)
    monkeypatch.setenv("QRNG_GATEWAY_API_KEY", gw.api_key)
    with Client() as client:
        assert client.status()["status"] in {"healthy", "degraded", "unhealthy"}


def test_bad_parameters_are_refused_with_the_gateways_detail(gw: RunningGateway) -> None:
    with Client(gw.url, gw.api_key) as client:
        with pytest.raises(RequestRefusedError, match="min"):
            client.integers(1, 10, 1)
        with pytest.raises(RequestRefusedError, match="at least 1"):
            client.random_bytes(0)


def test_an_unreachable_gateway_is_said_so() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "k" * 20, timeout=2) as client:
        with pytest.raises(GatewayUnreachableError, match="cannot reach"):
            client.random_bytes(1)


def test_the_async_client_splits_and_raises_alike(gw: RunningGateway) -> None:
    _drain(gw)
    pushed = b"".join(push_packets(gw.url, gw.key, 2, 1000))

    async def main() -> bytes:
        async with AsyncClient(gw.url, gw.api_key, max_wait=0) as client:
            data = await client.random_bytes(1500)
            with pytest.raises(EntropyUnavailableError):
                await client.random_bytes(1000)
            return data

    assert anyio.run(main) == pushed[:1500]


def test_no_byte_is_drawn_twice_through_the_buffer_across_threads(gw: RunningGateway) -> None:
    """Eight threads draw through one small buffer; every draw is found at its own place in
    the pushed stream, no two overlap, and the buffer fetched what the gateway served."""
    _drain(gw)
    pushed = b"".join(push_packets(gw.url, gw.key, 60, 1000))
    draws: list[bytes] = []
    lock = threading.Lock()
    before = _served(gw)

    with Client(gw.url, gw.api_key) as client, EntropyBuffer(client, 4096, 1024) as buffer:

        def draw(sizes: list[int]) -> None:
            for size in sizes:
                data = buffer.take(size)
                with lock:
                    draws.append(data)

        threads = [
            threading.Thread(target=draw, args=([16 + (7 * i + j) % 200 for j in range(40)],))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    fetched, drawn = buffer.bytes_fetched, buffer.bytes_drawn  # closed: no refill in flight
    spans = sorted((pushed.find(d), pushed.find(d) + len(d)) for d in draws)
    assert all(start >= 0 for start, _ in spans)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    assert drawn == sum(map(len, draws))
    assert fetched == _served(gw) - before
    assert fetched >= drawn


def test_a_failing_gateway_raises_from_the_draw_that_needed_bytes(gw: RunningGateway) -> None:
    _drain(gw)
    with (
        Client(gw.url, gw.api_key, max_wait=0) as client,
        EntropyBuffer(client, 1024) as buffer,
        pytest.raises(EntropyUnavailableError),
    ):
        buffer.take(10)


def test_split_plans_whole_requests_and_a_remainder() -> None:
    assert split(10, 4) == [4, 4, 2]
    assert split(8, 4) == [4, 4]
    assert split(1, 4) == [1]
    with pytest.raises(RequestRefusedError):
        split(0, 4)
