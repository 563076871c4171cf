"""The Kubernetes manifests as a cluster would get them: rendered by kustomize, then checked.

``kubectl kustomize`` renders ``deploy/kubernetes/base`` and every overlay; each rendered
resource must validate, strictly (no unknown fields), against the Kubernetes JSON schemas that
the ``kubernetes-validate`` package bundles, for the oldest and the newest version checked.
Then what no schema knows: the StatefulSet's pod names ``gateway-0..N-1`` are exactly the
gateway ids of the collector's split fan-out (parsed by the collector's own parser), each at
its pod's DNS name behind the headless Service; the pods meet Pod Security ``restricted``; the
NetworkPolicies keep the gateways from any egress and the collector from any ingress.

kubectl is a real dependency here: without it (or with a kubectl whose kustomize predates
``labels:``, like Debian 12's kubernetes-client 1.20) the tests fail with what to install.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from qrng_dd import __version__
from qrng_dd.addresses import parse_push_target
from qrng_dd.config import CollectorSettings, GatewaySettings, load

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
OVERLAYS = {
    "base": KUBERNETES / "base",
    **{path.name: path for path in sorted((KUBERNETES / "overlays").iterdir()) if path.is_dir()},
}
#: The oldest Kubernetes release still checked, and the newest schemas the validator ships.
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
PUSH_PORT = 7764


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: it renders deploy/kubernetes (`kubectl kustomize`); "
            "install a kubectl of 1.21 or later",
            pytrace=False,
        )
    return path


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}:\n{result.stderr}"
    documents = tuple(d for d in yaml.safe_load_all(result.stdout) if d is not None)
    assert all(isinstance(d, dict) for d in documents)
    return documents


@pytest.fixture(params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    overlay: str = request.param
    return _render(overlay)


def _one(documents: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, name
    result: dict[str, Any] = found[0]
    return result


def _workloads(documents: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    yield from (d for d in documents if d["kind"] in {"Deployment", "StatefulSet"})


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _errors(document: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = "/".join(str(p) for p in err.path)
        return f"{document['kind']}/{document['metadata']['name']}: {path}: {err.message}"
    return None


# -- schemas ----------------------------------------------------------------------------------


def test_every_overlay_renders_what_it_should() -> None:
    """kustomize renders base and overlays with the expected resources, in namespace qrng-dd."""
    assert set(OVERLAYS) >= {"base", "example"}
    for overlay in OVERLAYS:
        documents = _render(overlay)
        kinds = sorted({d["kind"] for d in documents})
        assert kinds == [
            "ConfigMap",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "StatefulSet",
        ], overlay
        namespaced = [d for d in documents if d["kind"] != "Namespace"]
        assert {d["metadata"].get("namespace") for d in namespaced} == {"qrng-dd"}, overlay


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_manifests_validate_strictly(
    rendered: tuple[dict[str, Any], ...], version: str
) -> None:
    """Every rendered resource passes the Kubernetes schema, unknown fields refused."""
    errors = [error for document in rendered if (error := _errors(document, version))]
    assert errors == []


def test_the_validator_refuses_broken_manifests() -> None:
    """The check above can fail: a misspelt field, a wrong type, a missing one are caught."""
    statefulset = _one(_render("base"), "StatefulSet", "gateway")
    assert _errors(statefulset, VERSIONS[-1]) is None

    misspelt = copy.deepcopy(statefulset)
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["replicas"] = "three"
    missing = copy.deepcopy(statefulset)
    del missing["spec"]["selector"]
    for broken in (misspelt, wrong_type, missing):
        assert _errors(broken, VERSIONS[-1]) is not None


# -- split fan-out ----------------------------------------------------------------------------


def test_gateway_pod_names_are_the_collector_push_targets(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    """gateway-0..N-1 (StatefulSet) == the push list's ids, each at its pod's headless DNS name."""
    statefulset = _one(rendered, "StatefulSet", "gateway")
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    headless = _one(rendered, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert _matches(headless["spec"]["selector"], pod_labels)

    gateway = _container(statefulset, "gateway")
    gateway_env = {e["name"]: e for e in gateway["env"]}
    # Each gateway's id is its pod name, so packets for gateway-N reach only pod gateway-N.
    assert gateway_env["QRNG_GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["http"] == PUSH_PORT
    assert {p["port"] for p in headless["spec"]["ports"]} == {PUSH_PORT}

    collector = _container(_one(rendered, "Deployment", "collector"), "collector")
    push = next(e["value"] for e in collector["env"] if e["name"] == "QRNG_GATEWAY_PUSH_URL")
    targets = [parse_push_target(entry) for entry in push.split(",")]
    assert [t.gateway_id for t in targets] == [f"{name}-{i}" for i in range(replicas)]
    for index, target in enumerate(targets):
        assert target.scheme == "http"
        assert target.host == f"{name}-{index}.{headless['metadata']['name']}"
        assert target.port == PUSH_PORT
        assert target.url.endswith("/push")


def _config_map(documents: tuple[dict[str, Any], ...], prefix: str) -> dict[str, str]:
    # configMapGenerator appends a content hash to the name.
    found = [
        d
        for d in documents
        if d["kind"] == "ConfigMap" and re.fullmatch(rf"{prefix}-[a-z0-9]+", d["metadata"]["name"])
    ]
    assert len(found) == 1, prefix
    data: dict[str, str] = found[0]["data"]
    return data


def test_the_rendered_configuration_loads_in_each_role(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    """Collector and gateway settings, as the pods get them, pass the roles' own validation."""
    key = "ab" * 32
    collector = _container(_one(rendered, "Deployment", "collector"), "collector")
    env = {
        **_config_map(rendered, "collector-config"),
        **{e["name"]: e["value"] for e in collector["env"] if "value" in e},
        "QRNG_HMAC_SECRET_KEY": key,
    }
    settings = load(CollectorSettings, env)
    replicas = _one(rendered, "StatefulSet", "gateway")["spec"]["replicas"]
    assert len(settings.targets) == replicas

    gateway_env = {
        **_config_map(rendered, "gateway-config"),
        "QRNG_GATEWAY_ID": "gateway-0",
        "QRNG_STATE_DIR": "/var/lib/qrng-dd",
        "QRNG_HMAC_SECRET_KEY": key,
        "QRNG_API_KEYS": "k" * 20,
    }
    assert load(GatewaySettings, gateway_env).port == PUSH_PORT


def test_images_carry_the_release_tag(rendered: tuple[dict[str, Any], ...]) -> None:
    """Every container runs the qrng-dd image tagged with this release's version."""
    for workload in _workloads(rendered):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert repository.endswith("qrng-dd"), container["image"]
            assert tag == __version__, container["image"]


# -- security ---------------------------------------------------------------------------------


def test_pods_meet_pod_security_restricted(rendered: tuple[dict[str, Any], ...]) -> None:
    """Non-root, seccomp RuntimeDefault, no privilege escalation, no capabilities, read-only."""
    namespace = _one(rendered, "Namespace", "qrng-dd")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = list(_workloads(rendered))
    assert len(workloads) == 2
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]


def _policies_for(
    documents: tuple[dict[str, Any], ...], labels: dict[str, str], policy_type: str
) -> list[dict[str, Any]]:
    return [
        d
        for d in documents
        if d["kind"] == "NetworkPolicy"
        and policy_type in d["spec"]["policyTypes"]
        and _matches(d["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]


def test_network_policies_are_one_way(rendered: tuple[dict[str, Any], ...]) -> None:
    """Gateways: no egress rule anywhere. Collector: no ingress rule anywhere."""
    gateway = _one(rendered, "StatefulSet", "gateway")["spec"]["template"]["metadata"]["labels"]
    collector = _one(rendered, "Deployment", "collector")["spec"]["template"]["metadata"]["labels"]

    gateway_egress = _policies_for(rendered, gateway, "Egress")
    assert gateway_egress, "no Egress policy selects the gateways: egress would be open"
    assert all(p["spec"].get("egress", []) == [] for p in gateway_egress)
    collector_ingress = _policies_for(rendered, collector, "Ingress")
    assert collector_ingress, "no Ingress policy selects the collector: ingress would be open"
    assert all(p["spec"].get("ingress", []) == [] for p in collector_ingress)
    # The collector may reach the gateways' push port (else nothing flows at all).
    pushes = [
        rule
        for policy in _policies_for(rendered, collector, "Egress")
        for rule in policy["spec"].get("egress", [])
        if any(
            _matches(peer.get("podSelector", {}).get("matchLabels", {}), gateway)
            and "podSelector" in peer
            for peer in rule.get("to", [])
        )
    ]
    assert [p["port"] for rule in pushes for p in rule["ports"]] == [PUSH_PORT]
