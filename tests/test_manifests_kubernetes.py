"""The manifests' core Kubernetes documents pass the Kubernetes OpenAPI schemas.

tests/test_manifests.py validates the Istio and Gateway API documents against
their CRDs; every other document (Service, ServiceAccount, Deployment, and any
Namespace, ConfigMap, ... added later) is checked here with kubernetes-validate,
which ships JSON schemas generated from each Kubernetes release's OpenAPI spec.
Its "strict" schemas set additionalProperties: false, so an unknown field is an
error, as it is for `kubectl apply --validate=strict`.

The schema version is the Kubernetes minor of the default kind node image
(RunSettings.kubernetes_version); every other minor the kind target offers
is checked too. kubernetes-validate silently falls back to an older schema for
a minor it does not ship, so the tests assert the version it reports back.

What the schemas do not check, so a document passing here can still be
refused by an API server:
- null: the generated schemas allow null for every field (`image: null` passes);
- value rules the API server enforces in code: name formats, port and
  nodePort ranges, selector/label agreement, a container without an image, ...
kubernetes_validate.validate stops at the first error, so a document shows
one error at a time.
"""

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from conformance import manifests
from conformance.settings import RunSettings
from conformance.targets import crd_schema, kind
from tests.builders import own_docs

KUBERNETES_VERSION = RunSettings().kubernetes_version
# The default kube-apiserver --service-node-port-range.
NODE_PORT_RANGE = range(30000, 32768)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(document)"


def k8s_errors(doc: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """[] if doc passes the strict schema of `version`, else ["path: message"]."""
    try:
        used = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{_path(e.path)}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        # An unknown kind or apiVersion (a typo, or a CRD kind not shipped in crd_schema.CRD_DIR).
        return [f"apiVersion/kind: {e.message}"]
    # Guard against the silent fallback to an older schema set.
    assert used == version, f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {version} (used {used})"
    return []


def _core_doc_params() -> list[Any]:
    """One param per document that no shipped CRD covers (the params of
    tests/builders.py's own_docs(), as tests/test_manifests.py uses them, id
    `file#N:Kind/name`; a file that does not load stays one failing param).

    Everything tests/test_manifests.py does not validate against a CRD lands
    here, so no document goes unvalidated.
    """
    crds = crd_schema.schema_set()
    return [p for p in own_docs() if p.values[0] is None or not crds.covers(p.values[0])]


CORE_DOCS = _core_doc_params()


def _deployment() -> dict[str, Any]:
    docs = manifests.load("clients/curl.yaml")
    return copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


# --- our manifests --------------------------------------------------------------------------


def test_core_documents_are_found() -> None:
    # A broken split (say, covers() claiming every document) would leave nothing to check.
    kinds = {p.values[0]["kind"] for p in CORE_DOCS if p.values[0] is not None}
    assert {"Service", "ServiceAccount", "Deployment"} <= kinds
    assert not kinds & {"VirtualService", "DestinationRule", "Gateway", "HTTPRoute"}


@pytest.mark.parametrize(("doc", "load_error"), CORE_DOCS)
def test_core_document_validates(doc: dict[str, Any] | None, load_error: str) -> None:
    assert doc is not None, load_error
    errors = k8s_errors(doc)
    assert not errors, f"Kubernetes {KUBERNETES_VERSION}: " + "\n".join(errors)


@pytest.mark.parametrize("minor", sorted(set(kind.NODE_IMAGES) - {KUBERNETES_VERSION}))
def test_core_documents_validate_for_every_kind_node_minor(minor: str) -> None:
    failures = [
        f"{p.id}: {error}"
        for p in CORE_DOCS
        if p.values[0] is not None
        for error in k8s_errors(p.values[0], minor)
    ]
    assert not failures, f"Kubernetes {minor}:\n" + "\n".join(failures)


# --- the validator refuses broken documents, naming the path --------------------------------


def test_default_version_is_the_kind_default_node() -> None:
    assert KUBERNETES_VERSION == "1.34"
    assert KUBERNETES_VERSION in kind.NODE_IMAGES
    assert kubernetes_validate.validate(_deployment(), KUBERNETES_VERSION, strict=True) == "1.34"


def test_rejects_unknown_container_field() -> None:
    dep = _deployment()
    _container(dep)["imagee"] = _container(dep).pop("image")
    assert k8s_errors(dep) == [
        "spec.template.spec.containers[0]: Additional properties are not allowed ('imagee' was unexpected)"
    ]


def test_rejects_unknown_top_level_and_metadata_fields() -> None:
    dep = _deployment()
    dep["sepc"] = dep.pop("spec")
    assert k8s_errors(dep) == ["(document): Additional properties are not allowed ('sepc' was unexpected)"]
    dep = _deployment()
    dep["spec"]["template"]["metadata"]["lables"] = {"app": "curl"}
    assert k8s_errors(dep) == [
        "spec.template.metadata: Additional properties are not allowed ('lables' was unexpected)"
    ]


def test_rejects_container_port_given_as_string() -> None:
    dep = _deployment()
    _container(dep)["ports"] = [{"containerPort": "80"}]
    assert k8s_errors(dep) == ["spec.template.spec.containers[0].ports[0].containerPort: '80' is not of type 'integer'"]


def test_rejects_container_without_name() -> None:
    dep = _deployment()
    del _container(dep)["name"]
    assert k8s_errors(dep) == ["spec.template.spec.containers[0]: 'name' is a required property"]


def test_rejects_deployment_without_selector() -> None:
    dep = _deployment()
    del dep["spec"]["selector"]
    assert k8s_errors(dep) == ["spec: 'selector' is a required property"]


def test_rejects_label_value_that_yaml_reads_as_bool() -> None:
    # `sidecar.istio.io/inject: true` unquoted is a YAML bool; the API server wants a string.
    dep = _deployment()
    dep["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] = True
    (error,) = k8s_errors(dep)
    assert error.startswith("spec.template.metadata.labels.sidecar.istio.io/inject: True is not of type 'string'")


def test_target_port_is_int_or_string() -> None:
    service = copy.deepcopy(next(d for d in manifests.load("clients/curl.yaml") if d["kind"] == "Service"))
    for target_port in (80, "http"):
        service["spec"]["ports"][0]["targetPort"] = target_port
        assert k8s_errors(service) == []
    service["spec"]["ports"][0]["targetPort"] = 1.5
    (error,) = k8s_errors(service)
    assert error.startswith("spec.ports[0].targetPort: 1.5 is not valid")


@pytest.mark.parametrize(("api_version", "kind_name"), [("apps/v1", "Deploymnet"), ("apps/v1beta1", "Deployment")])
def test_rejects_unknown_kind_or_version(api_version: str, kind_name: str) -> None:
    dep = _deployment()
    dep["apiVersion"], dep["kind"] = api_version, kind_name
    (error,) = k8s_errors(dep)
    assert error.startswith(f"apiVersion/kind: Couldn't find schema for kind {kind_name} with api version {api_version}")


def test_null_passes_the_schema() -> None:
    # Pinned limitation (see the module docstring): the API server would refuse this pod.
    dep = _deployment()
    _container(dep)["image"] = None
    assert k8s_errors(dep) == []


# --- the kind cluster config -----------------------------------------------------------------


def test_kind_config_is_not_a_kubernetes_api_object(tmp_path: Path) -> None:
    # kind.x-k8s.io/v1alpha4 Cluster is read by the kind CLI only; no OpenAPI schema
    # exists for it, so tests/test_kind.py checks it against kind's Go types instead.
    config = kind.KindCluster(name="mc", kubernetes=KUBERNETES_VERSION, work_dir=tmp_path).config()
    (error,) = k8s_errors(config)
    assert "Couldn't find schema for kind Cluster with api version kind.x-k8s.io/v1alpha4" in error


def test_kind_port_mappings_meet_the_ingress_node_ports(tmp_path: Path) -> None:
    # What neither schema checks: kind maps host ports to these node ports, and the
    # Service in kind/ingress-nodeports.yaml must claim the same ones, within the
    # API server's default NodePort range.
    config = kind.KindCluster(name="mc", kubernetes=KUBERNETES_VERSION, work_dir=tmp_path).config()
    mapped = {m["containerPort"] for node in config["nodes"] for m in node.get("extraPortMappings", [])}
    (service,) = manifests.load("kind/ingress-nodeports.yaml")
    node_ports = {p["nodePort"] for p in service["spec"]["ports"]}
    assert mapped == node_ports == {kind.INGRESS_HTTP_NODEPORT, kind.INGRESS_HTTPS_NODEPORT}
    assert all(port in NODE_PORT_RANGE for port in node_ports)
    assert k8s_errors(service) == []
