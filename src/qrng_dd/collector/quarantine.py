"""How long a source that failed a health test stays cut off. Pure; time comes in as ``now``.

A failure quarantines the source for a cool-down that starts at :data:`BASE_COOLDOWN_S` and
doubles with each further failure up to :data:`MAX_COOLDOWN_S`; after the cool-down it is
retried (with a fresh start-up test, :mod:`qrng_dd.collector.health`). A source that stayed
healthy for :data:`FORGIVE_AFTER_S` is forgiven: its next failure starts the escalation again
from the base.
"""

from __future__ import annotations

# Quarantine policy. 5 s is long enough that a flapping appliance cannot flood the logs and the
# pool with start-up traffic, short enough that a transient fault costs little entropy. Doubling
# per consecutive failure backs off a persistently broken source; 300 s caps the back-off so a
# repaired appliance is back within five minutes. One hour of continuous health forgives the
# history: an isolated failure a day is chance, not a pattern.
BASE_COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 300.0
FORGIVE_AFTER_S = 3600.0


class Quarantine:
    """
    Escalating cool-down policy for one source; pure logic on an injected clock.

    Call :meth:`record_failure` when the source fails and :meth:`record_healthy` when it becomes
    healthy; ask :meth:`cooldown_remaining` / :meth:`ready_to_retry` with the current time. A
    ``None`` time stamps the event at the next time this object is given.
    """

    def __init__(
        self,
        base_s: float = BASE_COOLDOWN_S,
        max_s: float = MAX_COOLDOWN_S,
        forgive_after_s: float = FORGIVE_AFTER_S,
    ) -> None:
        """
        Create a policy with no failures on record.

        Args:
            base_s: cool-down after the first failure.
            max_s: cap of the doubling cool-down.
            forgive_after_s: a healthy stretch this long resets the escalation.

        Raises:
            ValueError: if a duration is negative or ``max_s < base_s``.
        """
        if base_s < 0 or max_s < base_s or forgive_after_s < 0:
            msg = "cool-downs must satisfy 0 <= base_s <= max_s and forgive_after_s >= 0"
            raise ValueError(msg)
        self.base_s = base_s
        self.max_s = max_s
        self.forgive_after_s = forgive_after_s
        self.failures = 0  # total, for status and metrics
        self.level = 0  # consecutive failures since the last forgiveness
        self.active = False
        self._failed_at: float | None = None
        self._healthy_since: float | None = None
        self._healthy_pending = False

    def tick(self, now: float | None) -> None:
        """Give the policy the current time: stamps events that were recorded without one."""
        if now is None:
            return
        if self.active and self._failed_at is None:
            self._failed_at = now
        if self._healthy_pending:
            self._healthy_since = now
            self._healthy_pending = False

    @property
    def cooldown_s(self) -> float:
        """The cool-down of the current (or, if none, the next) quarantine in seconds."""
        return min(self.base_s * 2.0 ** max(self.level - 1, 0), self.max_s)

    def record_healthy(self, now: float | None = None) -> None:
        """Note that the source passed start-up and is serving again."""
        self.tick(now)
        self.active = False
        self._healthy_since = now
        self._healthy_pending = now is None

    def record_failure(self, now: float | None = None) -> None:
        """Note a health-test failure: start (or escalate) the cool-down."""
        self.tick(now)
        if (
            now is not None
            and self._healthy_since is not None
            and now - self._healthy_since >= self.forgive_after_s
        ):
            self.level = 0
        self._healthy_since = None
        self._healthy_pending = False
        self.failures += 1
        self.level += 1
        self.active = True
        self._failed_at = now

    def cooldown_remaining(self, now: float) -> float:
        """Return seconds left before a retry is allowed; 0.0 when not quarantined."""
        self.tick(now)
        if not self.active or self._failed_at is None:
            return 0.0
        return max(0.0, self._failed_at + self.cooldown_s - now)

    def ready_to_retry(self, now: float) -> bool:
        """Return true iff the source is quarantined and its cool-down has elapsed."""
        return self.active and self.cooldown_remaining(now) == 0.0

    def lift(self) -> None:
        """End the current quarantine now (a retry or an operator reset); keeps the history."""
        self.active = False
