"""P6 in the logs: a gateway logging every request never writes a key, only fingerprints."""

from __future__ import annotations

import pytest

from qrng_dd.logs import fingerprint
from tests.support.gateway import make_raw, push_packets, start_gateway, stop

pytestmark = pytest.mark.e2e


def test_access_log_names_keys_by_fingerprint_and_never_writes_a_secret() -> None:
    """Requests with ?api_key= and Bearer, good and bad, and refused pushes: no secret logged."""
    with start_gateway({"QRNG_ACCESS_LOG": "true", "QRNG_LOG_LEVEL": "info"}) as gw:
        push_packets(gw.url, gw.key, 2, 4096)
        with gw.client() as client:
            assert client.get("/api/random", params={"api_key": gw.api_key}).status_code == 200
            assert client.get("/api/uuid", headers=gw.auth).status_code == 200
            wrong = "wrong-key-that-is-long-enough"
            assert client.get("/api/uuid", params={"api_key": wrong}).status_code == 401
            forged = make_raw(gw.key, b"x" * 64)[:-1] + b"\x00"
            assert client.post("/push", content=forged).status_code == 401
        # The access log is written in batches; a clean stop flushes the last one.
        assert stop(gw.proc) == 0
        log = gw.stderr()
    assert '"event": "request"' in log
    assert fingerprint(gw.api_key) in log
    assert gw.api_key not in log
    assert wrong not in log
    assert gw.hmac_hex not in log
