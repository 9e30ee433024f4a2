"""Our manifests agree with Istio's samples on everything routing and probes depend on.

The manifests are our own files, trimmed for the local mesh; these tests make
sure the trimming never changes a name, label, port, image or route, so the
upstream samples and docs keep describing what we deploy. A mismatch fails
with a unified diff of the compared fields (upstream -> ours).
"""

import copy
import difflib
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from conformance import manifests
from tests.builders import upstream_file

# Fields dropped from our workloads because the local mesh refuses what it does not implement.
DROPPED_FIELDS = {"volumes", "volumeMounts", "env", "imagePullPolicy", "securityContext"}
# Our annotations: the curl pod's proxy exposes its fault-injection counters, httpbin's its TLS
# listener counters (Istio's proxies leave them out by default; FaultInjection and MESH-SECURITY
# read them).
OUR_ANNOTATIONS = {("clients/curl.yaml", "Deployment/curl"): {"proxy.istio.io/config"},
                   ("clients/httpbin.yaml", "Deployment/httpbin"): {"proxy.istio.io/config"},
                   # upstream's own: the proxy's cluster.outbound counters (checked below)
                   ("clients/fortio.yaml", "Deployment/fortio-deploy"): {"proxy.istio.io/config"}}

WORKLOADS = [
    ("bookinfo/bookinfo.yaml", "bookinfo__platform__kube__bookinfo.yaml"),
    ("bookinfo/bookinfo-versions.yaml", "bookinfo__platform__kube__bookinfo-versions.yaml"),
    ("clients/curl.yaml", "curl__curl.yaml"),
    ("clients/httpbin.yaml", "httpbin__httpbin.yaml"),
    ("clients/fortio.yaml", "httpbin__sample-client__fortio-deploy.yaml"),
]

ISTIO_CONFIG = [
    ("istio/traffic/destination-rule-all.yaml", "bookinfo__networking__destination-rule-all.yaml"),
    ("istio/traffic/virtual-service-all-v1.yaml", "bookinfo__networking__virtual-service-all-v1.yaml"),
    ("istio/traffic/virtual-service-reviews-v3.yaml", "bookinfo__networking__virtual-service-reviews-v3.yaml"),
    ("istio/traffic/virtual-service-reviews-80-20.yaml", "bookinfo__networking__virtual-service-reviews-80-20.yaml"),
    ("istio/traffic/virtual-service-reviews-50-v3.yaml", "bookinfo__networking__virtual-service-reviews-50-v3.yaml"),
    ("istio/traffic/virtual-service-reviews-test-v2.yaml", "bookinfo__networking__virtual-service-reviews-test-v2.yaml"),
    ("istio/traffic/virtual-service-ratings-test-abort.yaml", "bookinfo__networking__virtual-service-ratings-test-abort.yaml"),
]


def _upstream(name: str) -> list[dict[str, Any]]:
    return manifests.load_file(upstream_file(f"istio/{name}"))


def assert_same(ours: dict[str, Any], upstream: dict[str, Any], what: str) -> None:
    """Fail with one unified diff (upstream -> ours) per resource that differs, titled kind/name."""
    sections = []
    for key in sorted(set(ours) | set(upstream)):
        if ours.get(key) == upstream.get(key):
            continue
        before = yaml.safe_dump(upstream[key], sort_keys=True).splitlines() if key in upstream else []
        after = yaml.safe_dump(ours[key], sort_keys=True).splitlines() if key in ours else []
        title = ""
        if key not in upstream:
            title = " (only in ours)"
        elif key not in ours:
            title = " (missing from ours)"
        diff = difflib.unified_diff(before, after, f"upstream {key}", f"ours {key}", lineterm="")
        sections.append(f"== {key}{title}\n" + "\n".join(diff))
    if sections:
        pytest.fail(f"{what} differs from upstream:\n" + "\n".join(sections), pytrace=False)


# --- what is compared, per kind (defaults spelt out, so omitting a default is no difference) ---


def _service(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return {
        "labels": doc["metadata"].get("labels", {}),
        "type": spec.get("type", "ClusterIP"),
        "selector": spec.get("selector", {}),
        "ports": [
            {
                "name": p.get("name"),
                "port": p["port"],
                "targetPort": p.get("targetPort", p["port"]),
                "protocol": p.get("protocol", "TCP"),
            }
            for p in spec["ports"]
        ],
    }


def _service_account(doc: dict[str, Any]) -> dict[str, Any]:
    return {"labels": doc["metadata"].get("labels", {})}


def _deployment(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    return {
        "labels": doc["metadata"].get("labels", {}),
        "replicas": spec.get("replicas", 1),
        "selector": spec["selector"]["matchLabels"],
        "templateLabels": spec["template"]["metadata"].get("labels", {}),
        "serviceAccountName": pod.get("serviceAccountName"),
        "containers": [
            {
                "name": c["name"],
                "image": c["image"],
                "command": c.get("command"),
                "args": c.get("args"),
                "containerPorts": [p["containerPort"] for p in c.get("ports", [])],
            }
            for c in pod["containers"]
        ],
    }


SHAPES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "Service": _service,
    "ServiceAccount": _service_account,
    "Deployment": _deployment,
}


def _shape(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """kind/name -> the compared fields; a kind without a shape is compared whole."""
    return {f"{d['kind']}/{d['metadata']['name']}": SHAPES.get(d["kind"], lambda x: x)(d) for d in docs}


def _find(value: Any, forbidden: set[str], path: str = "") -> list[str]:
    """Paths of every key named in `forbidden`, at any depth."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in forbidden:
                found.append(where)
            found += _find(item, forbidden, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _find(item, forbidden, f"{path}[{i}]")
    return found


# --- workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "upstream"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_workloads_match_upstream(ours: str, upstream: str) -> None:
    assert_same(_shape(manifests.load(ours)), _shape(_upstream(upstream)), ours)


@pytest.mark.parametrize(("ours", "upstream"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_workloads_keep_only_implemented_fields(ours: str, upstream: str) -> None:
    for doc in manifests.load(ours):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert "namespace" not in doc["metadata"], f"{where}: the namespace is chosen at run time"
        assert _find(doc, DROPPED_FIELDS) == [], where
        annotations = {k for meta in _metadata_blocks(doc) for k in (meta.get("annotations") or {})}
        assert annotations == OUR_ANNOTATIONS.get((ours, where), set()), where


def test_fortio_exposes_the_same_proxy_stats_as_upstream() -> None:
    def annotations(docs: list[dict[str, Any]]) -> dict[str, str]:
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    ours = annotations(manifests.load("clients/fortio.yaml"))
    upstream = annotations(_upstream("httpbin__sample-client__fortio-deploy.yaml"))
    assert ours == upstream
    assert "cluster.outbound" in yaml.safe_load(ours["proxy.istio.io/config"])["proxyStatsMatcher"]["inclusionPrefixes"]


def _metadata_blocks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    template = doc.get("spec", {}).get("template", {}) if isinstance(doc.get("spec"), dict) else {}
    return [doc.get("metadata") or {}, template.get("metadata") or {}]


def test_bookinfo_images_are_the_pinned_release() -> None:
    images = sorted(
        c["image"]
        for d in manifests.load("bookinfo/bookinfo.yaml")
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    expected = sorted(
        f"registry.istio.io/release/examples-bookinfo-{svc}:1.20.3"
        for svc in ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1")
    )
    assert images == expected


# --- Istio routing config ------------------------------------------------------------------


def _config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": {"apiVersion": d["apiVersion"], "spec": d.get("spec")}
        for d in docs
    }


@pytest.mark.parametrize(("ours", "upstream"), ISTIO_CONFIG, ids=[c[0] for c in ISTIO_CONFIG])
def test_istio_config_matches_upstream(ours: str, upstream: str) -> None:
    assert_same(_config(manifests.load(ours)), _config(_upstream(upstream)), ours)


def test_bookinfo_gateway_matches_upstream_except_host() -> None:
    ours = copy.deepcopy(manifests.load("istio/ingress/bookinfo-gateway.yaml"))
    # The one intended difference (see the file's header): a named host instead of "*".
    gateway = next(d for d in ours if d["kind"] == "Gateway")
    virtual_service = next(d for d in ours if d["kind"] == "VirtualService")
    assert gateway["spec"]["servers"][0]["hosts"] == ["bookinfo.meshconf.test"]
    assert virtual_service["spec"]["hosts"] == ["bookinfo.meshconf.test"]
    gateway["spec"]["servers"][0]["hosts"] = ["*"]
    virtual_service["spec"]["hosts"] = ["*"]
    assert_same(_config(ours), _config(_upstream("bookinfo__networking__bookinfo-gateway.yaml")), "bookinfo-gateway")
