"""Entropy sources, one module per kind; :func:`open_source` picks one by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from qrng_dd.collector.sources.base import Source, SourceError
from qrng_dd.collector.sources.file import FileSource
from qrng_dd.collector.sources.quantis import QuantisSource

__all__ = ["FileSource", "QuantisSource", "Source", "SourceError", "open_source"]


def open_source(url: str, client: httpx.AsyncClient) -> Source:
    """The source for ``url``: ``file://`` reads locally, ``http(s)://`` is a Quantis."""
    if urlsplit(url).scheme == "file":
        return FileSource(url)
    return QuantisSource(url, client)
