"""Real ANU QRNG clients, unchanged but for their base URL, against a real gateway process.

``quantumrandom`` (the legacy ``/API/jsonI.php``) runs in this process: its module-level
``URL`` is pointed at the gateway and the key rides on the ``urllib`` opener it uses, as a
user would do it. ``qrandom`` (the AQN API) reads ``QRANDOM_API_KEY`` and builds its
module-level generator at import, so it runs in a fresh interpreter with the key in its
environment and ``qrandom._api.Client.url`` pointed at the gateway.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import quantumrandom  # type: ignore[import-untyped]

from tests.support.gateway import RunningGateway, push_packets, start_gateway

pytestmark = pytest.mark.e2e

PACKET_BYTES = 65_536
#: Bytes one qrandom batch draws: 1024 hex16 strings of four 16-bit blocks.
QRANDOM_BATCH_BYTES = 1024 * 8
HAS_NUMPY = importlib.util.find_spec("numpy") is not None
HAS_RANDOMGEN = HAS_NUMPY and importlib.util.find_spec("randomgen") is not None


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with start_gateway({"QRNG_RATE_LIMIT": "100000"}) as gw:
        push_packets(gw.url, gw.key, 8, PACKET_BYTES)
        yield gw


def _served(gw: RunningGateway) -> int:
    served: int = gw.status()["total_bytes_served"]
    return served


@pytest.fixture
def legacy_url(gateway: RunningGateway) -> Iterator[str]:
    """quantumrandom pointed at the gateway, its requests carrying the key; undone after."""
    url = gateway.url + "/API/jsonI.php"
    original = quantumrandom.URL
    opener = urllib.request.build_opener()
    opener.addheaders = [*opener.addheaders, ("Authorization", f"Bearer {gateway.api_key}")]
    quantumrandom.URL = url
    urllib.request.install_opener(opener)
    try:
        yield url
    finally:
        quantumrandom.URL = original
        urllib.request.install_opener(urllib.request.build_opener())  # the default one


def test_quantumrandom_gets_every_shape_it_asks_for(
    gateway: RunningGateway, legacy_url: str
) -> None:
    before = _served(gateway)
    uint16 = quantumrandom.get_data("uint16", 10)
    assert len(uint16) == 10
    assert all(isinstance(v, int) and 0 <= v <= 65535 for v in uint16)
    strings = quantumrandom.get_data("hex16", 5, 3)  # 5 strings of 3 bytes
    assert [len(s) for s in strings] == [6] * 5
    assert all(int(s, 16) < 2**24 for s in strings)
    text = quantumrandom.hex(4, 8)
    assert len(text) == 64
    assert int(text, 16) >= 0
    raw = quantumrandom.binary(4, 8)
    assert isinstance(raw, bytes)
    assert len(raw) == 32
    # randint fetches a fresh batch of 1024 uint16 per call unless given a generator.
    rolls = [quantumrandom.randint(0, 10) for _ in range(2)]
    shared = quantumrandom.cached_generator()
    rolls += [quantumrandom.randint(0, 10, generator=shared) for _ in range(20)]
    assert all(0 <= r <= 10 for r in rolls)
    assert len(set(rolls)) > 1
    cached = quantumrandom.cached_generator(cache_size=16)
    assert all(0 <= next(cached) <= 65535 for _ in range(20))  # two batches of 16
    drawn = 10 * 2 + 5 * 3 + 4 * 8 + 4 * 8 + 3 * 1024 * 2 + 2 * 16 * 2
    if HAS_NUMPY:
        array = quantumrandom.uint16(16)
        assert array.dtype.name == "uint16"
        assert array.shape == (16,)
        drawn += 16 * 2
    assert _served(gateway) - before == drawn


def _http_error(call: Any) -> tuple[int, str]:
    """The status and problem detail of the ``urllib`` error ``call()`` raises."""
    with pytest.raises(urllib.error.HTTPError) as raised:
        call()
    error = raised.value
    try:
        detail: str = json.loads(error.read())["detail"]
    finally:
        error.close()
    return error.code, detail


def test_quantumrandom_sees_refusals_as_http_errors(
    gateway: RunningGateway, legacy_url: str
) -> None:
    """A bad parameter is an HTTPError naming it; without the key, an HTTPError 401."""
    status, detail = _http_error(lambda: quantumrandom.get_data("uint16", 0))
    assert status == 400
    assert "'length'" in detail
    urllib.request.install_opener(urllib.request.build_opener())  # no key any more
    status, detail = _http_error(lambda: quantumrandom.get_data("uint16", 1))
    assert status == 401
    assert "API key" in detail


# Runs in a fresh interpreter: argv[1] is the gateway's URL; prints one JSON object.
_QRANDOM = """
import json, sys
import requests
import qrandom
from qrandom import _api

_api.Client.url = sys.argv[1]
out = {
    "random": [qrandom.random() for _ in range(50)],
    "randint": [qrandom.randint(1, 6) for _ in range(50)],
    "sample": qrandom.sample(range(100), 10),
    "uniform": qrandom.uniform(-1.0, 1.0),
    "gauss": qrandom.gauss(0.0, 1.0),
    "choice": qrandom.choice("abc"),
}
if sys.argv[2] == "numpy":
    from qrandom.numpy import quantum_rng

    generator = quantum_rng(batch_size=16)
    out["numpy"] = generator.random(8).tolist()
    out["numpy_integers"] = generator.integers(0, 10, size=8).tolist()
errors = {}
for name, key, size in [("wrong_key", "wrong-key-0123456789", 4), ("bad_size", None, 11)]:
    client = _api.Client(key or _api.find_api_key(), batch_size=1)
    client.params["size"] = size
    try:
        client.fetch_hex_raw()
    except requests.HTTPError as err:
        errors[name] = [err.response.status_code, str(err)]
out["errors"] = errors
print(json.dumps(out))
"""


def _run_qrandom(gw: RunningGateway, numpy: bool) -> dict[str, Any]:
    env = {**os.environ, "QRANDOM_API_KEY": gw.api_key}
    mode = "numpy" if numpy else "plain"
    done = subprocess.run(
        [sys.executable, "-c", _QRANDOM, gw.url, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_qrandom_draws_from_the_gateway_with_its_x_api_key(gateway: RunningGateway) -> None:
    before = _served(gateway)
    out = _run_qrandom(gateway, HAS_RANDOMGEN)
    assert all(0.0 <= x < 1.0 for x in out["random"])
    assert len(set(out["random"])) == 50
    assert set(out["randint"]) <= set(range(1, 7))
    assert len(set(out["randint"])) > 1
    assert len(set(out["sample"])) == 10
    assert set(out["sample"]) <= set(range(100))
    assert -1.0 <= out["uniform"] <= 1.0
    assert isinstance(out["gauss"], float)
    assert out["choice"] in "abc"
    # One batch for the module's generator (fewer than 1024 values used), one per error case
    # that got through (none: both refused before drawing), and the numpy generator's.
    drawn = QRANDOM_BATCH_BYTES
    if HAS_RANDOMGEN:
        assert all(0.0 <= x < 1.0 for x in out["numpy"])
        assert set(out["numpy_integers"]) <= set(range(10))
        drawn += 16 * 8  # at least one batch of 16
    grown = _served(gateway) - before
    assert grown >= drawn
    assert grown % 8 == 0  # whole hex16 strings of 8 bytes, nothing else


def test_qrandom_surfaces_refusals_as_http_errors_with_the_problem(
    gateway: RunningGateway,
) -> None:
    """qrandom raises requests.HTTPError on a non-200 and appends the JSON body it parses:
    the problem document, which names what was wrong."""
    errors = _run_qrandom(gateway, numpy=False)["errors"]
    status, text = errors["wrong_key"]
    assert status == 401
    assert "unknown API key" in text
    status, text = errors["bad_size"]
    assert status == 400
    assert "'size' must be between 1 and 10" in text
