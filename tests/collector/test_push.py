"""Push transports and delivery: status → Outcome, identical retries, expiry, pacing, UDP."""

from __future__ import annotations

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute

from qrng_dd.addresses import PushTarget, parse_push_target
from qrng_dd.collector.push import (
    HTTP_CHUNK,
    Delivery,
    HttpTransport,
    Outcome,
    Pacer,
    UdpTransport,
    outcome_for_status,
)
from qrng_dd.wire import packet as wire
from tests.collector.fakes import FakeClock

TARGET = parse_push_target("gw=http://gw.test/push")


class Scripted:
    """A transport that answers the given outcomes in turn and records what it sent."""

    chunk_size = 100

    def __init__(self, outcomes: list[Outcome], clock: FakeClock | None = None) -> None:
        self.outcomes = outcomes
        self.sent: list[bytes] = []
        self.clock = clock

    async def send(self, raw: bytes) -> Outcome:
        self.sent.append(raw)
        if self.clock is not None:
            self.clock.now += 50.0  # each attempt takes long, as against a hung gateway
        return self.outcomes[min(len(self.sent), len(self.outcomes)) - 1]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (409, Outcome.REPLAYED),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (408, Outcome.RETRY),
        (503, Outcome.RETRY),
        (507, Outcome.RETRY),
        (201, Outcome.REFUSED),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
        (403, Outcome.REFUSED),
        (404, Outcome.REFUSED),
        (413, Outcome.REFUSED),
        (421, Outcome.REFUSED),
    ],
)
def test_each_gateway_status_means_one_outcome(status: int, outcome: Outcome) -> None:
    """200 delivered, 409 replayed, 408/429/5xx/507 retry, anything else refused."""
    assert outcome_for_status(status) is outcome


def test_only_delivered_and_replayed_count_as_delivered() -> None:
    """A 409 means the gateway has the bytes from an earlier attempt."""
    assert {o for o in Outcome if o.delivered} == {Outcome.DELIVERED, Outcome.REPLAYED}


def _gateway(*statuses: int) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if not statuses:
            raise httpx.ConnectError("refused", request=request)
        code = statuses[min(len(requests), len(statuses)) - 1]
        return httpx.Response(code, json={"detail": "no"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), requests


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("statuses", "outcome", "errors"),
    [((200,), Outcome.DELIVERED, 0), ((409,), Outcome.REPLAYED, 0),
     ((507,), Outcome.RETRY, 1), ((401,), Outcome.REFUSED, 1), ((), Outcome.RETRY, 1)],
)  # fmt: skip
async def test_the_http_transport_posts_once_and_counts_failed_attempts(
    statuses: tuple[int, ...], outcome: Outcome, errors: int
) -> None:
    """One POST of the packet as msgpack; every attempt that did not deliver is counted."""
    failures: list[None] = []
    client, requests = _gateway(*statuses)
    async with client:
        transport = HttpTransport(TARGET, client, lambda: failures.append(None))
        assert await transport.send(b"packet") is outcome
    assert [(str(r.url), r.content) for r in requests] == [("http://gw.test/push", b"packet")]
    assert requests[0].headers["content-type"] == "application/x-msgpack"
    assert len(failures) == errors
    assert transport.chunk_size == HTTP_CHUNK == wire.MAX_DATA_BYTES - wire.AEAD_TAG_BYTES


@pytest.mark.anyio
async def test_a_retry_resends_the_identical_packet_until_it_is_delivered() -> None:
    """503, 507, 200: the same bytes three times, then delivered."""
    client, requests = _gateway(503, 507, 200)
    async with client:
        delivery = Delivery(HttpTransport(TARGET, client), backoff=lambda attempt: 0.0)
        assert await delivery.deliver(b"packet", anyio.Event()) is Outcome.DELIVERED
    assert [r.content for r in requests] == [b"packet"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("outcome", [Outcome.REPLAYED, Outcome.REFUSED])
async def test_a_final_answer_ends_the_delivery_at_once(outcome: Outcome) -> None:
    """A replay or a refusal is not retried: the packet was sent exactly once."""
    transport = Scripted([outcome])
    assert await Delivery(transport).deliver(b"p", anyio.Event()) is outcome
    assert transport.sent == [b"p"]


@pytest.mark.anyio
async def test_a_packet_too_old_for_the_gateway_expires() -> None:
    """Past the TTL guard a failing packet is given up as expired, not resent forever."""
    clock = FakeClock()
    transport = Scripted([Outcome.RETRY], clock)
    delivery = Delivery(transport, ttl_s=120.0, clock=clock, backoff=lambda attempt: 0.0)
    assert await delivery.deliver(b"p", anyio.Event()) is Outcome.EXPIRED
    assert transport.sent == [b"p"] * 3  # at 50, 100 s still young; at 150 s too old


@pytest.mark.anyio
async def test_nothing_is_sent_once_the_final_flush_is_over() -> None:
    """With ``done`` set the packet expires unsent; a retry waiting on backoff stops too."""
    done = anyio.Event()
    done.set()
    transport = Scripted([Outcome.DELIVERED])
    assert await Delivery(transport).deliver(b"p", done) is Outcome.EXPIRED
    assert transport.sent == []

    stopping = anyio.Event()
    retrying = Scripted([Outcome.RETRY])

    def backoff(attempt: int) -> float:
        stopping.set()  # the flush ends while the sender waits to retry
        return 3600.0

    with anyio.fail_after(5):
        outcome = await Delivery(retrying, backoff=backoff).deliver(b"p", stopping)
    assert outcome is Outcome.EXPIRED
    assert retrying.sent == [b"p"]


@pytest.mark.anyio
async def test_backoff_keeps_growing_across_packets_until_one_is_delivered() -> None:
    """A gateway that keeps failing is retried ever more slowly; a delivery starts over."""
    attempts: list[int] = []

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        return 0.0

    transport = Scripted([Outcome.RETRY, Outcome.RETRY, Outcome.REFUSED])
    delivery = Delivery(transport, backoff=backoff)
    assert await delivery.deliver(b"1", anyio.Event()) is Outcome.REFUSED
    transport.outcomes, transport.sent = [Outcome.RETRY, Outcome.DELIVERED], []
    assert await delivery.deliver(b"2", anyio.Event()) is Outcome.DELIVERED
    transport.outcomes, transport.sent = [Outcome.RETRY, Outcome.DELIVERED], []
    assert await delivery.deliver(b"3", anyio.Event()) is Outcome.DELIVERED
    assert attempts == [1, 2, 3, 1]


def test_the_pacer_spaces_bytes_at_the_rate() -> None:
    """At 1000 B/s: 100 bytes book 0.1 s; a burst waits in line; an idle pacer starts over."""
    clock = FakeClock()
    pacer = Pacer(1000.0, clock)
    assert pacer.delay(100) == pytest.approx(0.1)
    assert pacer.delay(100) == pytest.approx(0.2)
    clock.now += 10.0  # idle: unused budget is not saved up for a later burst
    assert pacer.delay(500) == pytest.approx(0.5)


def test_the_pacer_does_not_bother_with_tiny_waits() -> None:
    """Waits of 2 ms or less are not slept: a small datagram goes out at once."""
    pacer = Pacer(1_000_000.0, FakeClock())
    assert pacer.delay(1000) == 0.0  # 1 ms
    assert pacer.delay(2000) == pytest.approx(0.003)


@pytest.mark.anyio
async def test_the_udp_transport_sends_each_packet_as_one_datagram() -> None:
    """The bytes arrive whole, from a socket that never receives."""
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as receiver:
        port = receiver.extra(SocketAttribute.local_port)
        target = parse_push_target(f"gw=udp://127.0.0.1:{port}")
        transport = UdpTransport(target, 1200, pacer=Pacer(1e9))
        try:
            assert await transport.send(b"datagram one") is Outcome.DELIVERED
            assert await transport.send(b"datagram two") is Outcome.DELIVERED
            with anyio.fail_after(5):
                received = [(await receiver.receive())[0] for _ in range(2)]
        finally:
            transport.close()
    assert received == [b"datagram one", b"datagram two"]
    assert transport.chunk_size == 1200


@pytest.mark.anyio
async def test_a_datagram_the_os_will_not_send_is_refused_and_counted() -> None:
    """Too large for UDP: the OS refuses it; that is REFUSED and one error, never a retry."""
    failures: list[None] = []
    target = PushTarget("gw", "udp://127.0.0.1:9", "udp", "127.0.0.1", 9)
    transport = UdpTransport(target, 1200, on_error=lambda: failures.append(None))
    try:
        assert await transport.send(b"x" * 70_000) is Outcome.REFUSED
    finally:
        transport.close()
    assert len(failures) == 1
