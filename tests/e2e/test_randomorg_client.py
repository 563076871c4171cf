"""RANDOM.ORG's official Python client, ``rdoclient`` 1.5.0, against a real gateway.

The client is used as shipped, with its defaults (serialized requests on a background
thread, advisory delays obeyed), but for its endpoint: it posts to the literal
``https://api.random.org/json-rpc/4/invoke`` through its module's ``requests``, so that one
module attribute is replaced by :class:`Endpoint`, which posts to the gateway instead.

``RandomOrgClient`` keeps one instance per API key for the life of the process, so every test
takes a key of its own from the gateway's list.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rdoclient  # type: ignore[import-untyped]
import requests
from rdoclient import rdoclient as rdoclient_module

from qrng_dd.gateway.compat.randomorg import PATH, UNLIMITED
from tests.support.gateway import CLIENT_TIMEOUT_S, RunningGateway, push_packets, start_gateway

pytestmark = pytest.mark.e2e

RANDOM_ORG = "https://api.random.org/json-rpc/4/invoke"
KEYS = 24
BURST = 200  # QRNG_RATE_LIMIT's default of 100 a second, twice that as burst


class Endpoint:
    """``requests`` as ``rdoclient`` sees it, with ``post`` sent to the gateway."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + PATH
        self.posts = 0

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        assert url == RANDOM_ORG, url  # the one call rdoclient makes, unchanged but for this
        self.posts += 1
        return requests.post(self.url, **kwargs)


class Gateway:
    """The running gateway, its unused API keys and the endpoint rdoclient posts to."""

    def __init__(self, running: RunningGateway, keys: list[str], endpoint: Endpoint) -> None:
        self.running = running
        self.keys = keys
        self.endpoint = endpoint

    def client(self) -> Any:
        """A RandomOrgClient for a key no test used yet (the client's registry is per key)."""
        return rdoclient.RandomOrgClient(
            self.keys.pop(), blocking_timeout=CLIENT_TIMEOUT_S, http_timeout=CLIENT_TIMEOUT_S
        )

    def served(self) -> int:
        total: int = self.running.status()["total_bytes_served"]
        return total


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    keys = [secrets.token_urlsafe(24) for _ in range(KEYS)]
    with (
        start_gateway({"QRNG_API_KEYS": ",".join(keys)}) as running,
        pytest.MonkeyPatch.context() as patch,
    ):
        push_packets(running.url, running.key, 8, 65_536)
        endpoint = Endpoint(running.url)
        patch.setattr(rdoclient_module, "requests", endpoint)
        yield Gateway(running, keys[1:], endpoint)  # the first one is the status key


def _hex_in(values: list[Any], low: int, high: int) -> bool:
    return all(isinstance(v, str) and low <= int(v, 16) <= high for v in values)


# (what is asked, how, what must hold of the answer)
_CALLS: list[tuple[str, Callable[[Any], Any], Callable[[Any], bool]]] = [
    ("integers", lambda c: c.generate_integers(20, 1, 6),
     lambda v: len(v) == 20 and all(type(x) is int and 1 <= x <= 6 for x in v)),
    ("integers without replacement in base 16",
     lambda c: c.generate_integers(16, 0, 15, replacement=False, base=16),
     lambda v: _hex_in(v, 0, 15) and sorted(int(x, 16) for x in v) == list(range(16))),
    ("uniform sequences", lambda c: c.generate_integer_sequences(3, 5, 1, 6),
     lambda v: len(v) == 3 and all(len(s) == 5 and all(1 <= x <= 6 for x in s) for s in v)),
    ("multiform sequences",
     lambda c: c.generate_integer_sequences(
         3, [2, 10, 4], [0, 10, -100], [9, 19, -1], replacement=[True, False, True],
         base=[10, 10, 16]),
     lambda v: [len(s) for s in v] == [2, 10, 4] and all(0 <= x <= 9 for x in v[0])
     and sorted(v[1]) == list(range(10, 20)) and all(-100 <= int(x, 16) <= -1 for x in v[2])),
    ("decimal fractions", lambda c: c.generate_decimal_fractions(10, 4),
     lambda v: len(v) == 10 and all(0 <= x < 1 and round(x, 4) == x for x in v)),
    ("decimal fractions without replacement",
     lambda c: c.generate_decimal_fractions(10, 1, replacement=False),
     lambda v: sorted(v) == [k / 10 for k in range(10)]),
    ("gaussians", lambda c: c.generate_gaussians(10, 100, 0.5, 6),
     lambda v: len(v) == 10 and all(95 < x < 105 for x in v)),
    ("strings", lambda c: c.generate_strings(5, 10, "abcdef", replacement=False),
     lambda v: len(set(v)) == 5 and all(len(s) == 10 and set(s) <= set("abcdef") for s in v)),
    ("UUIDs", lambda c: c.generate_UUIDs(5),
     lambda v: len(set(v)) == 5 and all(isinstance(u, uuid.UUID) and u.version == 4 for u in v)),
    ("base64 blobs", lambda c: c.generate_blobs(2, 128),
     lambda v: [len(base64.b64decode(b, validate=True)) for b in v] == [16, 16]),
    ("hex blobs", lambda c: c.generate_blobs(3, 64, format="hex"),
     lambda v: len(v) == 3 and all(len(bytes.fromhex(b)) == 8 for b in v)),
]  # fmt: skip


@pytest.mark.parametrize(("what", "ask", "check"), _CALLS, ids=[c[0] for c in _CALLS])
def test_rdoclient_gets_values_in_range_from_the_pool(
    gateway: Gateway, what: str, ask: Callable[[Any], Any], check: Callable[[Any], bool]
) -> None:
    """Each basic method as rdoclient calls it; the gateway's served counter grows by what
    was drawn, and the client learns the key's limits from the answer."""
    client = gateway.client()
    before = gateway.served()
    posts = gateway.endpoint.posts
    values = ask(client)
    assert check(values), (what, values)
    assert gateway.endpoint.posts == posts + 1  # one request, sent to the gateway
    assert gateway.served() > before
    assert client.get_bits_left() == UNLIMITED  # from the answer: no getUsage request
    assert 0 < client.get_requests_left() <= BURST
    assert gateway.endpoint.posts == posts + 1


def test_rdoclient_reads_the_usage_of_a_fresh_key(gateway: Gateway) -> None:
    """A fresh client asks ``getUsage`` once: the whole request bucket, no byte budget,
    and nothing drawn."""
    client = gateway.client()
    before = gateway.served()
    posts = gateway.endpoint.posts
    assert client.get_requests_left() == BURST
    assert client.get_bits_left() == UNLIMITED
    assert gateway.endpoint.posts == posts + 1
    assert gateway.served() == before


def test_rdoclient_raises_its_own_errors_for_the_gateways_refusals(gateway: Gateway) -> None:
    """A key that is not ours, a parameter out of range and a Signed API method each reach
    the caller as the exception rdoclient documents for RANDOM.ORG's code."""
    stranger = rdoclient.RandomOrgClient(secrets.token_urlsafe(24), blocking_timeout=30.0)
    with pytest.raises(rdoclient.RandomOrgKeyNonExistentError, match="Error 400"):
        stranger.generate_integers(5, 1, 6)
    client = gateway.client()
    before = gateway.served()
    with pytest.raises(ValueError, match="Error 202: Parameter 'n' is out of range"):
        client.generate_integers(10_001, 1, 6)
    with pytest.raises(ValueError, match="Error 301: Parameter 'n'"):
        client.generate_integers(7, 1, 6, replacement=False)
    with pytest.raises(RuntimeError, match="Error -32601"):
        client.generate_signed_integers(5, 1, 6)
    assert gateway.served() == before
