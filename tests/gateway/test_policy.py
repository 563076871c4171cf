"""One policy for every way out: REST and /mcp authenticate, charge and refuse alike."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from qrng_dd.gateway.policy import Policy
from qrng_dd.gateway.problem import Problem
from qrng_dd.ratelimit import RateLimiter
from tests.support.gateway import push_packets, start_gateway

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _policy(byte_rate: float = 0) -> tuple[Policy, _Clock]:
    clock = _Clock()
    return Policy([KEY_A, KEY_B], RateLimiter(10, 20, byte_rate, clock=clock)), clock


def test_the_bearer_header_wins_over_the_query_key() -> None:
    """Header first (it stays out of URLs and logs), the query key only without one."""
    policy, _ = _policy()
    assert policy.authenticate(f"Bearer {KEY_A}", KEY_B) == KEY_A
    assert policy.authenticate(f"bearer   {KEY_B}  ", None) == KEY_B
    assert policy.authenticate("Basic xyz", KEY_B) == KEY_B
    assert policy.authenticate(None, KEY_A) == KEY_A
    for authorization, query in [(None, None), ("Bearer", ""), (None, "")]:
        with pytest.raises(Problem) as missing:
            policy.authenticate(authorization, query)
        assert missing.value.status == 401
        assert missing.value.headers == {"WWW-Authenticate": "Bearer"}
    with pytest.raises(Problem, match="unknown API key"):
        policy.authenticate(f"Bearer {KEY_A}x", KEY_A)  # a bad header is not rescued


def test_an_x_api_key_header_comes_after_the_bearer_token_and_before_the_query() -> None:
    """ANU Quantum Numbers clients send ``x-api-key``: a key like the others, in its place in
    the order, and the first key present is the only one tried."""
    policy, _ = _policy()
    assert policy.authenticate(None, None, KEY_A) == KEY_A
    assert policy.authenticate(f"Bearer {KEY_B}", KEY_A, KEY_A) == KEY_B
    assert policy.authenticate("Basic xyz", KEY_B, KEY_A) == KEY_A
    assert policy.authenticate(None, KEY_B, KEY_A) == KEY_A
    assert policy.authenticate(None, KEY_B, "") == KEY_B
    with pytest.raises(Problem, match="unknown API key"):
        policy.authenticate(None, KEY_A, "wrong-key-0123456789")
    with pytest.raises(Problem, match="x-api-key: KEY"):
        policy.authenticate(None, None, None)
    assert policy.verify(KEY_B) == KEY_B
    with pytest.raises(Problem, match="unknown API key"):
        policy.verify(KEY_B[:-1])


def test_a_refusal_charges_nothing_and_says_when() -> None:
    """Past the byte budget: 429 with Retry-After and the fields; the request bucket kept."""
    policy, clock = _policy(byte_rate=1000)
    policy.admit(KEY_A, 1000)
    with pytest.raises(Problem) as refused:
        policy.admit(KEY_A, 1000)
    problem = refused.value
    assert (problem.status, problem.retry_after) == (429, 1)
    assert policy.headers(KEY_A) == {
        "cache-control": "no-store",
        "ratelimit-policy": '"requests";q=20;w=2, "bytes";q=1000;w=1;qu="content-bytes"',
        "ratelimit": '"requests";r=19;t=1, "bytes";r=0;t=1',
    }
    body = json.loads(problem.body())
    assert body["type"] == "https://qrng-dd.invalid/problems/too-many-requests"
    assert body["detail"] == "rate limit for this key exceeded; retry in 1 s"
    clock.now += 1.0
    policy.admit(KEY_A, 1000)  # refilled; the refused attempt took nothing
    # Bytes alone (a tool call inside an MCP request already charged as one request).
    policy.admit(KEY_B, 0)
    policy.admit(KEY_B, 500, request=False)
    assert policy.budget(KEY_B) == {
        "requests": {"limit": 20, "window_seconds": 2, "remaining": 19, "reset_seconds": 1},
        "bytes": {"limit": 1000, "window_seconds": 1, "remaining": 500, "reset_seconds": 1},
    }


def test_without_a_limiter_answers_are_still_no_store() -> None:
    """The standalone MCP server's token: no buckets, but never cacheable."""
    policy = Policy(["t" * 20])
    policy.admit("t" * 20, 10**9)
    assert policy.headers("t" * 20) == {"cache-control": "no-store"}
    assert policy.budget("t" * 20) == {}


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    return " ".join(getattr(part, "text", "") for part in content)


@pytest.mark.anyio
@pytest.mark.e2e
async def test_rest_and_mcp_give_the_same_429_under_the_byte_budget() -> None:
    """1,024 bytes a second per key: three draws of 4,096 are 200, 429, 429 over REST, and
    ok, refused, refused over /mcp, with the same problem, on the same gateway. (A draw above
    the budget passes once into debt: the next needs four seconds, far more than the test.)"""
    env = {
        "QRNG_API_KEYS": f"{KEY_A},{KEY_B}",
        "QRNG_BYTE_RATE_LIMIT": "1024",
        "QRNG_MCP_ENABLED": "true",
    }
    with start_gateway(env) as gw:
        push_packets(gw.url, gw.key, 8, 4096)
        async with httpx.AsyncClient(base_url=gw.url, timeout=20.0) as http:
            rest = [
                await http.get(
                    "/api/random",
                    params={"bytes": 4096},
                    headers={"Authorization": f"Bearer {KEY_A}"},
                )
                for _ in range(3)
            ]
            status = (
                await http.get("/api/status", headers={"Authorization": f"Bearer {KEY_A}"})
            ).json()
            ping = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Authorization": f"Bearer {KEY_B}"},
            )
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY_B}"}, timeout=20.0) as h,
            Client(streamable_http_client(f"{gw.url}/mcp", http_client=h)) as client,
        ):
            tools = [await client.call_tool("get_random_bytes", {"count": 4096}) for _ in range(3)]
    assert [r.status_code for r in rest] == [200, 429, 429]
    problem = rest[1].json()
    assert problem["title"] == "Too many requests"
    assert problem["detail"].startswith("rate limit for this key exceeded; retry in ")
    assert int(rest[1].headers["retry-after"]) >= 3
    assert [t.is_error for t in tools] == [False, True, True]
    for refused in tools[1:]:
        assert "Rate limited by the gateway: rate limit for this key exceeded; retry in " in (
            _text(refused)
        )
    # The caller's own budget in /api/status, and the MCP answers carry the policy's fields.
    assert status["caller"]["limits"]["bytes"]["limit"] == 1024
    assert status["caller"]["limits"]["bytes"]["remaining"] == 0
    assert ping.headers["cache-control"] == "no-store"
    assert '"bytes";q=1024;w=1' in ping.headers["ratelimit-policy"]
