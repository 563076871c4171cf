"""Structured logs with structlog: JSON lines by default, console for people.

Nothing secret is ever bound to a logger: API keys appear only as :func:`fingerprint`, the
HMAC key never (P6).
"""

from __future__ import annotations

import hashlib
import logging
import sys

import structlog


def configure(fmt: str = "json", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr in the chosen format."""
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s", force=True)


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a key, safe to log."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]
