"""The gateway's route handlers: thin, over :class:`~qrng_dd.gateway.service.EntropyService`.

Each takes a :class:`~qrng_dd.gateway.api.Call` whose arguments the front has already parsed,
range-checked and charged (the table in :mod:`qrng_dd.gateway.routes` says how), and returns
a :class:`~qrng_dd.gateway.api.Reply`. Short of entropy, the service raises and the front
answers 503; nothing here touches HTTP beyond choosing a media type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qrng_dd.errors import PacketError, PoolFullError, StateError
from qrng_dd.gateway import derive, report
from qrng_dd.gateway.api import OCTET, TEXT, Call, Reply, read_body
from qrng_dd.gateway.openapi import DOCS_HTML, openapi_document
from qrng_dd.gateway.problem import Problem
from qrng_dd.logs import fingerprint
from qrng_dd.wire.packet import MAX_PACKET_BYTES

_PUSH_STATUS: Final[Mapping[str, int]] = {
    "oversize": 413,
    "bad_mac": 401,
    "wrong_dest": 403,
    "replay": 409,
}
_DOCS: Final = DOCS_HTML.encode("utf-8")

# -- entropy ------------------------------------------------------------------------------


def random(call: Call) -> Reply:
    encoding = call.args["encoding"]
    body = derive.encode(call.service.take(call.args["bytes"]), encoding)
    return Reply(body, OCTET if encoding == "binary" else TEXT)


def integers(call: Call) -> Reply:
    args = call.args  # min <= max: the route's check
    return Reply.json(call.service.integers(args["count"], args["min"], args["max"]))


def floats(call: Call) -> Reply:
    return Reply.json(call.service.floats(call.args["count"]))


def uuid(call: Call) -> Reply:
    count = call.args["count"]
    values = call.service.uuids(count)
    if count == 1:
        return Reply(values[0].encode("utf-8"), TEXT)
    return Reply.json(values)


def monte_carlo(call: Call) -> Reply:
    return Reply.json(call.service.monte_carlo(call.args["iterations"]))


def randomness(call: Call) -> Reply:
    from qrng_dd.gateway.randomness import randomness_report

    return Reply.json(randomness_report(call.service.take(call.args["bytes"])))


# -- operations ---------------------------------------------------------------------------


def status(call: Call) -> Reply:
    document = report.status(call.service)
    policy = call.service.policy
    document["caller"] = {"key": fingerprint(call.key), "limits": policy.budget(call.key)}
    return Reply.json(document)


def health(call: Call) -> Reply:
    code, body = report.health(call.service)
    return Reply.json(body, code)


def metrics(call: Call) -> Reply:
    return Reply(generate_latest(call.service.metrics.registry), CONTENT_TYPE_LATEST)


def openapi(call: Call) -> Reply:
    return Reply.json(openapi_document(call.routes))


def docs(call: Call) -> Reply:
    return Reply(_DOCS, "text/html")


async def _push_body(call: Call) -> bytes | None:
    """The /push body, or None over the packet size; read within the overload limits.

    At most ``QRNG_MAX_PUSH_BODIES`` bodies are read at once (each up to 1 MiB, so their
    memory is bounded whatever number of connections send them), and each must arrive within
    ``QRNG_BODY_TIMEOUT_S``: a body sent a byte at a time cannot hold a slot for longer. A
    collector takes either refusal (503, 408) as "send again".
    """
    service = call.service
    settings = service.settings
    if service.push_bodies_reading >= settings.max_push_bodies:
        raise Problem(
            503,
            "Busy",
            f"{settings.max_push_bodies} push bodies are being read already "
            "(QRNG_MAX_PUSH_BODIES); send again",
            {"Retry-After": "1", "Connection": "close"},
        )
    service.push_bodies_reading += 1
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await read_body(call, MAX_PACKET_BYTES)
    except TimeoutError:
        raise Problem(
            408,
            "Body too slow",
            f"the body did not arrive within {settings.body_timeout_s:g} s (QRNG_BODY_TIMEOUT_S)",
            {"Connection": "close"},
        ) from None
    finally:
        service.push_bodies_reading -= 1


async def push(call: Call) -> Reply:
    """One packet in: verified, recorded, pooled, or refused with the reason's status."""
    service = call.service
    raw = await _push_body(call)
    if raw is None:
        # Refused before ingest ever sees it, but counted all the same (DESIGN §3).
        err = PacketError("oversize", f"body is over {MAX_PACKET_BYTES} bytes")
        service.refuse(err, "http")
        # The rest of the body is never read: closing says so, instead of leaving the peer
        # to find its next request parsed from the middle of this one's body.
        raise Problem(413, "Packet refused", f"oversize: {err.detail}", {"Connection": "close"})
    try:
        result = await service.ingest(raw)
    except StateError:
        raise Problem(
            503,
            "State not durable",
            "the packet was accepted but its sequence number could not be written to the "
            "state directory, so its bytes were dropped; see the gateway's log",
        ) from None
    except PacketError as err:
        status = _PUSH_STATUS.get(err.reason, 400)
        raise Problem(status, "Packet refused", f"{err.reason}: {err.detail}") from None
    except PoolFullError:
        raise Problem(
            507,
            "Pool full",
            "the pool is full under the discard policy; the packet was not consumed, "
            "send it again later",
            {"Retry-After": str(service.retry_after())},
        ) from None
    # The JSON object built directly: ints, and a finite float whose repr is its JSON.
    fill = round(service.pool.fill_percent, 3)
    answer = b'{"accepted_bytes":%d,"dropped_bytes":%d,"buffer_fill_percent":%s}' % (
        result.accepted_bytes,
        result.dropped_bytes,
        repr(fill).encode("ascii"),
    )
    return Reply(answer, "application/json")
