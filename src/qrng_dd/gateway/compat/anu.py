"""ANU QRNG-compatible routes (the legacy ``/API/jsonI.php`` and the AQN API)."""

from __future__ import annotations

from typing import Final

from qrng_dd.gateway.api import Route

ROUTES: Final[tuple[Route, ...]] = ()
