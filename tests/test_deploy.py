"""Deployment files (deploy/ and .env.example) agree with the code they deploy.

Alert rules pass promtool and keep the seed's two alerts unchanged; every metric the rules
and the Grafana dashboard query is one a running gateway exports; every ``QRNG_`` variable
that Compose, Kubernetes, systemd or ``.env.example`` sets is one the configuration reads
(and one the role it is set for reads). Nothing here reaches beyond loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from qrng_dd.config import CollectorSettings, GatewaySettings, McpSettings, variable_names
from qrng_dd.wire.telemetry import encode_telemetry
from tests.support.gateway import make_raw, next_seq, push_packets, start_gateway

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "monitoring" / "prometheus"
RULES = PROMETHEUS / "qrng-dd-rules.yml"
RULES_TEST = PROMETHEUS / "qrng-dd-rules.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = DEPLOY / "monitoring" / "grafana" / "qrng-dd-dashboard.json"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
ENV_EXAMPLE = ROOT / ".env.example"

#: What each role reads; a variable set for a role must be in its set.
ROLE_VARIABLES: dict[str, set[str]] = {
    "gateway": variable_names(GatewaySettings),
    "collector": variable_names(CollectorSettings),
    "mcp": variable_names(McpSettings),
}
KNOWN = set().union(*ROLE_VARIABLES.values())

_METRIC = re.compile(r"\bqrng_[a-z_]+")
_QRNG_VAR = re.compile(r"^QRNG_[A-Z0-9_]+$")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# -- helpers ----------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return path


def _run_promtool(*args: str) -> None:
    result = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _strings_under(node: object, keys: frozenset[str]) -> Iterator[str]:
    """Every string value found under one of ``keys``, anywhere in a JSON/YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            yield from _strings_under(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings_under(item, keys)


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    # `expr`: panel targets; `query` / `definition`: template variables (label_values(...)).
    return list(_strings_under(dashboard, frozenset({"expr", "query", "definition"})))


def _metric_names(queries: Iterable[str]) -> set[str]:
    return {name for query in queries for name in _METRIC.findall(query)}


def _base_name(name: str, histograms: set[str]) -> str:
    """``x_bucket`` / ``x_sum`` / ``x_count`` of a histogram ``x`` is ``x``."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name


def _exposed(text: str) -> tuple[set[str], set[str]]:
    """(names with at least one sample, histogram family names) of a Prometheus exposition."""
    histograms = {
        match.group(1) for match in re.finditer(r"^# TYPE (\S+) histogram$", text, re.MULTILINE)
    }
    samples = {
        match.group(1)
        for match in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE)
    }
    return {_base_name(name, histograms) for name in samples}, histograms


@pytest.fixture(scope="module")
def live_metrics() -> str:
    """``/metrics`` of a real gateway after entropy, telemetry, API calls and a sequence gap."""
    with start_gateway() as gw, gw.client() as client:
        push_packets(gw.url, gw.key, 4, 4096, client=client)
        telemetry = encode_telemetry(
            {"health": {"appliance-1": "healthy"}, "fetch_errors": {"appliance-1": 1}}
        )
        raw = make_raw(gw.key, telemetry, flags=3)
        assert client.post("/push", content=raw).status_code == 200
        # A sequence gap: five sequence numbers skipped, then the next packet.
        for _ in range(5):
            next_seq("collector")
        push_packets(gw.url, gw.key, 1, 64, client=client)
        for path, params in [
            ("/api/random", {"bytes": 32}),
            ("/api/integers", {"count": 3}),
            ("/api/uuid", {}),
            ("/api/random", {"bytes": 0}),  # a 400 too, so errors-by-status has a series
        ]:
            client.get(path, params=params, headers=gw.auth)
        assert client.get("/api/status").status_code == 401
        client.get("/health")
        response = client.get("/metrics")
        assert response.status_code == 200
        assert 'qrng_sequence_gaps_total{source="collector"} 5.0' in response.text
        return response.text


# -- Prometheus rules -------------------------------------------------------------------------


def test_promtool_checks_the_rules_file() -> None:
    """`promtool check rules` accepts the alert rules."""
    _run_promtool("check", "rules", str(RULES))


def test_promtool_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes the rules' unit tests."""
    _run_promtool("test", "rules", str(RULES_TEST))


def test_promtool_checks_the_prometheus_config() -> None:
    """`promtool check config` accepts prometheus.yml (and the rules file it loads)."""
    _run_promtool("check", "config", str(PROMETHEUS_CONFIG))


def test_the_seed_alerts_are_unchanged() -> None:
    """BufferCriticallyLow and HighErrorRate keep the seed's expr and `for` exactly."""
    by_name = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    low = by_name["BufferCriticallyLow"]
    assert low["expr"] == "qrng_buffer_fill_percent < 10"
    assert low["for"] == "5m"
    errors = by_name["HighErrorRate"]
    assert errors["expr"] == "rate(qrng_collector_fetch_errors_total[5m]) > 0.1"
    assert errors["for"] == "2m"


def test_every_alert_has_a_severity_and_annotations() -> None:
    """Every alert rule carries a severity label and a summary and description."""
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


# -- metric names against a running gateway ---------------------------------------------------


@pytest.mark.e2e
def test_dashboard_queries_only_metrics_the_gateway_exports(live_metrics: str) -> None:
    """Every qrng_ metric in the Grafana dashboard has a series in a running gateway's /metrics."""
    exposed, histograms = _exposed(live_metrics)
    used = {_base_name(name, histograms) for name in _metric_names(_dashboard_queries())}
    assert len(used) >= 10, used
    assert used - exposed == set(), f"dashboard metrics not exported: {sorted(used - exposed)}"


@pytest.mark.e2e
def test_alert_rules_query_only_metrics_the_gateway_exports(live_metrics: str) -> None:
    """Every qrng_ metric of the rules (and of their unit tests' input) is exported."""
    exposed, histograms = _exposed(live_metrics)
    exprs = [str(rule["expr"]) for rule in _rules()]
    series = yaml.safe_load(RULES_TEST.read_text())
    inputs = [entry["series"] for test in series["tests"] for entry in test.get("input_series", [])]
    used = {_base_name(name, histograms) for name in _metric_names([*exprs, *inputs])}
    assert {"qrng_buffer_fill_percent", "qrng_collector_fetch_errors_total"} <= used
    assert used - exposed == set(), f"rule metrics not exported: {sorted(used - exposed)}"


def test_the_dashboard_parses_and_has_panels() -> None:
    """The dashboard is JSON with panels, each querying a qrng_ metric, and a uid."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard.get("uid")
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert panels
    for panel in panels:
        exprs = [t.get("expr", "") for t in panel.get("targets", [])]
        if panel.get("type") == "text":
            continue
        assert any(_METRIC.search(e) for e in exprs), panel.get("title")


# -- QRNG_ variables --------------------------------------------------------------------------


def _unknown(names: Iterable[str], allowed: set[str]) -> list[str]:
    return sorted(name for name in names if name not in allowed)


def _env_file_assignments(text: str, *, commented: bool) -> dict[str, str]:
    """``NAME=value`` lines of an env file (also ``#NAME=value`` ones when ``commented``)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if commented and (m := re.match(r"#\s?(QRNG_[A-Z0-9_]*)=(.*)$", stripped)):
                found[m.group(1)] = m.group(2)
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", stripped)
        assert m, f"not an env assignment: {line!r}"
        found[m.group(1)] = m.group(2)
    return found


def test_compose_file_parses_and_sets_only_known_variables() -> None:
    """Each Compose service sets only variables its role (gateway/collector/mcp) reads."""
    compose = yaml.safe_load(COMPOSE.read_text())
    checked = set()
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            names = [item.split("=", 1)[0] for item in environment]
        else:
            names = list(environment)
        qrng = [n for n in names if n.startswith("QRNG_")]
        if not qrng:
            continue
        role = service["command"][0]
        assert role in ROLE_VARIABLES, f"service {name}: command {service['command']}"
        assert _unknown(qrng, ROLE_VARIABLES[role]) == [], f"service {name} ({role})"
        checked.add(role)
    assert checked == {"gateway", "collector", "mcp"}


def test_compose_required_variables_are_in_env_example() -> None:
    """Every `${VAR:?...}` Compose insists on is set in .env.example."""
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert required
    example = _env_file_assignments(ENV_EXAMPLE.read_text(), commented=False)
    assert required - set(example) == set()


def test_env_example_sets_only_known_variables() -> None:
    """`.env.example` parses as an env file and its QRNG_ variables are all known."""
    assignments = _env_file_assignments(ENV_EXAMPLE.read_text(), commented=True)
    qrng = [name for name in assignments if name.startswith("QRNG_")]
    assert "QRNG_HMAC_SECRET_KEY" in qrng
    assert _unknown(qrng, KNOWN) == []


@pytest.mark.parametrize("role", ["gateway", "collector"])
def test_systemd_env_examples_set_only_variables_of_their_role(role: str) -> None:
    """deploy/systemd/ROLE.env.example (commented lines too) sets only what ROLE reads."""
    text = (SYSTEMD / f"{role}.env.example").read_text()
    assignments = _env_file_assignments(text, commented=True)
    assert assignments
    assert all(name.startswith("QRNG_") for name in assignments)
    assert _unknown(assignments, ROLE_VARIABLES[role]) == []
    # The key comes as a systemd credential, never in the env file.
    assert "QRNG_HMAC_SECRET_KEY" not in assignments


@pytest.mark.parametrize("role", ["gateway", "collector"])
def test_systemd_units_set_only_variables_of_their_role(role: str) -> None:
    """The unit's Environment= lines (commented ones too) name only what ROLE reads."""
    text = (SYSTEMD / f"qrng-dd-{role}.service").read_text()
    names = set()
    for line in text.splitlines():
        if m := re.match(r"#?\s*Environment=(.*)$", line.strip()):
            names |= {item.split("=", 1)[0] for item in m.group(1).split()}
    assert "QRNG_HMAC_SECRET_KEY_FILE" in names
    assert _unknown((n for n in names if n.startswith("QRNG_")), ROLE_VARIABLES[role]) == []


def _kubernetes_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    files = sorted([*KUBERNETES.rglob("*.yaml"), *KUBERNETES.rglob("*.yml")])
    assert files
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                assert isinstance(document, dict), path
                yield path, document


def _qrng_names(node: object) -> Iterator[str]:
    """QRNG_ names anywhere in a manifest: env names, literals, Secret keys, key refs.

    Strategic-merge / JSON patches embedded as strings (kustomize ``patches``) are parsed too.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and _QRNG_VAR.match(key):
                yield key
            if key == "patch" and isinstance(value, str):
                for document in yaml.safe_load_all(value):
                    yield from _qrng_names(document)
            else:
                yield from _qrng_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _qrng_names(item)
    elif isinstance(node, str):
        head = node.split("=", 1)[0]
        if _QRNG_VAR.match(head):
            yield head


def _container_roles(document: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(role, env list) of each container of a workload (role = the qrng-dd subcommand)."""
    pod = document.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []):
        args = container.get("args") or container.get("command") or []
        yield args[0], container.get("env", [])


def test_kubernetes_manifests_parse_and_set_only_known_variables() -> None:
    """Every YAML under deploy/kubernetes parses; every QRNG_ name there is known."""
    seen: set[str] = set()
    for path, document in _kubernetes_documents():
        names = set(_qrng_names(document))
        assert _unknown(names, KNOWN) == [], path
        seen |= names
    assert {"QRNG_GATEWAY_ID", "QRNG_GATEWAY_PUSH_URL", "QRNG_HMAC_SECRET_KEY"} <= seen


def test_kubernetes_variables_match_their_role() -> None:
    """Container env and the gateway-/collector-config literals fit the role they go to."""
    roles_seen = set()
    for path, document in _kubernetes_documents():
        for role, env in _container_roles(document):
            assert role in ROLE_VARIABLES, f"{path}: container runs {role!r}"
            names = set(_qrng_names(env))
            assert _unknown(names, ROLE_VARIABLES[role]) == [], f"{path} ({role})"
            roles_seen.add(role)
        for generator in document.get("configMapGenerator", []):
            role = generator["name"].removesuffix("-config")
            assert role in ROLE_VARIABLES, f"{path}: configMap {generator['name']}"
            names = set(_qrng_names(generator.get("literals", [])))
            assert names, f"{path}: {generator['name']}"
            assert _unknown(names, ROLE_VARIABLES[role]) == [], f"{path}: {generator['name']}"
    assert roles_seen == {"gateway", "collector"}


def _push_ids(push: str) -> list[str]:
    return [target.split("=", 1)[0] for target in push.split(",")]


def test_the_collector_push_list_names_every_gateway_replica() -> None:
    """Base and overlay: the push ids are exactly gateway-0..N-1 for the StatefulSet's N."""
    replicas = push = None
    for _path, document in _kubernetes_documents():
        if document.get("kind") == "StatefulSet" and document["metadata"]["name"] == "gateway":
            replicas = document["spec"]["replicas"]
        for role, env in _container_roles(document):
            if role == "collector":
                push = next(e["value"] for e in env if e["name"] == "QRNG_GATEWAY_PUSH_URL")
    assert replicas is not None
    assert push is not None
    assert _push_ids(push) == [f"gateway-{i}" for i in range(replicas)]

    overlay = yaml.safe_load(
        (KUBERNETES / "overlays" / "example" / "kustomization.yaml").read_text()
    )
    patches = {p["target"]["kind"]: yaml.safe_load(p["patch"]) for p in overlay["patches"]}
    ops = {op["path"]: op["value"] for op in patches["StatefulSet"]}
    overlay_replicas = ops.get("/spec/replicas", replicas)
    containers = patches["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = next(c["env"] for c in containers if c["name"] == "collector")
    overlay_push = next(e["value"] for e in env if e["name"] == "QRNG_GATEWAY_PUSH_URL")
    assert _push_ids(overlay_push) == [f"gateway-{i}" for i in range(overlay_replicas)]
