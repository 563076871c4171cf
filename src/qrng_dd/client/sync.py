"""The blocking client: every gateway route as a method, big requests split, 429/503 waited on.

>>> with Client("https://qrng.example:7764", api_key) as qrng:
...     key_material = qrng.random_bytes(32)
...     dice = qrng.integers(10, 1, 6)
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx

from qrng_dd import __version__
from qrng_dd.client import protocol
from qrng_dd.client.protocol import ClientError, Limits, Plan

P = TypeVar("P")
R = TypeVar("R")

#: How long a call may wait in all on ``Retry-After`` before it raises, by default.
DEFAULT_MAX_WAIT_S: Final = 30.0


def settings(url: str | None, api_key: str | None) -> tuple[str, str]:
    """The gateway URL and key: the arguments, else ``QRNG_GATEWAY_URL`` and
    ``QRNG_GATEWAY_API_KEY``, else the local default URL; a key is required."""
    url = (url or os.environ.get(protocol.URL_VARIABLE) or protocol.DEFAULT_URL).rstrip("/")
    api_key = api_key or os.environ.get(protocol.KEY_VARIABLE)
    if not api_key:
        msg = f"no API key: pass api_key= or set {protocol.KEY_VARIABLE}"
        raise protocol.AuthenticationError(msg)
    return url, api_key


def http_options(
    url: str | None, api_key: str | None, timeout: float, verify: bool | ssl.SSLContext
) -> dict[str, Any]:
    """The ``httpx.Client`` / ``AsyncClient`` arguments both clients share.

    Raises:
        AuthenticationError: no key given or in the environment.
    """
    base_url, key = settings(url, api_key)
    return {
        "base_url": base_url,
        # The key goes in the header, never the query string: it stays out of access logs.
        "headers": {
            "Authorization": f"Bearer {key}",
            "User-Agent": f"qrng-dd-client/{__version__}",
        },
        "timeout": timeout,
        "verify": verify,
        "follow_redirects": False,
    }


def jittered(delay: float) -> float:
    """``delay`` plus up to 10 %, so clients told to wait together do not return together."""
    return delay * (1.0 + 0.1 * random.random())


class Client:
    """A gateway's REST API, blocking. Thread-safe (one pooled ``httpx.Client``).

    Args:
        url: the gateway, e.g. ``https://qrng.example:7764``; default ``QRNG_GATEWAY_URL``.
        api_key: default ``QRNG_GATEWAY_API_KEY``.
        timeout: seconds for each request.
        max_wait: seconds one call may spend waiting on ``Retry-After`` (429 and 503) before
            it raises :class:`~qrng_dd.client.RateLimitedError` or
            :class:`~qrng_dd.client.EntropyUnavailableError`; 0 never waits.
        verify: TLS verification: True (the system's CAs), or an ``ssl.SSLContext`` trusting
            a private CA (``ssl.create_default_context(cafile=...)``).

    Raises:
        ClientError: every failure, as one of its subclasses; never a fallback value.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_wait: float = DEFAULT_MAX_WAIT_S,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = http_options(url, api_key, timeout, verify)
        self.url: str = options["base_url"]
        self.timeout = timeout
        self.max_wait = max_wait
        self._limits: Limits | None = None
        self._http = httpx.Client(**options, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def limits(self) -> Limits:
        """The most this gateway serves in one request (read once from ``/openapi.json``)."""
        if self._limits is None:
            self._limits = Limits.from_openapi(self._document("/openapi.json"))
        return self._limits

    def random_bytes(self, count: int) -> bytes:
        """``count`` bytes, each served once by the gateway, never reused."""
        return self._run(protocol.random_bytes(self.limits(), count))

    def integers(self, count: int, low: int = 0, high: int = 100) -> list[int]:
        """``count`` integers uniform in ``[low, high]`` (both inclusive, no modulo bias)."""
        return self._run(protocol.integers(self.limits(), count, low, high))

    def floats(self, count: int) -> list[float]:
        """``count`` floats uniform in ``[0, 1)``, 53 random bits each."""
        return self._run(protocol.floats(self.limits(), count))

    def uuids(self, count: int = 1) -> list[str]:
        """``count`` version-4 UUIDs."""
        return self._run(protocol.uuids(self.limits(), count))

    def status(self) -> dict[str, Any]:
        """``/api/status``: the pool, the link, this key's limits left."""
        return self._document("/api/status")

    def health(self) -> dict[str, Any]:
        """``/health``; an unhealthy gateway answers 503, which raises."""
        return self._document("/health")

    def fetch_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """Any other JSON route, e.g. ``fetch_json("/api/dice", {"notation": "3d6"})``:
        waits on ``Retry-After`` like the rest, but neither splits nor checks the answer."""
        try:
            return (self._get(path, params)).json()
        except ValueError:
            raise protocol.malformed(path, "a body that is not JSON") from None

    def randomness_report(self, count: int = 125_000) -> dict[str, Any]:
        """``/api/test/randomness`` over ``count`` fresh bytes from the pool."""
        return self._document("/api/test/randomness", {"bytes": count})

    def _run(self, plan: Plan[P, R]) -> R:
        return plan.join([plan.decode(self._get(plan.path, q), n) for q, n in plan.parts])

    def _document(self, path: str, params: dict[str, str | int] | None = None) -> dict[str, Any]:
        return protocol.document(self._get(path, params), path)

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        waited = 0.0
        while True:
            try:
                response = self._http.get(path, params=params)
            except httpx.HTTPError as err:
                raise protocol.unreachable(self.url, err, self.timeout) from err
            if response.is_success:
                return response
            delay = protocol.retry_delay(response)
            if delay is None or waited + delay > self.max_wait:
                raise protocol.failure(response)
            time.sleep(jittered(delay))
            waited += delay


__all__ = ["DEFAULT_MAX_WAIT_S", "Client", "ClientError"]
