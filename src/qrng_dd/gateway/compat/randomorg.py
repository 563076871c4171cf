"""RANDOM.ORG JSON-RPC 4 basic methods at ``POST /json-rpc/4/invoke``."""

from __future__ import annotations

from typing import Final

from qrng_dd.gateway.api import Route

ROUTES: Final[tuple[Route, ...]] = ()
