"""The OpenAPI 3.1 document for the gateway, written out rather than inferred.

The hot routes are plain Starlette, so nothing generates this from type hints; instead it is
built from the same limits the routes enforce (the settings and the constants in
:mod:`qrng_dd.gateway.app`), and a test checks that every route is described.
"""

from __future__ import annotations

from typing import Any

from qrng_dd import __version__
from qrng_dd.config import GatewaySettings

_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _int(name: str, low: int, high: int, default: int, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": text,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }


def _problem(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "A parameter is missing, malformed or out of range",
        401: "Missing or unknown API key",
        429: "Rate limited; see Retry-After and the RateLimit fields; nothing was charged",
        503: "Short of entropy; nothing was taken; see Retry-After",
    }
    return {str(code): _problem(texts[code]) for code in codes}


def _json(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def openapi_document(settings: GatewaySettings) -> dict[str, Any]:
    """The document, with the limits of this gateway's configuration."""
    from qrng_dd.gateway.app import (
        DEFAULT_SELFTEST_BYTES,
        MAX_COUNT,
        MAX_ITERATIONS,
        MAX_UUIDS,
        MIN_SELFTEST_BYTES,
    )

    entropy_errors = _errors(400, 401, 429, 503)
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    monte_carlo = {
        "summary": "Estimate pi from pool bytes (the seed's quality check)",
        "security": secured,
        "parameters": [_int("iterations", 1, MAX_ITERATIONS, 100_000, "points, 16 bytes each")],
        "responses": {"200": _json({"type": "object"}, "The estimate"), **entropy_errors},
    }
    selftest = {
        "summary": "FIPS 140-2 and SP 800-22 tests on pool bytes",
        "security": secured,
        "parameters": [
            _int(
                "bytes",
                MIN_SELFTEST_BYTES,
                settings.buffer_size,
                DEFAULT_SELFTEST_BYTES,
                "bytes to test (taken from the pool)",
            )
        ],
        "responses": {"200": _json({"type": "object"}, "The report"), **entropy_errors},
    }
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
                "apiKey": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                }
            },
        },
        "paths": {
            "/api/random": {
                "get": {
                    "summary": "Random bytes",
                    "security": secured,
                    "parameters": [
                        _int("bytes", 1, settings.max_request_bytes, 32, "how many bytes"),
                        {
                            "name": "encoding",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["hex", "base64", "binary"],
                                "default": "hex",
                            },
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Lowercase hex, padded base64, or raw bytes",
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                            },
                        },
                        **entropy_errors,
                    },
                }
            },
            "/api/integers": {
                "get": {
                    "summary": "Uniform integers in [min, max] (rejection sampling, no bias)",
                    "security": secured,
                    "parameters": [
                        _int("count", 1, MAX_COUNT, 10, "how many integers"),
                        {"name": "min", "in": "query", "schema": {**_INT64, "default": 0}},
                        {"name": "max", "in": "query", "schema": {**_INT64, "default": 100}},
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": _INT64}, "The integers"),
                        **entropy_errors,
                    },
                }
            },
            "/api/floats": {
                "get": {
                    "summary": "Floats in [0, 1), 53 random bits each",
                    "security": secured,
                    "parameters": [_int("count", 1, MAX_COUNT, 10, "how many floats")],
                    "responses": {
                        "200": _json(
                            {
                                "type": "array",
                                "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                            },
                            "The floats",
                        ),
                        **entropy_errors,
                    },
                }
            },
            "/api/uuid": {
                "get": {
                    "summary": "RFC 9562 version-4 UUIDs",
                    "security": secured,
                    "parameters": [_int("count", 1, MAX_UUIDS, 1, "how many UUIDs")],
                    "responses": {
                        "200": {
                            "description": "One UUID as text/plain, several as a JSON array",
                            "content": {
                                "text/plain": {"schema": {"type": "string", "format": "uuid"}},
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "uuid"},
                                    }
                                },
                            },
                        },
                        **entropy_errors,
                    },
                }
            },
            "/api/test/monte-carlo": {"get": monte_carlo, "post": monte_carlo},
            "/api/test/randomness": {"get": selftest, "post": selftest},
            "/api/status": {
                "get": {
                    "summary": "Pool, sources, refusals and warnings",
                    "security": secured,
                    "responses": {
                        "200": _json({"type": "object"}, "Status"),
                        **_errors(401, 429),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Health for load balancers (no auth)",
                    "responses": {
                        "200": _json({"type": "object"}, "healthy (>= 30 %) or degraded"),
                        "503": _json({"type": "object"}, "unhealthy (< 10 % full)"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (no auth)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/push": {
                "post": {
                    "summary": "Ingest one wire-format v1 packet (the packet's tag is the "
                    "credential)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-msgpack": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "Accepted"),
                        "400": _problem("malformed, bad_crc, stale, future or decrypt"),
                        "401": _problem("bad_mac"),
                        "403": _problem("wrong_dest"),
                        "409": _problem("replay"),
                        "413": _problem("oversize"),
                        "507": _problem("Pool full; the packet was not consumed"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI")},
                }
            },
            "/docs": {
                "get": {
                    "summary": "An HTML viewer of this document",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
        },
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
