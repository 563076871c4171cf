"""Schema-driven fuzzing of a real gateway from its own ``/openapi.json`` (issue 19, part 1).

Schemathesis reads the document a running ``qrng-dd gateway`` serves and generates requests
for every operation in it: our own routes, the shaped ones, the ANU and RANDOM.ORG
compatibility routes, ``/push`` (raw bodies), health, status, metrics and the document itself.
A test below checks that the document names exactly the routes of the table, so a new route
cannot escape the fuzzer.

Three gateways, each its own process on loopback:

- **fed** (1 MiB pool, filled again after every draw): with a valid key in each of the three
  ways a client may present one, the boundary and negative cases of each parameter
  (Schemathesis' coverage phase, deterministic), then generated valid and invalid requests;
  then generated requests with no key, or a wrong one, in each of the three ways;
- **empty** (the default 10 MiB pool, never fed): every draw short of entropy;
- **small** (4 KiB pool, filled again after every draw): the documented maxima reach past it,
  and requests that cost exactly the pool or one unit more are sent on purpose.

A fed or small pool is full before every request, so a 503 from either means "retry" to a
request no refill can ever serve: a bug, whatever the route.

``/mcp`` (JSON-RPC over streamable HTTP, not in the document) gets a light pass of its own on
a fourth gateway: random envelopes, JSON and bytes, never a 5xx.

Every response is checked (:func:`_checks`): no 5xx but an honest 503 (P4: short of entropy,
``Retry-After``, and a need the pool can meet one day); the status, content type, headers and
body the document states; every 4xx an ``application/problem+json`` document (DESIGN §5)
whose detail names the parameter at fault when one parameter is; no drawing route answered
without a valid key. Known product bugs are ``xfail(strict=True)`` tests named in the report.

Bounded: the default run adds about a minute to ``make test``; ``QRNG_FUZZ_SCALE`` multiplies
the generated examples (the coverage cases are a fixed set), ``QRNG_FUZZ_SEED`` replaces the
derandomized default (see ``tests/fuzz/conftest.py``). Figures (requests per operation,
statuses by class, failures) are printed at the end and written to
``$QRNG_FUZZ_REPORT_DIR/schema.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, coverage_scenario
from schemathesis.specs.openapi import checks as openapi_checks

from qrng_dd.gateway.api import Route
from qrng_dd.gateway.openapi import openapi_document
from qrng_dd.gateway.problem import PROBLEM
from qrng_dd.gateway.routes import ROUTES
from qrng_dd.wire.packet import MAX_DATA_BYTES
from tests.support.gateway import (
    CLIENT_TIMEOUT_S,
    RunningGateway,
    gateway_settings,
    make_raw,
    start_gateway,
)

if TYPE_CHECKING:
    from tests.fuzz.conftest import ReportWriter

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e]

#: Schemathesis' generic types, as this suite uses them (OpenAPI operations of one schema).
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
AnyCase = schemathesis.Case[Any]

# /push takes raw packet bytes (application/x-msgpack): sent as they are generated.
schemathesis.serializer.alias("application/x-msgpack", "application/octet-stream")

#: The fed gateway's pool: small enough to refill in a few pushes after the largest draw
#: (a 65,536-point Monte Carlo run takes all of it), large enough for every default.
FED_CAPACITY: Final = 1_048_576
#: The small gateway's pool, so that the documented maxima reach past it.
SMALL_CAPACITY: Final = 4096
#: The empty gateway keeps the default pool (QRNG_BUFFER_SIZE), as the issue's report had it.
DEFAULT_CAPACITY: Final = 10_485_760
#: Bytes per feeding push: half the wire format's data limit, well clear of the AEAD tag.
FEED_CHUNK: Final = MAX_DATA_BYTES // 2
#: Generated examples per operation at QRNG_FUZZ_SCALE=1, per run of the fuzzing phase.
VALID_EXAMPLES: Final = 60
UNAUTHORIZED_EXAMPLES: Final = 15
EMPTY_EXAMPLES: Final = 15
FULL_EXAMPLES: Final = 40
#: The three ways a key travels (DESIGN §5 and the ANU clients' x-api-key), or none at all.
KeyForm = Literal["bearer", "x-api-key", "query", "none"]
KEY_FORMS: Final[tuple[KeyForm, ...]] = ("bearer", "x-api-key", "query")
#: The product's own words for a short pool, on REST and on JSON-RPC (front.py, randomorg.py).
_NEEDS = re.compile(r"this request needs (\d+)")
SHORT_OF_ENTROPY_RPC: Final = -32001
#: The longest request line granian reads (64 KiB); a longer one is answered a bare 414.
SERVER_URL_LIMIT: Final = 65_536
#: RANDOM.ORG's endpoint: every answer HTTP 200, a refusal is a JSON-RPC ``error``.
RPC_PATH: Final = "/json-rpc/4/invoke"


def _operation_routes() -> dict[str, Route]:
    """operationId -> its route, as the gateway's own document names them.

    The document is built by the product's code from the route table bound to test settings,
    so the ids cannot drift from what a gateway serves; a test checks they are the same.
    """
    routes = [route.bind(gateway_settings()) for route in ROUTES]
    by_path = {route.path: route for route in routes}
    document = openapi_document(routes)
    return {
        operation["operationId"]: by_path[path]
        for path, operations in document["paths"].items()
        for operation in operations.values()
    }


OPERATIONS: Final = _operation_routes()
#: The operations that take pool bytes: after one is served, its pool is filled again.
DRAWING: Final = frozenset(
    op_id
    for op_id, route in OPERATIONS.items()
    if route.cost is not None or route.name == "randomorg"  # JSON-RPC draws by its body
)


# -- figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What was generated and sent, per scenario and operation, and how it was answered."""

    counts: defaultdict[str, defaultdict[str, Counter[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    feeding_pushes: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, scenario: str, op_id: str, what: str, n: int = 1) -> None:
        self.counts[scenario][op_id][what] += n

    def as_dict(self) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for per_op in self.counts.values():
            for counter in per_op.values():
                totals.update(counter)
        return {
            "suite": "schema",
            "wall_seconds": round(time.monotonic() - self.started, 1),
            "feeding_pushes": self.feeding_pushes,
            "totals": dict(sorted(totals.items())),
            "scenarios": {
                scenario: {op: dict(sorted(c.items())) for op, c in sorted(per_op.items())}
                for scenario, per_op in sorted(self.counts.items())
            },
        }

    def table(self) -> str:
        """One line per scenario and operation: sent, by status class, failures."""
        lines = [f"{'scenario':<13} {'operation':<24} {'sent':>5}  2xx  4xx  5xx fail"]
        for scenario, per_op in sorted(self.counts.items()):
            for op_id, c in sorted(per_op.items()):
                lines.append(
                    f"{scenario:<13} {op_id:<24} {c['sent']:>5} {c['2xx']:>4} {c['4xx']:>4} "
                    f"{c['5xx']:>4} {c['failures']:>4}"
                )
        return "\n".join(lines)


@pytest.fixture(scope="module")
def figures(fuzz_report: ReportWriter) -> Iterator[Figures]:
    """The module's figures: printed and written (QRNG_FUZZ_REPORT_DIR) once it is done."""
    tally = Figures()
    yield tally
    print(f"\nschema fuzzing, {tally.as_dict()['wall_seconds']} s:\n{tally.table()}")
    print(f"totals: {tally.as_dict()['totals']}, feeding pushes: {tally.feeding_pushes}")
    fuzz_report("schema", tally.as_dict())


# -- the gateways -----------------------------------------------------------------------------


#: A pool kept full (filled before every request) or never fed.
Keep = Literal["full", "empty"]


@dataclass
class Target:
    """One gateway as the fuzzer sees it: its document's operations and its pool's regime."""

    gateway: RunningGateway
    operations: dict[str, Operation]
    capacity: int
    keep: Keep
    session: requests.Session
    feeder: httpx.Client
    source: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def push(self, size: int) -> httpx.Response:
        raw = make_raw(self.gateway.key, os.urandom(size), source=self.source)
        return self.feeder.post("/push", content=raw)

    def fill(self, figures: Figures) -> None:
        """Push until the pool is full: a push answered 507, or one whose bytes did not fit."""
        for _ in range(self.capacity // FEED_CHUNK + 2):
            response = self.push(min(FEED_CHUNK, self.capacity))
            figures.feeding_pushes += 1
            if response.status_code == 507:
                return
            assert response.status_code == 200, response.text
            if response.json()["dropped_bytes"] > 0:
                return
        raise AssertionError(f"the pool of {self.url} did not fill")

    def restore(self, figures: Figures) -> None:
        """Fill the pool again after a request that may have drawn from it."""
        if self.keep == "full":
            self.fill(figures)


@contextlib.contextmanager
def _target(name: str, keep: Keep, capacity: int, figures: Figures) -> Iterator[Target]:
    env = {
        "QRNG_BUFFER_SIZE": str(capacity),
        # A rate limit no fuzzer reaches: 429 is the rate-limit suites' business.
        "QRNG_RATE_LIMIT": "1000000",
    }
    with (
        start_gateway(env) as gateway,
        requests.Session() as session,
        gateway.client() as feeder,
    ):
        document = feeder.get("/openapi.json").json()
        # Loaded from the document the gateway served, not from its URL: Schemathesis leaves
        # out the path a document was fetched from, and /openapi.json is an operation too.
        schema = schemathesis.openapi.from_dict(document)
        operations = {}
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()  # a document Schemathesis cannot read is a failure
            operation = result.ok()
            operations[operation.definition.raw["operationId"]] = operation
        target = Target(gateway, operations, capacity, keep, session, feeder, f"fuzz-{name}")
        if keep != "empty":
            target.fill(figures)
        yield target


@pytest.fixture(scope="module")
def fed(figures: Figures) -> Iterator[Target]:
    with _target("fed", "full", FED_CAPACITY, figures) as target:
        yield target


@pytest.fixture(scope="module")
def empty(figures: Figures) -> Iterator[Target]:
    with _target("empty", "empty", DEFAULT_CAPACITY, figures) as target:
        yield target


@pytest.fixture(scope="module")
def small(figures: Figures) -> Iterator[Target]:
    with _target("small", "full", SMALL_CAPACITY, figures) as target:
        yield target


# -- the checks ---------------------------------------------------------------------------


def _problem(response: Response) -> dict[str, Any]:
    """The response's problem document. Raises: AssertionError if it is not one."""
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    assert media_type == PROBLEM, f"{response.status_code} answered as {media_type!r}"
    body = response.json()
    assert isinstance(body, dict), body
    missing = {"type", "title", "status", "detail"} - body.keys()
    assert not missing, f"problem document without {sorted(missing)}: {body}"
    assert body["status"] == response.status_code, body
    return body


def _parameter_at_fault(case: AnyCase) -> str | None:
    """The one query parameter a negative case broke, when Schemathesis says which."""
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.NEGATIVE:
        return None
    data = meta.phase.data
    location = getattr(data, "parameter_location", None)
    name: str | None = getattr(data, "parameter", None)
    if name is None or location != ParameterLocation.QUERY or name == "api_key":
        return None
    return name


def problem_documents(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Every 4xx is a problem document; a 400 names the one parameter a case broke."""
    if not 400 <= response.status_code < 500:
        return None
    problem = _problem(response)
    name = _parameter_at_fault(case)
    if response.status_code == 400 and name is not None:
        assert f"'{name}'" in problem["detail"], (
            f"the 400 for a bad {name!r} does not name it: {problem['detail']!r}"
        )
    return True


def _json(response: Response) -> Any:
    """The body as JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _rpc_short(response: Response) -> dict[str, Any] | None:
    """The ``data`` of a JSON-RPC "short of entropy" error, or None for any other answer."""
    body = _json(response) if response.status_code == 200 else None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") == SHORT_OF_ENTROPY_RPC:
        data = error.get("data")
        assert isinstance(data, dict), f"a short answer without its data: {body}"
        return data
    return None


def _needs(response: Response) -> int | None:
    """What a short-of-entropy answer says the request needs, REST or JSON-RPC."""
    data = _rpc_short(response)
    if data is not None:
        requested = data.get("requested")
        return requested if isinstance(requested, int) else None
    body = _json(response)
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    match = _NEEDS.search(detail if isinstance(detail, str) else "")
    return int(match[1]) if match else None


def honest_failure(target: Target) -> CheckFunction:
    """P4 on ``target``: no 5xx but a 503 short of entropy with ``Retry-After``, for a need the
    pool can meet one day; and none at all when the pool was full before the request."""

    def honest_failure_check(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
        status = response.status_code
        if case.operation.path == "/health" and status == 503:
            assert response.json()["status"] == "unhealthy", response.text
            return True
        assert status < 500 or status == 503, f"{status} for {case.method} {case.path}"
        if status != 503 and _rpc_short(response) is None:
            return None
        if status == 503:
            assert _problem(response)["title"] == "Short of entropy", response.text
        retry_after = response.headers.get("retry-after", [""])[0]
        assert retry_after.isdigit(), f"Retry-After {retry_after!r}"
        assert int(retry_after) >= 1, f"Retry-After {retry_after!r}"
        needs = _needs(response)
        assert needs is not None, f"a short answer that does not say what it needs: {response.text}"
        assert needs <= target.capacity, (
            f"told to retry a request that needs {needs} bytes, more than the pool can ever "
            f"hold ({target.capacity}): it will never be served"
        )
        assert target.keep != "full", (
            f"short of entropy with a full pool of {target.capacity} bytes: a request the pool "
            f"can hold was refused, or one it cannot hold was told to retry: {response.text}"
        )
        return True

    return honest_failure_check


def negative_data_refused(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """A request the document calls invalid is refused: a 4xx, or on RANDOM.ORG's endpoint
    (HTTP 200 by design) a JSON-RPC ``error``, never a ``result``."""
    if case.operation.path != RPC_PATH:
        return openapi_checks.negative_data_rejection(ctx, response, case)
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.NEGATIVE:
        return None
    # As Schemathesis judges them: a wrong method or Content-Type is a probe, not bad data
    # (the endpoint reads JSON whatever the client calls it, as RANDOM.ORG's does).
    if coverage_scenario(case) in REQUEST_SHAPE_PROBES or response.status_code != 200:
        return None
    body = _json(response)
    assert isinstance(body, dict), response.text
    assert "error" in body, f"an invalid JSON-RPC request was answered with a result: {body}"
    assert "result" not in body, body
    return True


def key_required(key_form: KeyForm, valid: bool) -> CheckFunction:
    """Without a valid key, an authenticated route answers 401 (with ``WWW-Authenticate``),
    and RANDOM.ORG's endpoint answers its own error 400, never a result."""

    def key_required_check(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
        if valid or case.method != case.operation.method.upper():
            return None
        if case.operation.path == RPC_PATH:
            if response.status_code == 200:
                body = response.json()
                assert "result" not in body, f"answered without a valid key: {body}"
            return True
        if not case.operation.definition.raw.get("security"):
            return None
        assert response.status_code == 401, (
            f"{case.method} {case.path} with key form {key_form!r} answered "
            f"{response.status_code}, not 401"
        )
        assert response.headers.get("www-authenticate") == ["Bearer"], response.headers
        return True

    return key_required_check


def _checks(target: Target, key_form: KeyForm, valid: bool) -> list[CheckFunction]:
    return [
        openapi_checks.status_code_conformance,
        openapi_checks.content_type_conformance,
        openapi_checks.response_headers_conformance,
        openapi_checks.response_schema_conformance,
        negative_data_refused,
        problem_documents,
        honest_failure(target),
        key_required(key_form, valid),
    ]


# -- sending one case -----------------------------------------------------------------------


def _authorize(case: AnyCase, key_form: KeyForm, key: str | None) -> None:
    """Replace whatever credentials the case was generated with by ``key`` in ``key_form``
    (none at all for "none" or a None key)."""
    if case.headers is not None:
        for name in ("Authorization", "x-api-key"):
            case.headers.pop(name, None)
    if case.query is not None:
        case.query.pop("api_key", None)
    if case.operation.path == RPC_PATH:
        # RANDOM.ORG's key travels in the body (params.apiKey), and only there. A case that
        # left it out on purpose (a negative one) keeps it out.
        params = case.body.get("params") if isinstance(case.body, dict) else None
        if isinstance(params, dict) and "apiKey" in params:
            if key is None:
                del params["apiKey"]
            else:
                params["apiKey"] = key
        return
    if key is None or key_form == "none":
        return
    if key_form == "query":
        case.query = {**(case.query or {}), "api_key": key}
        return
    headers = dict(case.headers or {})
    if key_form == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    else:
        headers["x-api-key"] = key
    case.headers = headers  # type: ignore[assignment]  # a plain dict is what Case accepts


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def exchange(
    target: Target,
    case: AnyCase,
    figures: Figures,
    scenario: str,
    key_form: KeyForm = "bearer",
    *,
    valid_key: bool = True,
) -> Response:
    """Send ``case`` with the chosen credentials, count it, check the answer, restore the pool."""
    op_id = str(case.operation.definition.raw["operationId"])
    key = target.gateway.api_key if valid_key else "wrong-" + target.gateway.api_key
    _authorize(case, key_form, None if key_form == "none" else key)
    figures.add(scenario, op_id, "sent")
    response = case.call(base_url=target.url, session=target.session, timeout=CLIENT_TIMEOUT_S)
    figures.add(scenario, op_id, _status_class(response.status_code))
    if op_id == "randomorg" and response.status_code == 200:
        body = _json(response)
        served = isinstance(body, dict) and "result" in body
        figures.add(scenario, op_id, "rpc_result" if served else "rpc_error")
    if response.status_code == 414 and len(response.request.url or "") > SERVER_URL_LIMIT:
        # granian's own limit on the request line, before the gateway sees the request: a
        # bare 414 (test_items_at_their_documented_length_reach_the_gateway, a known bug).
        figures.add(scenario, op_id, "uri_too_long")
        return response
    try:
        case.validate_response(response, checks=_checks(target, key_form, valid_key))
    except BaseException:
        figures.add(scenario, op_id, "failures")
        raise
    finally:
        if op_id in DRAWING and response.status_code == 200:
            target.restore(figures)
    if response.status_code == 400 and _parameter_at_fault(case) is not None:
        figures.add(scenario, op_id, "400_naming_checked")
    return response


def _examples(base: int, scale: float) -> int:
    return max(1, math.ceil(base * scale))


def _fuzz(run: Callable[..., None], examples: int, fuzz_seed: int | None) -> Callable[..., None]:
    """``run`` under the suite's Hypothesis settings: derandomized unless a seed is given, no
    example database (CI replays exactly), no deadline (a loaded machine is not a bug)."""
    configured = settings(
        max_examples=examples,
        derandomize=fuzz_seed is None,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )(run)
    return configured if fuzz_seed is None else seed(fuzz_seed)(configured)


def _coverage_cases(operation: Operation, modes: list[GenerationMode]) -> list[AnyCase]:
    """Schemathesis' coverage phase for ``operation``: each parameter at and past its bounds,
    of the wrong type, missing, duplicated; unexpected methods and content types."""
    schema = operation.schema
    config = schema.config.generation_for(operation=operation)
    return list(
        schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config)
    )


# -- the tests ------------------------------------------------------------------------------

_ALL: Final = sorted(OPERATIONS)
_DRAWING: Final = sorted(DRAWING)


def test_the_document_names_every_route_the_fuzzer_covers(fed: Target) -> None:
    """The gateway's /openapi.json has exactly the route table's operations, all loadable."""
    assert sorted(fed.operations) == _ALL
    assert {route.name for route in OPERATIONS.values()} == {route.name for route in ROUTES}


@pytest.mark.parametrize("op_id", _ALL)
def test_each_parameter_at_and_past_its_bounds_is_served_or_refused_by_name(
    fed: Target, figures: Figures, op_id: str
) -> None:
    """The coverage phase (deterministic) on a fed pool with a valid key: every answer checked."""
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    cases = _coverage_cases(fed.operations[op_id], modes)
    figures.add("coverage", op_id, "generated", len(cases))
    for case in cases:
        exchange(fed, case, figures, "coverage")


@pytest.mark.parametrize("op_id", _ALL)
def test_generated_requests_with_a_valid_key_are_served_or_refused_properly(
    fed: Target, figures: Figures, fuzz_scale: float, fuzz_seed: int | None, op_id: str
) -> None:
    """Generated valid and invalid requests, the key presented each of the three ways."""
    operation = fed.operations[op_id]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases, key_form=st.sampled_from(KEY_FORMS))
    def run(case: AnyCase, key_form: KeyForm) -> None:
        figures.add("valid_key", op_id, "generated")
        exchange(fed, case, figures, "valid_key", key_form)

    _fuzz(run, _examples(VALID_EXAMPLES, fuzz_scale), fuzz_seed)()


@pytest.mark.parametrize("op_id", _ALL)
def test_without_a_valid_key_nothing_is_served(
    fed: Target, figures: Figures, fuzz_scale: float, fuzz_seed: int | None, op_id: str
) -> None:
    """No key, or a wrong one in each of the three ways: 401 on every authenticated route."""
    operation = fed.operations[op_id]

    @given(
        case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        key_form=st.sampled_from(("none", *KEY_FORMS)),
    )
    def run(case: AnyCase, key_form: KeyForm) -> None:
        figures.add("no_valid_key", op_id, "generated")
        exchange(fed, case, figures, "no_valid_key", key_form, valid_key=False)

    _fuzz(run, _examples(UNAUTHORIZED_EXAMPLES, fuzz_scale), fuzz_seed)()


@pytest.mark.parametrize("op_id", _ALL)
def test_with_an_empty_pool_draws_fail_honestly(
    empty: Target, figures: Figures, fuzz_scale: float, fuzz_seed: int | None, op_id: str
) -> None:
    """Never fed: draws are 503 with Retry-After (or a 4xx), never a 500 or padded bytes."""
    operation = empty.operations[op_id]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: AnyCase) -> None:
        figures.add("empty_pool", op_id, "generated")
        exchange(empty, case, figures, "empty_pool")

    _fuzz(run, _examples(EMPTY_EXAMPLES, fuzz_scale), fuzz_seed)()


def test_the_reported_monte_carlo_request_is_a_400_naming_iterations(empty: Target) -> None:
    """Issue 19's report: 1,587,082 points need 25 MB of a 10 MiB pool; once answered 503
    "retry" forever, it must be a 400 that names ``iterations`` (checked: it is)."""
    with empty.gateway.client() as client:
        response = client.post(
            "/api/test/monte-carlo", params={"iterations": 1_587_082}, headers=empty.gateway.auth
        )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "'iterations'" in response.json()["detail"]
    assert "retry-after" not in response.headers


# -- the pool's capacity, exactly -------------------------------------------------------------

ALPHANUMERIC: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: 16 characters: a byte reduced modulo 16 needs no rejection, so no byte is read past the cost.
HEX: Final = "0123456789abcdef"


@dataclass(frozen=True)
class Edge:
    """One request to an operation: query parameters, or a RANDOM.ORG request body."""

    params: dict[str, str | int] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _rpc(method: str, **params: Any) -> Edge:
    """A RANDOM.ORG request; ``apiKey`` is filled in with the key of the scenario."""
    return Edge(
        body={"jsonrpc": "2.0", "method": method, "params": {"apiKey": "", **params}, "id": 1}
    )


_MONTE_CARLO: Final = (Edge({"iterations": SMALL_CAPACITY // 16}),)
_RANDOMNESS: Final = (Edge({"bytes": SMALL_CAPACITY}),)
#: Per drawing operation, requests that may read the whole small pool (4096 bytes) but no
#: more: their cost, or where rejection sampling reads more than that, the bound on what they
#: read (``derive.read_bound``, exceeded with a chance below 2^-38), is at most the pool and
#: as close to it as the parameters go.
AT_CAPACITY: Final[dict[str, tuple[Edge, ...]]] = {
    "random": (Edge({"bytes": 4096}),),
    "floats": (Edge({"count": 512}),),
    "gaussians": (Edge({"count": 512}),),
    "uuid": (Edge({"count": 100}),),  # 1600 bytes: the documented maximum is below the pool
    # Every 64-bit draw accepted over the full range; about half rejected over [-2^63, 0]:
    # 173 values read at most 4088 bytes (mean 2768).
    "integers": (
        Edge({"count": 512, "min": -(2**63), "max": 2**63 - 1}),
        Edge({"count": 173, "min": -(2**63), "max": 0}),
    ),
    "strings": (
        Edge({"count": 4, "length": 1024, "alphabet": HEX}),
        Edge({"count": 4, "length": 940}),  # 62 letters: bytes >= 248 rejected; at most 4096
    ),
    "passwords": (
        Edge({"count": 32, "length": 128, "charset": "hex"}),
        Edge({"count": 29, "length": 128, "charset": "alphanumeric"}),  # at most 4043
    ),
    "dice": (Edge({"notation": "512d6"}),),  # charged 8 bytes a die (4096), reads about 520
    # Picks from 1000 values: a 64-bit draw refused less than once in 2^54, so 512 picks read
    # 4096 bytes; from 2^53, once in 2^11 at most: 502 read at most 4096.
    "sample": (Edge({"n": 1000, "k": 512}), Edge({"n": 2**53, "k": 502})),
    "shuffle": (Edge({"items": ",".join(map(str, range(512)))}),),
    "monte_carlo_get": _MONTE_CARLO,
    "monte_carlo_post": _MONTE_CARLO,
    "randomness_get": _RANDOMNESS,
    "randomness_post": _RANDOMNESS,
    "anu_legacy": (Edge({"length": 1024, "type": "hex16", "size": 4}),),
    "anu": (Edge({"length": 1024, "type": "hex16", "size": 2}),),
    "randomorg": (
        _rpc("generateBlobs", n=1, size=8 * 4096, format="hex"),
        _rpc("generateStrings", n=128, length=32, characters=HEX),
        _rpc("generateStrings", n=117, length=32, characters=ALPHANUMERIC),  # at most 4078
        _rpc("generateIntegers", n=512, min=1, max=6),
    ),
}


def _case(operation: Operation, edge: Edge) -> AnyCase:
    if edge.body is None:
        return operation.Case(query=dict(edge.params))
    body = {**edge.body, "params": dict(edge.body["params"])}  # _authorize writes the key in
    return operation.Case(body=body, media_type="application/json")


def test_every_drawing_operation_has_requests_at_the_pools_capacity() -> None:
    """The table below covers every operation that draws, so none escapes the edge."""
    assert sorted(AT_CAPACITY) == _DRAWING


@pytest.mark.parametrize("op_id", _DRAWING)
def test_with_a_full_pool_no_request_is_told_to_retry_forever(
    small: Target, figures: Figures, fuzz_scale: float, fuzz_seed: int | None, op_id: str
) -> None:
    """A small pool filled before each request. Requests that may read the whole pool and
    no more are served; the documented limits' boundary values and generated values are
    served or refused with a 4xx; a 503 would be "retry" to a request no refill can ever
    serve."""
    operation = small.operations[op_id]
    for edge in AT_CAPACITY[op_id]:
        figures.add("full_pool", op_id, "generated")
        response = exchange(small, _case(operation, edge), figures, "full_pool")
        assert response.status_code == 200, response.text[:300]
        if edge.body is not None:
            assert "result" in response.json(), response.text[:300]
    cases = _coverage_cases(operation, [GenerationMode.POSITIVE])
    figures.add("full_pool", op_id, "generated", len(cases))
    for case in cases:
        exchange(small, case, figures, "full_pool")

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: AnyCase) -> None:
        figures.add("full_pool", op_id, "generated")
        exchange(small, case, figures, "full_pool")

    _fuzz(run, _examples(FULL_EXAMPLES, fuzz_scale), fuzz_seed)()


#: One unit past the small pool, or a cost that fits it with draws that may not (rejection
#: sampling: the bound on what they read is past the pool), and the parameter the refusal
#: must name.
PAST_CAPACITY: Final = [
    pytest.param("random", Edge({"bytes": 4097}), "bytes", id="random"),
    pytest.param("floats", Edge({"count": 513}), "count", id="floats"),
    pytest.param("strings", Edge({"count": 4, "length": 1025}), "length", id="strings"),
    # Costs of 4096 bytes at most, reads that may be more.
    pytest.param(
        "integers",
        Edge({"count": 512, "min": -(2**63), "max": 0}),  # at most 10312 bytes (mean 8192)
        "count",
        id="integers-rejection",
    ),
    pytest.param(
        "integers",
        Edge({"count": 174, "min": -(2**63), "max": 0}),  # at most 4112 bytes
        "count",
        id="integers-rejection-edge",
    ),
    pytest.param(
        "strings", Edge({"count": 4, "length": 1024}), "length", id="strings-rejection"
    ),  # at most 4457 bytes
    pytest.param(
        "strings", Edge({"count": 4, "length": 941}), "length", id="strings-rejection-edge"
    ),
    pytest.param(
        "passwords",
        Edge({"count": 30, "length": 128, "charset": "alphanumeric"}),
        "count",
        id="passwords-rejection",
    ),
    pytest.param(
        "sample", Edge({"n": 2**53, "k": 503}), "k", id="sample-rejection-edge"
    ),  # at most 4104 bytes
    pytest.param("dice", Edge({"notation": "513d6"}), "notation", id="dice"),
    pytest.param("monte_carlo_post", Edge({"iterations": 257}), "iterations", id="monte-carlo"),
    pytest.param("randomness_get", Edge({"bytes": 4097}), "bytes", id="randomness"),
    pytest.param(
        "anu_legacy", Edge({"length": 1024, "type": "hex16", "size": 5}), "size", id="anu-legacy"
    ),
    pytest.param(
        "randomorg",
        _rpc("generateBlobs", n=1, size=8 * 4097, format="hex"),
        "size",
        id="randomorg-blobs",
    ),
    pytest.param(
        "randomorg",
        _rpc("generateStrings", n=128, length=32, characters=ALPHANUMERIC),  # at most 4457
        "n",
        id="randomorg-strings-rejection",
    ),
    pytest.param(
        "randomorg",
        _rpc("generateStrings", n=118, length=32, characters=ALPHANUMERIC),
        "n",
        id="randomorg-strings-rejection-edge",
    ),
]


@pytest.mark.parametrize(("op_id", "edge", "name"), PAST_CAPACITY)
def test_a_request_past_the_pools_capacity_is_refused_by_name(
    small: Target, figures: Figures, op_id: str, edge: Edge, name: str
) -> None:
    """One unit more than the pool can ever hold, or draws that may read more: a 400
    (JSON-RPC: RANDOM.ORG's 202) that names the parameter, and no ``Retry-After``: waiting
    cannot help."""
    figures.add("past_capacity", op_id, "generated")
    response = exchange(small, _case(small.operations[op_id], edge), figures, "past_capacity")
    assert "retry-after" not in response.headers, response.text[:300]
    if edge.body is not None:
        error = response.json()["error"]
        assert error["code"] == 202, error
        assert f"'{name}'" in error["message"], error
        return
    assert response.status_code == 400, response.text[:300]
    assert f"'{name}'" in response.json()["detail"]


def test_items_at_their_documented_length_reach_the_gateway(fed: Target) -> None:
    """``/api/shuffle?items=`` of as many four-byte characters as the documented maxLength
    allows (the worst case percent-encoded) is answered by the gateway: served, or a problem
    document saying what to change."""
    items = "\U0001f3b2" * OPERATIONS["shuffle"].param("items").maximum
    # requests, not httpx: httpx itself refuses a query string this long before sending it.
    response = fed.session.get(
        f"{fed.url}/api/shuffle",
        params={"items": items},
        headers=fed.gateway.auth,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert response.status_code != 414, f"a bare {response.status_code} from the HTTP server"
    if response.status_code != 200:
        assert response.headers["content-type"] == PROBLEM, response.headers


# -- /mcp, lightly -----------------------------------------------------------------------------

#: JSON values of every kind, nested a little: what a confused or hostile MCP client may send.
_JSON: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_MCP_METHODS: Final = ("initialize", "ping", "tools/list", "tools/call", "resources/list")
MCP_EXAMPLES: Final = 40


@pytest.fixture(scope="module")
def mcp_gateway() -> Iterator[RunningGateway]:
    with start_gateway({"QRNG_MCP_ENABLED": "true", "QRNG_RATE_LIMIT": "1000000"}) as gateway:
        yield gateway


def test_the_mcp_endpoint_answers_junk_without_a_server_error(
    mcp_gateway: RunningGateway, figures: Figures, fuzz_scale: float, fuzz_seed: int | None
) -> None:
    """``POST /mcp`` (not in the OpenAPI document) with JSON-RPC envelopes around random
    methods and parameters, or random JSON, or bytes that are not JSON: never a 5xx."""
    envelope = st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "id": st.integers(0, 9),
         "method": st.sampled_from(_MCP_METHODS) | st.text(max_size=12), "params": _JSON}
    )  # fmt: skip
    bodies = (
        envelope.map(lambda d: json.dumps(d).encode())
        | _JSON.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
    )
    headers = {
        **mcp_gateway.auth,
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }

    with mcp_gateway.client() as client:

        @given(body=bodies)
        def run(body: bytes) -> None:
            figures.add("mcp", "mcp", "generated")
            figures.add("mcp", "mcp", "sent")
            response = client.post("/mcp", content=body, headers=headers)
            figures.add("mcp", "mcp", _status_class(response.status_code))
            assert response.status_code < 500, response.text[:300]

        _fuzz(run, _examples(MCP_EXAMPLES, fuzz_scale), fuzz_seed)()
