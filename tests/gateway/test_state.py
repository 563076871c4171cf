"""The state directory (P3 across restarts), its group commit, and the link's health.

In process: a real directory under ``tmp_path``, real ``fsync``; the service with an
injected clock where time matters. The crash-and-replay proof with real processes is in
``test_restart_e2e.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from qrng_dd.config import GatewaySettings, load
from qrng_dd.errors import ConfigError, PacketError, PoolFullError, StateError
from qrng_dd.gateway import report
from qrng_dd.gateway.service import EntropyService
from qrng_dd.gateway.state import STATE_FILE, StateDir, StateJournal
from qrng_dd.gateway.verifier import SourceMark
from qrng_dd.wire.packet import PacketKey
from qrng_dd.wire.telemetry import encode_telemetry
from tests.conftest import KEY_HEX
from tests.support.gateway import make_raw

API_KEY = "state-test-key-0123456789"


class Clock:
    """A settable wall clock, starting now (packets carry real timestamps)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(**env: str) -> GatewaySettings:
    values = {
        "QRNG_HMAC_SECRET_KEY": KEY_HEX,
        "QRNG_API_KEYS": API_KEY,
        "QRNG_ACCESS_LOG": "false",
        "QRNG_MAX_CLOCK_SKEW_S": "0",
    }
    values.update({f"QRNG_{name.upper()}": value for name, value in env.items()})
    return load(GatewaySettings, values)


def _key() -> PacketKey:
    return PacketKey.from_hex(KEY_HEX)


# -- the file ---------------------------------------------------------------------------------


def test_marks_survive_a_save_and_load(tmp_path: Path) -> None:
    """What is saved comes back; no temporary file is left; the file holds no entropy."""
    store = StateDir(tmp_path / "state", "gateway")
    assert store.load() is None  # never used: no history
    marks = {"collector": SourceMark(seq=2**63 + 5, ts_us=1_700_000_000_000_000, telemetry_seq=9)}
    store.save(marks)
    assert store.load() == marks
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        STATE_FILE,
        "gateway-state.lock",
    ]
    document = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert set(document) == {"format", "gateway_id", "sources"}
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    store.close()


def test_a_locked_directory_is_refused_with_one_line(tmp_path: Path) -> None:
    """Two gateways on one state directory would overwrite each other's memory."""
    first = StateDir(tmp_path, "gateway")
    with pytest.raises(ConfigError) as err:
        StateDir(tmp_path, "gateway")
    assert str(err.value).startswith("QRNG_STATE_DIR: ")
    assert "in use by another gateway" in str(err.value)
    first.close()
    StateDir(tmp_path, "gateway").close()  # free again once the first let go


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not a valid gateway state"),
        ('{"format": 2, "gateway_id": "gateway", "sources": {}}', "expected format 1"),
        ('{"format": 1, "gateway_id": "other", "sources": {}}', "written by gateway 'other'"),
        ('{"format": 1, "gateway_id": "gateway", "sources": []}', "sources must be a mapping"),
        ('{"format": 1, "gateway_id": "gateway", "sources": {"c": {"seq": -1, "ts_us": 0}}}',
         "uint64"),
        ('{"format": 1, "gateway_id": "gateway", "sources": {"c": {"seq": "1", "ts_us": 0}}}',
         "uint64"),
        ('{"format": 1, "gateway_id": "gateway", "sources": {"c": {}}}', "not a valid"),
        ("\xff\xfe", "cannot read"),
    ],
)  # fmt: skip
def test_a_corrupt_or_foreign_state_stops_the_gateway(
    tmp_path: Path, content: str, expected: str
) -> None:
    """Fail closed: forgetting what was served would let it be served again."""
    (tmp_path / STATE_FILE).write_text(content, encoding="latin-1")
    store = StateDir(tmp_path, "gateway")
    with pytest.raises(ConfigError) as err:
        store.load()
    message = str(err.value)
    assert message.startswith("QRNG_STATE_DIR: ")
    assert expected in message
    assert "\n" not in message
    store.close()


@pytest.mark.parametrize("kind", ["a file", "no parent"])
def test_an_unusable_state_dir_is_one_line_naming_the_variable(tmp_path: Path, kind: str) -> None:
    """A path that is a file, or whose parent is missing: one line at start."""
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" if kind == "a file" else tmp_path / "missing" / "state"
    with pytest.raises(ConfigError) as err:
        StateDir(path, "gateway")
    assert str(err.value).startswith("QRNG_STATE_DIR: cannot use ")


def test_the_cli_prints_one_line_for_a_bad_state_dir(tmp_path: Path) -> None:
    """``qrng-dd gateway`` with a state dir that is a file: exit 2, one line, no traceback."""
    import subprocess
    import sys

    from tests.support.gateway import clean_environ

    (tmp_path / "file").write_text("x")
    env = clean_environ(
        {
            "QRNG_HMAC_SECRET_KEY": KEY_HEX,
            "QRNG_API_KEYS": API_KEY,
            "QRNG_PORT": "0",
            "QRNG_STATE_DIR": str(tmp_path / "file"),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "qrng_dd.cli", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "QRNG_STATE_DIR" in lines[0]


def test_an_empty_state_dir_variable_means_none() -> None:
    """``QRNG_STATE_DIR=`` is unset, not the current directory."""
    assert _settings(state_dir="").state_dir is None


# -- group commit -----------------------------------------------------------------------------


class CountingStore(StateDir):
    """A real state directory that counts its writes and can be made to fail."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "gateway")
        self.saved: list[dict[str, SourceMark]] = []
        self.fail = False

    def save(self, marks: dict[str, SourceMark]) -> None:  # type: ignore[override]
        if self.fail:
            raise OSError(28, "No space left on device")
        super().save(marks)
        self.saved.append(dict(marks))


@pytest.mark.anyio
async def test_one_write_covers_every_change_made_before_it(tmp_path: Path) -> None:
    """100 changes waited on together take far fewer writes, and each waiter is covered."""
    store = CountingStore(tmp_path)
    marks: dict[str, SourceMark] = {}
    journal = StateJournal(store, lambda: marks)
    covered: list[int] = []

    async def accept(i: int) -> None:
        marks["c"] = SourceMark(i, i)
        generation = journal.changed()
        await journal.durable(generation)
        covered.append(store.saved[-1]["c"].seq)
        assert store.saved[-1]["c"].seq >= i  # the write that released it includes it

    async with anyio.create_task_group() as tg:
        for i in range(1, 101):
            tg.start_soon(accept, i)
    assert len(covered) == 100
    assert 1 <= journal.writes < 100
    assert store.load() == {"c": SourceMark(100, 100)}
    store.close()


@pytest.mark.anyio
async def test_a_failed_write_fails_its_waiters_and_the_next_one_can_succeed(
    tmp_path: Path,
) -> None:
    """A write error reaches the waiters it covered; durability is never claimed for them."""
    store = CountingStore(tmp_path)
    marks = {"c": SourceMark(1, 1)}
    journal = StateJournal(store, lambda: marks)
    store.fail = True
    with pytest.raises(OSError, match="No space"):
        await journal.durable(journal.changed())
    assert journal.failures == 1
    store.fail = False
    await journal.durable(journal.changed())
    assert store.load() == marks
    store.close()


# -- the service --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bytes_are_pooled_only_once_their_seq_is_on_disk(tmp_path: Path) -> None:
    """After ingest returns, the file already refuses the packet's replay."""
    service = EntropyService(_settings(state_dir=str(tmp_path)))
    raw = make_raw(_key(), os.urandom(1000))
    result = await service.ingest(raw)
    assert result.accepted_bytes == 1000
    saved = StateDir.__new__(StateDir)  # read the file as a second reader would
    saved.path, saved.gateway_id = tmp_path / STATE_FILE, "gateway"
    assert saved.load() == service.verifier.marks()
    await service.close()


@pytest.mark.anyio
async def test_a_restarted_service_refuses_what_the_last_one_accepted(tmp_path: Path) -> None:
    """Same state dir, new service (a restart): replays refused as replays, no quiet start."""
    key = _key()
    first = EntropyService(_settings(state_dir=str(tmp_path)))
    assert not first.verifier.remembers  # a new directory: nothing to remember yet
    packets = [make_raw(key, os.urandom(64)) for _ in range(5)]
    heartbeat = make_raw(key, encode_telemetry({"data_seq": 0}), flags=3)
    for raw in [*packets, heartbeat]:
        await first.ingest(raw)
    await first.close()
    second = EntropyService(_settings(state_dir=str(tmp_path), max_clock_skew_s="60"))
    assert second.verifier.remembers
    assert "quiet start" not in " ".join(report.warnings(second))
    for raw in [*packets, heartbeat]:
        with pytest.raises(PacketError) as err:
            await second.ingest(raw)
        assert err.value.reason == "replay"
    assert second.pool.available == 0
    await second.ingest(make_raw(key, os.urandom(64)))  # the stream goes on at once
    assert second.pool.available == 64
    await second.close()


@pytest.mark.anyio
async def test_without_a_state_dir_the_gateway_says_so() -> None:
    """The start-up rule is visible in /health warnings and in status."""
    service = EntropyService(_settings(max_clock_skew_s="60"))
    warnings = " ".join(report.warnings(service))
    assert "no QRNG_STATE_DIR" in warnings
    assert "quiet start" in warnings
    state = report.status(service)["state"]
    assert state["dir"] is None
    assert state["remembers_previous_run"] is False


@pytest.mark.anyio
async def test_a_failed_state_write_drops_the_bytes_and_counts_them(tmp_path: Path) -> None:
    """Not durable, not pooled: the push is refused with 503 and the bytes are counted."""
    service = EntropyService(_settings(state_dir=str(tmp_path)))
    assert service.journal is not None
    original = service.state_dir.save  # type: ignore[union-attr]

    def broken(marks: object) -> None:
        raise OSError(5, "Input/output error")

    service.state_dir.save = broken  # type: ignore[union-attr,method-assign]
    with pytest.raises(StateError):
        await service.ingest(make_raw(_key(), os.urandom(100)))
    assert service.pool.available == 0
    sample = service.metrics.registry.get_sample_value
    assert sample("qrng_bytes_dropped_total", {"reason": "state"}) == 100
    service.state_dir.save = original  # type: ignore[union-attr,method-assign]
    await service.ingest(make_raw(_key(), os.urandom(100)))
    assert service.pool.available == 100
    await service.close()


# -- the link ---------------------------------------------------------------------------------


def _full_service(clock: Clock) -> EntropyService:
    service = EntropyService(_settings(buffer_size="1024", telemetry_interval_s="10"), clock=clock)
    service.pool.add(os.urandom(1024))
    return service


def test_heartbeats_keep_the_link_up_while_the_pool_is_full() -> None:
    """Data waits (507) but heartbeats go in: healthy, link up, in health, status and metrics."""
    import time

    clock = Clock(time.time())
    service = _full_service(clock)
    key = _key()
    with pytest.raises(PoolFullError):
        service.receive(
            make_raw(key, b"x" * 64, ts_us=int(clock.now * 1e6)), "http", resendable=True
        )
    for step in range(10):  # 100 s of heartbeats every 10 s, the data still waiting
        clock.now += 10
        heartbeat = make_raw(
            key, encode_telemetry({"data_seq": 0}), flags=3, ts_us=int(clock.now * 1e6)
        )
        service.receive(heartbeat, "http", resendable=True)
        code, health = report.health(service)
        assert (code, health["status"]) == (200, "healthy"), step
    assert report.status(service)["link_up"] is True
    assert service.metrics.registry.get_sample_value("qrng_link_up") == 1.0


def test_a_silent_link_is_degraded_after_three_intervals() -> None:
    """No packet for three telemetry intervals: degraded (200), with the link-down warning."""
    import time

    clock = Clock(time.time())
    service = _full_service(clock)
    service.receive(
        make_raw(_key(), encode_telemetry({}), flags=3, ts_us=int(clock.now * 1e6)),
        "http",
        resendable=True,
    )
    clock.now += 30  # exactly three intervals: still up
    assert report.health(service)[1]["status"] == "healthy"
    clock.now += 0.001
    code, health = report.health(service)
    assert (code, health["status"]) == (200, "degraded")
    assert any(w.startswith("link down: no packet for 30 s") for w in health["warnings"])
    assert service.metrics.registry.get_sample_value("qrng_link_up") == 0.0
    assert (service.metrics.registry.get_sample_value("qrng_last_packet_age_seconds") or 0) > 30
