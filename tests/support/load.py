"""Load helpers for the overload and soak suites: polite clients, a resource sampler, a slope.

- :class:`PoliteClients` runs a few well-behaved clients in threads: each draws at a modest,
  paced rate, waits for its answer (generous timeout) and records the outcome in a
  :class:`Tally`. What they measure is the service a real user would get beside an attack or
  under a long steady load: the share of requests answered *honestly* (200, or a 503/429 that
  says when to come back) and their latency. Latency is recorded and printed, never asserted:
  a shared 2-core machine makes any figure noise (DESIGN §11).
- :class:`Sampler` samples named process trees every few seconds (RSS, PSS, open file
  descriptors, threads) and any extra probes (the pool level), so a suite can bound the peak
  and fit a least-squares slope (:func:`slope_per_hour`) after a warm-up: a real leak grows
  steadily, noise does not.

Pacing a client is the one use of a timed wait here: it is the load's shape, not a wait for
something to happen, and it ends as soon as the suite says stop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from tests.support.gateway import process_tree

#: Polite clients wait this long for an answer. Well above any stall a loaded CI machine
#: causes, well below the 30 s granian keeps a connection waiting for headers: a request held
#: that long is a request the gateway did not serve.
POLITE_TIMEOUT_S = 10.0
#: Answers that are service: a 200, or a refusal that tells the client when to come back.
HONEST_REFUSALS = frozenset({429, 503})


@dataclass(frozen=True)
class Request:
    """One request a polite client makes: a GET of ``path`` with ``params``."""

    path: str
    params: Mapping[str, str | int] = field(default_factory=dict)
    auth: bool = True


def is_honest(response: httpx.Response) -> bool:
    """A 200, or a 429/503 carrying a ``Retry-After`` of whole seconds (DESIGN §5, P4)."""
    if response.status_code == 200:
        return True
    retry_after = response.headers.get("retry-after", "")
    return response.status_code in HONEST_REFUSALS and retry_after.isdigit()


@dataclass
class Tally:
    """Outcomes of many requests, shared by threads: statuses, errors, latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dishonest: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    body_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, response: httpx.Response, latency_s: float) -> None:
        with self._lock:
            self.statuses[response.status_code] += 1
            self.latencies_s.append(latency_s)
            self.body_bytes += len(response.content)
            if not is_honest(response):
                self.dishonest[response.status_code] += 1

    def fail(self, error: Exception, latency_s: float) -> None:
        with self._lock:
            self.errors[type(error).__name__] += 1
            self.latencies_s.append(latency_s)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def honest(self) -> int:
        """Requests answered 200 or honestly refused."""
        return sum(self.statuses.values()) - sum(self.dishonest.values())

    @property
    def honest_share(self) -> float:
        """The share of requests answered honestly; 0.0 when none was made at all."""
        return self.honest / self.total if self.total else 0.0

    def percentile_ms(self, share: float) -> float:
        """The latency (ms) under which ``share`` of the requests completed (nearest rank)."""
        with self._lock:
            ordered = sorted(self.latencies_s)
        if not ordered:
            return math.nan
        rank = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
        return round(ordered[rank] * 1000, 2)

    def summary(self) -> dict[str, Any]:
        """The figures a suite prints and writes to its report."""
        return {
            "requests": self.total,
            "honest_share": round(self.honest_share, 5),
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "dishonest": {str(code): n for code, n in sorted(self.dishonest.items())},
            "body_bytes": self.body_bytes,
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p99": self.percentile_ms(0.99),
                "max": self.percentile_ms(1.0),
            },
        }


OnAnswer = Callable[[Request, httpx.Response], None]


class PoliteClients:
    """``clients`` threads, each making ``rate`` requests per second from ``requests``.

    ``fresh_connections`` opens a new TCP connection per request, as curl or a cron job does:
    a client that keeps one connection alive would not notice a gateway that stopped
    accepting new ones. ``on_answer`` sees every answer (the soak keeps the bytes served).
    """

    def __init__(
        self,
        base_url: str,
        requests: Sequence[Request],
        *,
        headers: Mapping[str, str] | None = None,
        clients: int = 3,
        rate: float = 10.0,
        fresh_connections: bool = False,
        timeout_s: float = POLITE_TIMEOUT_S,
        on_answer: OnAnswer | None = None,
    ) -> None:
        self.base_url = base_url
        self.requests = list(requests)
        self.headers = dict(headers or {})
        self.interval_s = 1.0 / rate
        self.fresh_connections = fresh_connections
        self.timeout_s = timeout_s
        self.on_answer = on_answer
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True, name=f"polite-{index}")
            for index in range(clients)
        ]

    def __enter__(self) -> PoliteClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every client; a request in flight finishes (or times out) and is counted."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def wait_for(self, requests: int, deadline_s: float) -> None:
        """Return once ``requests`` were made, or at ``deadline_s`` (a stalled gateway makes
        few): the suite then judges the tally, whichever came first."""
        deadline = time.monotonic() + deadline_s
        while self.tally.total < requests and time.monotonic() < deadline:
            self._stop.wait(0.05)  # polling interval, bounded by the deadline

    def _run(self, index: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0 if self.fresh_connections else 1)
        # Each client starts at another request of the list, so a mix is drawn evenly.
        order = itertools.islice(itertools.cycle(self.requests), index, None)
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s, limits=limits) as client:
            for request in order:
                if self._stop.is_set():
                    return
                self._one(client, request)
                self._stop.wait(self.interval_s)  # the pace of a polite client

    def _one(self, client: httpx.Client, request: Request) -> None:
        headers = self.headers if request.auth else {}
        started = time.perf_counter()
        try:
            response = client.get(request.path, params=dict(request.params), headers=headers)
        except httpx.HTTPError as err:
            self.tally.fail(err, time.perf_counter() - started)
            return
        self.tally.record(response, time.perf_counter() - started)
        if self.on_answer is not None:
            self.on_answer(request, response)


# -- resources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What one process tree holds at one moment."""

    rss_bytes: int
    pss_bytes: int
    fds: int
    threads: int

    def as_dict(self) -> dict[str, int]:
        return {
            "rss_bytes": self.rss_bytes,
            "pss_bytes": self.pss_bytes,
            "fds": self.fds,
            "threads": self.threads,
        }


def tree_usage(pid: int) -> Usage:
    """RSS, PSS (shared pages split among their users: the fair figure for a supervisor and
    its worker), open fds and threads of ``pid`` and its children; zeros once it is gone."""
    rss = pss = fds = threads = 0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            with process.oneshot():
                memory = process.memory_full_info()
                rss += memory.rss
                pss += getattr(memory, "pss", memory.rss)
                fds += process.num_fds()
                threads += process.num_threads()
    return Usage(rss, pss, fds, threads)


Probe = Callable[[], float | None]


@dataclass(frozen=True)
class Sample:
    """One sampling round: seconds since the sampler started, each tree's usage, each probe."""

    t_s: float
    usage: Mapping[str, Usage]
    probes: Mapping[str, float | None]


class Sampler:
    """Samples ``trees`` (name -> pid) and ``probes`` (name -> value) every ``interval_s``.

    A probe that raises or returns None leaves a gap (a gateway under attack may not answer
    the probe in time); the trees are read from /proc and always sampled.
    """

    def __init__(
        self,
        trees: Mapping[str, int],
        probes: Mapping[str, Probe] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.trees = dict(trees)
        self.probes = dict(probes or {})
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the state at the end, whatever the interval

    def sample(self) -> Sample:
        """Take one sample now (also called by the sampling thread)."""
        usage = {name: tree_usage(pid) for name, pid in self.trees.items()}
        values: dict[str, float | None] = {}
        for name, probe in self.probes.items():
            try:
                values[name] = probe()
            except Exception:  # any failed probe is only a gap in its series
                values[name] = None
        taken = Sample(time.monotonic() - self._started, usage, values)
        self.samples.append(taken)
        return taken

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)  # the sampling period

    def series(self, tree: str, metric: str, after_s: float = 0.0) -> list[tuple[float, float]]:
        """(t, value) of ``metric`` (a :class:`Usage` field) of ``tree``, from ``after_s`` on."""
        return [
            (s.t_s, float(getattr(s.usage[tree], metric)))
            for s in self.samples
            if s.t_s >= after_s and tree in s.usage
        ]

    def probe_series(self, name: str, after_s: float = 0.0) -> list[tuple[float, float]]:
        """(t, value) of probe ``name`` where it answered, from ``after_s`` on."""
        return [
            (s.t_s, value)
            for s in self.samples
            if s.t_s >= after_s and (value := s.probes.get(name)) is not None
        ]

    def peak(self, tree: str, metric: str) -> float:
        """The highest ``metric`` of ``tree`` seen (0 before any sample)."""
        return max((value for _, value in self.series(tree, metric)), default=0.0)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (value per unit of t); 0.0 for fewer than two
    distinct t."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """:func:`slope` of points whose t is in seconds, per hour."""
    return slope(points) * 3600.0


@contextlib.contextmanager
def open_files_limit(wanted: int) -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE to ``wanted`` for the block (the hard limit too
    when allowed: we run as root), so a suite can hold thousands of sockets; processes
    started inside inherit it. Yields the soft limit in force (lower if not allowed)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            infinite = hard == resource.RLIM_INFINITY
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (wanted, hard if infinite else max(hard, wanted))
            )
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
