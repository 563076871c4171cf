"""The asynchronous client: :class:`~qrng_dd.client.sync.Client`'s methods, awaitable.

>>> async with AsyncClient() as qrng:  # QRNG_GATEWAY_URL, QRNG_GATEWAY_API_KEY
...     nonce = await qrng.random_bytes(12)
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from qrng_dd.client import protocol
from qrng_dd.client.protocol import Limits, Plan
from qrng_dd.client.sync import DEFAULT_MAX_WAIT_S, http_options, jittered

P = TypeVar("P")
R = TypeVar("R")


class AsyncClient:
    """A gateway's REST API for asyncio or trio; the same arguments and errors as
    :class:`~qrng_dd.client.sync.Client`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_wait: float = DEFAULT_MAX_WAIT_S,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = http_options(url, api_key, timeout, verify)
        self.url: str = options["base_url"]
        self.timeout = timeout
        self.max_wait = max_wait
        self._limits: Limits | None = None
        self._http = httpx.AsyncClient(**options, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.from_openapi(await self._document("/openapi.json"))
        return self._limits

    async def random_bytes(self, count: int) -> bytes:
        return await self._run(protocol.random_bytes(await self.limits(), count))

    async def integers(self, count: int, low: int = 0, high: int = 100) -> list[int]:
        return await self._run(protocol.integers(await self.limits(), count, low, high))

    async def floats(self, count: int) -> list[float]:
        return await self._run(protocol.floats(await self.limits(), count))

    async def uuids(self, count: int = 1) -> list[str]:
        return await self._run(protocol.uuids(await self.limits(), count))

    async def status(self) -> dict[str, Any]:
        return await self._document("/api/status")

    async def health(self) -> dict[str, Any]:
        return await self._document("/health")

    async def fetch_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """Any other JSON route, e.g. ``fetch_json("/api/dice", {"notation": "3d6"})``:
        waits on ``Retry-After`` like the rest, but neither splits nor checks the answer."""
        try:
            return (await self._get(path, params)).json()
        except ValueError:
            raise protocol.malformed(path, "a body that is not JSON") from None

    async def randomness_report(self, count: int = 125_000) -> dict[str, Any]:
        return await self._document("/api/test/randomness", {"bytes": count})

    async def _run(self, plan: Plan[P, R]) -> R:
        return plan.join([plan.decode(await self._get(plan.path, q), n) for q, n in plan.parts])

    async def _document(
        self, path: str, params: dict[str, str | int] | None = None
    ) -> dict[str, Any]:
        return protocol.document(await self._get(path, params), path)

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        waited = 0.0
        while True:
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as err:
                raise protocol.unreachable(self.url, err, self.timeout) from err
            if response.is_success:
                return response
            delay = protocol.retry_delay(response)
            if delay is None or waited + delay > self.max_wait:
                raise protocol.failure(response)
            await anyio.sleep(jittered(delay))
            waited += delay
