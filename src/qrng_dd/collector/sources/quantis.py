"""An ID Quantique Quantis appliance (or ``qrng-dd appliance``) over HTTP(S).

``GET /api/2.0/streambytes?size=N`` answers raw bytes; some firmware answers a JSON array of
byte values instead, which is accepted too. Anything else is an error, most of all an HTML
error page, which must never be mistaken for entropy: the answer must be exactly ``N`` bytes
in one of the two accepted shapes.
"""

from __future__ import annotations

import json
import ssl
from urllib.parse import urlsplit, urlunsplit

import httpx

from qrng_dd.collector.sources.base import SourceError

STREAM_PATH = "/api/2.0/streambytes"


class QuantisSource:
    """Fetches from one appliance through the collector's shared HTTP client."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        if not path.endswith(STREAM_PATH):
            path += STREAM_PATH
        self.url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self.name = parts.netloc
        self._client = client

    async def fetch(self, n: int) -> bytes:
        try:
            response = await self._client.get(self.url, params={"size": n})
        except (httpx.HTTPError, ssl.SSLError) as err:  # TLS 1.3 alerts come on a read, bare
            raise SourceError(f"{self.name}: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise SourceError(f"{self.name}: HTTP {response.status_code}")
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        body = response.content
        if media == "application/json":
            body = _json_bytes(body, self.name)
        elif media not in ("application/octet-stream", "application/x-octet-stream", ""):
            raise SourceError(f"{self.name}: answered {media or 'no content type'}, not bytes")
        if len(body) != n:
            raise SourceError(f"{self.name}: {len(body)} bytes instead of {n}")
        return body


def _json_bytes(body: bytes, name: str) -> bytes:
    try:
        values = json.loads(body)
    except ValueError as err:
        raise SourceError(f"{name}: invalid JSON") from err
    if isinstance(values, dict):  # some firmware wraps the array: {"data": [...]}
        values = values.get("data")
    if not isinstance(values, list) or not all(type(v) is int and 0 <= v <= 255 for v in values):
        raise SourceError(f"{name}: JSON answer is not an array of byte values")
    return bytes(values)
