"""RFC 9457 problem documents: the one way every refusal reads, on every way out.

The REST routes, ``/push``, the ``/mcp`` guard, 404 and 405 all raise or send a
:class:`Problem`, so a client (or a model) sees one shape, one media type and one family of
``type`` URIs whatever it called. Pure: no framework import; :func:`send_problem` speaks raw
ASGI messages, which are plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Final

PROBLEM: Final = "application/problem+json"

#: An ASGI ``send`` callable, spelled out so this module imports no framework.
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Problem(Exception):  # noqa: N818 - it is an HTTP problem document, not an error type
    """An RFC 9457 problem: raised where a request fails, rendered by whichever way it came."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})

    @property
    def retry_after(self) -> int | None:
        value = self.headers.get("Retry-After")
        return int(value) if value is not None else None

    def body(self) -> bytes:
        slug = self.title.lower().replace(" ", "-")
        document = {
            "type": f"https://qrng-dd.invalid/problems/{slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return json.dumps(document).encode("utf-8")

    def raw_headers(self, body: bytes) -> list[tuple[bytes, bytes]]:
        """The ASGI header list of this problem sent as ``body``, type and length included."""
        body_length = str(len(body)).encode("ascii")
        raw = [(b"content-type", PROBLEM.encode("ascii")), (b"content-length", body_length)]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        return raw


def unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def bad_parameter(detail: str) -> Problem:
    """400 for a request parameter; ``detail`` names the parameter and what it accepts."""
    return Problem(400, "Bad parameter", detail)


def internal_error() -> Problem:
    return Problem(500, "Internal error", "the gateway failed; see its log")


async def send_problem(
    send: Send, problem: Problem, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """``problem`` as a whole ASGI response; ``extra`` header pairs go first."""
    body = problem.body()
    headers = [*extra, *problem.raw_headers(body)]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
