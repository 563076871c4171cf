"""Streamable HTTP for the MCP tools: the ``Origin`` check, the caller's key, the mount."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qrng_dd.gateway.policy import Policy
from qrng_dd.gateway.problem import Problem, send_problem
from qrng_dd.mcp.backends import ServiceBackend
from qrng_dd.mcp.tools import CALLER_SCOPE_KEY, create_server

if TYPE_CHECKING:
    from qrng_dd.gateway.service import EntropyService

log = logging.getLogger(__name__)


MCP_PATH: Final = "/mcp"

# One MCP client holds one session; a few hundred cover any real deployment, and a cap keeps
# a flood of initialize requests from growing memory without bound.
MAX_SESSIONS: Final = 256
# MCP messages here are small JSON-RPC requests; 1 MiB is generous and bounds a hostile body.
MAX_BODY_BYTES: Final = 1_048_576

_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

# -- HTTP guard -------------------------------------------------------------------------------


def origin_allowed(origin: str, allowed: Iterable[str] = ()) -> bool:
    """True for a loopback origin (any port) or one listed in ``allowed``."""
    if origin.rstrip("/") in {entry.rstrip("/") for entry in allowed}:
        return True
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and host in _LOCAL_HOSTS


class _Guard:
    """ASGI wrapper: Origin check (403), then the :class:`Policy`: credential (401), request
    bucket (429). The key it authenticated travels in the scope (:data:`CALLER_SCOPE_KEY`) so
    the tools charge draws to it; every answer to it carries the policy's headers
    (``Cache-Control: no-store``, RateLimit)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | None,
        allowed_origins: Sequence[str] = (),
        query_param: str | None = None,
    ) -> None:
        self.app = app
        self._policy = policy
        self._origins = tuple(allowed_origins)
        self._query_param = query_param

    def _query_key(self, scope: Scope) -> str | None:
        if self._query_param is None:
            return None
        raw: bytes = scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1")).get(self._query_param)
        return values[0] if values else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, self._origins):
            log.warning("mcp_origin_refused origin=%r", origin[:100])
            detail = "this Origin may not use the MCP endpoint (see QRNG_MCP_ALLOWED_ORIGINS)"
            await send_problem(send, Problem(403, "Forbidden", detail))
            return
        if self._policy is None:
            await self.app(scope, receive, send)
            return
        try:
            key = self._policy.authenticate(
                headers.get("authorization"), self._query_key(scope), headers.get("x-api-key")
            )
        except Problem as problem:
            await send_problem(send, problem)
            return
        try:
            # The gateway's own per-key buckets: an MCP request counts like a REST request.
            self._policy.admit(key)
        except Problem as problem:
            await send_problem(send, problem, self._policy.raw_headers(key))
            return
        extra = self._policy.raw_headers(key)

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app({**scope, CALLER_SCOPE_KEY: key}, receive, send_with_policy)


def _security() -> TransportSecuritySettings:
    # The SDK's own Host allow-list would refuse every name but localhost when the server is
    # bound to a public address; _Guard checks Origin (the DNS-rebinding defence) instead.
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def create_http_app(
    server: MCPServer[Any], *, auth_token: str | None = None, allowed_origins: Sequence[str] = ()
) -> ASGIApp:
    """Streamable HTTP at ``/mcp``, guarded by Origin and (when given) a bearer token.

    The returned app has a lifespan that runs the SDK's session manager.
    """
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=_security(),
        max_sessions=MAX_SESSIONS,
        max_request_body_size=MAX_BODY_BYTES,
    )
    policy = Policy([auth_token]) if auth_token else None
    return _Guard(app, policy=policy, allowed_origins=allowed_origins)


def mount_in_gateway(
    service: EntropyService,
) -> tuple[ASGIApp, Callable[[], AbstractAsyncContextManager[None]]]:
    """The gateway's ``/mcp`` app over its own service, and the lifespan it must enter.

    The front mounts it at exactly ``/mcp`` (no redirect to ``/mcp/``, which MCP clients do
    not follow for a POST). It asks for one of the gateway's API keys (``Authorization:
    Bearer KEY`` or ``?api_key=KEY``) and charges the request through the gateway's policy.
    """
    server = create_server(ServiceBackend(service))
    # Builds the SDK's session manager; its Starlette wrapper is not used, only the manager.
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=_security(),
        max_sessions=MAX_SESSIONS,
        max_request_body_size=MAX_BODY_BYTES,
    )
    manager = server.session_manager
    guard = _Guard(manager.handle_request, policy=service.policy, query_param="api_key")
    return guard, manager.run
