"""One policy for every way out: who may draw, how much, and how a refusal reads.

REST routes, the ``/mcp`` mount and any route added later ask the same :class:`Policy`, so a
new way out cannot forget a check:

* **Authentication**: ``Authorization: Bearer KEY`` first, else an ``x-api-key: KEY`` header
  (how ANU Quantum Numbers clients send theirs, :mod:`~qrng_dd.gateway.compat.anu`), else
  ``?api_key=KEY`` (the headers are the ones that stay out of URLs and logs). Every
  configured key is compared in constant time, whatever matched first (P6).
* **Limits**: per key, a request bucket and (``QRNG_BYTE_RATE_LIMIT``) a byte budget, charged
  together or not at all (:class:`~qrng_dd.ratelimit.RateLimiter`). A request that can never
  fit is still served once the bucket is full, in debt, so it is slowed, never refused
  forever.
* **Headers**: every authenticated answer carries ``Cache-Control: no-store`` (bytes served
  once must never be served again by a shared cache, least of all one keyed on a URL with
  ``?api_key=``), and the ``RateLimit-Policy`` / ``RateLimit`` fields of the IETF httpapi
  draft (``draft-ietf-httpapi-ratelimit-headers``): one ``"requests"`` and, with a byte
  budget, one ``"bytes"`` policy, each ``q`` (quota) per ``w`` seconds, and ``r`` remaining
  with ``t`` seconds until the bucket is full again.
* **Refusals**: :class:`~qrng_dd.gateway.problem.Problem` (401, 429), rendered by the caller's
  way out like every other problem.

Pure: no framework import, the clock lives in the limiter.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from qrng_dd.gateway.problem import Problem, unauthorized
from qrng_dd.ratelimit import Quota, RateLimiter


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None (no header, another
    scheme, no token). The front asks first, so it reads ``x-api-key`` only without one."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Policy:
    """Authentication, limits and the headers that say so, for one set of API keys."""

    def __init__(self, keys: Sequence[str], limiter: RateLimiter | None = None) -> None:
        self._keys = [key.encode() for key in keys]
        self.limiter = limiter
        # Built once: all but the remaining budget is the same on every answer.
        self._fixed: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store")]
        if limiter is not None:
            policy = _policy_field(limiter.quotas(None)).encode("ascii")
            self._fixed.append((b"ratelimit-policy", policy))

    def authenticate(
        self, authorization: str | None, query_key: str | None, header_key: str | None = None
    ) -> str:
        """The API key presented, if it is one of ours: the bearer token, else ``header_key``
        (the ``x-api-key`` header), else ``query_key`` (``?api_key=``). The first one present
        is the only one tried: a wrong key is not rescued by another.

        Raises:
            Problem: 401.
        """
        return self.verify(bearer_token(authorization) or header_key or query_key)

    def verify(self, presented: str | None) -> str:
        """``presented`` if it is one of our keys (the front picks it from the request itself,
        so a bearer token is parsed once per request).

        Raises:
            Problem: 401.
        """
        if not presented:
            raise unauthorized(
                "an API key is required: Authorization: Bearer KEY, x-api-key: KEY or ?api_key=KEY"
            )
        candidate = presented.encode()
        found: bytes | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key):
                found = key
        if found is None:
            raise unauthorized("unknown API key")
        return found.decode()

    def admit(self, key: str, nbytes: int = 0, *, request: bool = True) -> None:
        """Charge one request (unless ``request`` is false) and ``nbytes`` to ``key``.

        Raises:
            Problem: 429 with ``Retry-After`` and the RateLimit fields; nothing was charged.
        """
        if self.limiter is None:
            return
        wait = self.limiter.check(key, nbytes, request=request)
        if wait:
            detail = f"rate limit for this key exceeded; retry in {wait} s"
            raise Problem(429, "Too many requests", detail, {"Retry-After": str(wait)})

    def raw_headers(self, key: str) -> list[tuple[bytes, bytes]]:
        """What every answer to ``key`` carries, refusals included, as ASGI header pairs.

        On every authenticated request, so built cheaply: fixed pairs once, the budget left
        straight from the buckets (about 1 µs; ``make bench`` small routes).
        """
        if self.limiter is None:
            return self._fixed
        return [*self._fixed, (b"ratelimit", self.limiter.state_field(key).encode("ascii"))]

    def headers(self, key: str) -> dict[str, str]:
        """:meth:`raw_headers` as a mapping of names to values."""
        return {name.decode(): value.decode() for name, value in self.raw_headers(key)}

    def budget(self, key: str) -> dict[str, Any]:
        """The calling key's limits and what is left of them, for ``/api/status``."""
        if self.limiter is None:
            return {}
        return {
            quota.name: {
                "limit": quota.limit,
                "window_seconds": quota.window,
                "remaining": quota.remaining,
                "reset_seconds": quota.reset,
            }
            for quota in self.limiter.quotas(key)
        }


def _policy_field(quotas: Sequence[Quota]) -> str:
    items = []
    for quota in quotas:
        unit = ';qu="content-bytes"' if quota.name == "bytes" else ""
        items.append(f'"{quota.name}";q={quota.limit};w={quota.window}{unit}')
    return ", ".join(items)
