"""The OpenAPI 3.1 document, made from the route table (:mod:`qrng_dd.gateway.routes`).

Every path, method, parameter limit and default comes from the same :class:`Route` entries the
front serves, bound to this gateway's settings, so the document cannot drift from what is
enforced; a test checks it describes exactly the routes served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qrng_dd import __version__
from qrng_dd.gateway.api import Param, Route

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKeyHeader": []}, {"apiKey": []}]
_PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def _parameter(param: Param) -> dict[str, Any]:
    schema: dict[str, Any]
    if param.choices:
        schema = {"type": "string", "enum": list(param.choices)}
    elif param.kind == "text":
        schema = {"type": "string", "minLength": param.low, "maxLength": param.high}
    elif param.kind == "number":
        schema = {"type": "number", "minimum": param.low, "maximum": param.high}
    else:
        schema = {"type": "integer", "minimum": param.low, "maximum": param.high}
    if param.default is not None:
        schema["default"] = param.default
    return {
        "name": param.name,
        "in": "query",
        "required": param.default is None,
        "description": param.description,
        "schema": schema,
    }


def _operation(route: Route) -> dict[str, Any]:
    content = {c.media_type: {"schema": dict(c.schema)} for c in route.content}
    responses: dict[str, Any] = {"200": {"description": route.ok, "content": content}}
    for status, text in route.also.items():
        responses[str(status)] = {"description": text, "content": content}
    for status, text in route.errors.items():
        responses[str(status)] = {
            "description": text,
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
    operation: dict[str, Any] = {"summary": route.summary}
    if route.auth:
        operation["security"] = _SECURED
    if route.params:
        operation["parameters"] = [_parameter(p) for p in route.params]
    if route.request_body is not None:
        body = route.request_body
        operation["requestBody"] = {
            "required": True,
            "content": {body.media_type: {"schema": dict(body.schema)}},
        }
    operation["responses"] = responses
    return operation


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The document for ``routes``, bound to this gateway's settings (their limits)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route)
        ops = paths.setdefault(route.path, {})
        for method in map(str.lower, route.methods):
            # One method: the route's name; several: one id each, as OpenAPI requires.
            op_id = route.name if len(route.methods) == 1 else f"{route.name}_{method}"
            ops[method] = {"operationId": op_id, **operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qrng-dd gateway",
            "version": __version__,
            "description": "Quantum entropy carried out of an isolated network through a "
            "one-way software data diode. Every byte is served at most once.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "apiKey": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": {"Problem": _PROBLEM_SCHEMA},
        },
        "paths": paths,
    }


#: A self-contained viewer: no script from a CDN, nothing fetched but /openapi.json itself.
DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qrng-dd gateway API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .2rem}
.op{border:1px solid #ddd;border-radius:.4rem;margin:.6rem 0;padding:.6rem}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
</style></head>
<body><h1>qrng-dd gateway API</h1>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>.
Authenticated routes take <code>Authorization: Bearer KEY</code> (preferred, and it wins)
or <code>?api_key=KEY</code>; their answers carry <code>Cache-Control: no-store</code> and
the <code>RateLimit-Policy</code> / <code>RateLimit</code> fields.</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const root = document.getElementById('ops'); root.textContent = '';
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const div = document.createElement('div'); div.className = 'op';
      const h = document.createElement('div');
      const m = document.createElement('span'); m.className = 'm'; m.textContent = method;
      const p = document.createElement('code'); p.textContent = path;
      h.append(m, p, document.createTextNode(' ' + (op.summary || '')));
      div.append(h);
      for (const prm of op.parameters || []) {
        const s = prm.schema || {};
        const li = document.createElement('div');
        li.textContent = `${prm.name}: ${s.type || ''} ` +
          (s.enum ? s.enum.join('|') : `${s.minimum ?? ''}..${s.maximum ?? ''}`) +
          (s.default !== undefined ? ` (default ${s.default})` : '');
        div.append(li);
      }
      root.append(div);
    }
  }
});
</script></body></html>
"""
