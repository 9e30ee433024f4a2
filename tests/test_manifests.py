"""The manifests load, and their Istio / Gateway API documents pass the upstream CRD schemas.

The same validator runs over upstream's own samples, to show that it accepts
real documents, and over broken copies, to show that it names what is wrong.
"""

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from conformance import manifests
from conformance.errors import ConformanceError, ManifestError
from conformance.targets import crd_schema
from tests.builders import UPSTREAM, doc_params, own_docs, upstream_file

# Kinds applied as plain Kubernetes objects, without a CRD to validate against.
CORE_KINDS = {("v1", "Service"), ("v1", "ServiceAccount"), ("v1", "Pod"), ("apps/v1", "Deployment"),
              ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "IngressClass"),
              ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
              ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")}

EXPECTED_FILES = {
    "bookinfo/bookinfo.yaml",
    "clients/curl.yaml",
    "clients/httpbin.yaml",
    "clients/fortio.yaml",
    "local/ingressgateway.yaml",
    "local/istio-sidecar-injector.yaml",
    "injection/pod-plain.yaml",
    "istio/traffic/destination-rule-all.yaml",
    "istio/traffic/virtual-service-all-v1.yaml",
    "istio/traffic/virtual-service-reviews-v3.yaml",
    "istio/ingress/bookinfo-gateway.yaml",
}


# Manifests made to be refused by the CRD's schema (ValidationWebhook's schema case), and what
# the schema finds in each: the API server refuses them before any webhook.
SCHEMA_INVALID = {"validation/dr-no-host.yaml": ["spec.host: required field missing"]}


@pytest.fixture(scope="module")
def schemas() -> crd_schema.SchemaSet:
    return crd_schema.schema_set()


def _own_custom_docs() -> list[Any]:
    """Our documents other than core kinds (those are for the CRD schemas; see the known-kind test),
    and other than those made to fail the schema (SCHEMA_INVALID)."""
    return [p for p in own_docs() if (p.values[0] is None or _core_kind(p.values[0]) not in CORE_KINDS)
            and p.id.split("#", 1)[0] not in SCHEMA_INVALID]


def _core_kind(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["apiVersion"], doc["kind"]


def _upstream_docs() -> list[Any]:
    istio = UPSTREAM / "istio"
    files = sorted(istio.glob("bookinfo__networking__*.yaml")) + sorted(istio.glob("bookinfo__gateway-api__*.yaml"))
    assert files, f"no upstream samples in {istio}"
    return doc_params(files, istio)


def _load(name: str, index: int = 0) -> dict[str, Any]:
    return copy.deepcopy(manifests.load(name)[index])


def _upstream(name: str, index: int = 0) -> dict[str, Any]:
    return manifests.load_file(upstream_file(f"istio/{name}"))[index]


# --- our manifests --------------------------------------------------------------------------


def test_expected_manifest_files_exist() -> None:
    found = {p.relative_to(manifests.manifests_dir()).as_posix() for p in manifests.all_files()}
    assert EXPECTED_FILES <= found, f"missing: {sorted(EXPECTED_FILES - found)}"


@pytest.mark.parametrize(("doc", "load_error"), own_docs())
def test_manifest_document_is_known_kind(doc: dict[str, Any] | None, load_error: str, schemas: crd_schema.SchemaSet) -> None:
    # Catches a misspelt apiVersion group, which would otherwise skip schema validation.
    assert doc is not None, load_error
    known = schemas.covers(doc) or _core_kind(doc) in CORE_KINDS
    assert known, f"{doc['apiVersion']} {doc['kind']}: neither a shipped CRD nor a core kind we use"


@pytest.mark.parametrize(("doc", "load_error"), _own_custom_docs())
def test_manifest_document_validates(doc: dict[str, Any] | None, load_error: str, schemas: crd_schema.SchemaSet) -> None:
    assert doc is not None, load_error
    errors = schemas.validate(doc)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", sorted(SCHEMA_INVALID))
def test_manifest_made_invalid_fails_the_schema_as_intended(name: str, schemas: crd_schema.SchemaSet) -> None:
    [doc] = manifests.load(name)
    assert schemas.validate(doc) == SCHEMA_INVALID[name]


@pytest.mark.parametrize(("doc", "load_error"), _upstream_docs())
def test_upstream_sample_validates(doc: dict[str, Any] | None, load_error: str, schemas: crd_schema.SchemaSet) -> None:
    assert doc is not None, load_error
    assert schemas.covers(doc)
    assert schemas.validate(doc) == []


def _selected(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", ["bookinfo/bookinfo.yaml", "clients/curl.yaml", "clients/httpbin.yaml", "local/ingressgateway.yaml"])
def test_workloads_are_wired(name: str) -> None:
    docs = manifests.load(name)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for dep in deployments:
        template = dep["spec"]["template"]
        assert _selected(dep["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]), dep["metadata"]["name"]
        assert template["spec"]["serviceAccountName"] in accounts, dep["metadata"]["name"]
    for svc in (d for d in docs if d["kind"] == "Service"):
        pods = [dep["spec"]["template"]["metadata"]["labels"] for dep in deployments]
        assert any(_selected(svc["spec"]["selector"], labels) for labels in pods), f"Service {svc['metadata']['name']} selects no pod"


def test_ingress_gateway_serves_the_bookinfo_gateway() -> None:
    # The Gateway's selector and server port must meet the local gateway's pod
    # labels and the container port behind Service port 80 (`http2`).
    gateway = _load("istio/ingress/bookinfo-gateway.yaml", 0)
    docs = manifests.load("local/ingressgateway.yaml")
    service = next(d for d in docs if d["kind"] == "Service")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    http2 = next(p for p in service["spec"]["ports"] if p["name"] == "http2")

    assert _selected(gateway["spec"]["selector"], pod_labels)
    assert (http2["port"], http2["targetPort"]) == (80, 8080)
    assert gateway["spec"]["servers"][0]["port"]["number"] == http2["targetPort"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert all(d["metadata"].get("namespace") == "istio-system" for d in docs)


def test_bookinfo_gateway_uses_a_specific_host() -> None:
    # "*" would answer every host, and the ingress suite could not check for a 404.
    gateway, virtual_service = manifests.load("istio/ingress/bookinfo-gateway.yaml")
    assert gateway["spec"]["servers"][0]["hosts"] == ["bookinfo.meshconf.test"]
    assert virtual_service["spec"]["hosts"] == ["bookinfo.meshconf.test"]
    assert virtual_service["spec"]["gateways"] == ["bookinfo-gateway"]


# --- the validator refuses broken documents, naming the path --------------------------------


def test_rejects_unknown_field(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["spec"]["http"][0]["rout"] = vs["spec"]["http"][0].pop("route")
    assert schemas.validate(vs) == ["spec.http[0].rout: unknown field"]


def test_rejects_unknown_top_level_and_metadata_fields(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["sepc"] = vs.pop("spec")
    vs["metadata"]["lables"] = {"app": "x"}
    assert schemas.validate(vs) == ["metadata.lables: unknown field", "sepc: unknown field"]


def test_rejects_weight_given_as_string(schemas: crd_schema.SchemaSet) -> None:
    vs = _upstream("bookinfo__networking__virtual-service-reviews-80-20.yaml")
    vs = copy.deepcopy(vs)
    vs["spec"]["http"][0]["route"][1]["weight"] = "20"
    assert schemas.validate(vs) == ["spec.http[0].route[1].weight: expected integer, got string '20'"]


def test_rejects_version_the_crd_does_not_serve(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["apiVersion"] = "networking.istio.io/v1beta2"
    assert schemas.covers(vs)
    (error,) = schemas.validate(vs)
    assert error.startswith("apiVersion: networking.istio.io/v1beta2 is not served for VirtualService")
    assert "v1, v1alpha3, v1beta1" in error


def test_older_served_version_is_accepted(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["apiVersion"] = "networking.istio.io/v1beta1"
    assert schemas.validate(vs) == []


def test_unknown_group_is_not_covered(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["apiVersion"] = "networking.istio.oi/v1"
    assert not schemas.covers(vs)
    (error,) = schemas.validate(vs)
    assert "no CRD" in error and "networking.istio.oi" in error


def test_istio_gateway_without_servers_passes_the_schema(schemas: crd_schema.SchemaSet) -> None:
    # The Istio Gateway schema requires nothing in spec: only istiod's webhook
    # refuses a Gateway without servers. Pinned so nobody relies on the schema for it.
    gateway = _load("istio/ingress/bookinfo-gateway.yaml", 0)
    del gateway["spec"]["servers"]
    assert schemas.validate(gateway) == []


def test_rejects_istio_gateway_server_without_port(schemas: crd_schema.SchemaSet) -> None:
    gateway = _load("istio/ingress/bookinfo-gateway.yaml", 0)
    del gateway["spec"]["servers"][0]["port"]
    assert schemas.validate(gateway) == ["spec.servers[0].port: required field missing"]


def test_rejects_gateway_api_gateway_without_listeners(schemas: crd_schema.SchemaSet) -> None:
    gateway = copy.deepcopy(_upstream("bookinfo__gateway-api__bookinfo-gateway.yaml", 0))
    del gateway["spec"]["listeners"]
    assert schemas.validate(gateway) == ["spec.listeners: required field missing"]


def test_rejects_duplicate_list_map_key(schemas: crd_schema.SchemaSet) -> None:
    # listeners is x-kubernetes-list-type: map keyed by name.
    gateway = copy.deepcopy(_upstream("bookinfo__gateway-api__bookinfo-gateway.yaml", 0))
    gateway["spec"]["listeners"].append(copy.deepcopy(gateway["spec"]["listeners"][0]))
    (error,) = schemas.validate(gateway)
    assert error.startswith("spec.listeners: duplicate entry with name='http'")


def test_rejects_mutually_exclusive_fields(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/ingress/bookinfo-gateway.yaml", 1)
    vs["spec"]["http"][0]["match"][0]["uri"]["prefix"] = "/product"
    assert schemas.validate(vs) == ["spec.http[0].match[0].uri: sets fields that exclude each other"]


def test_rejects_out_of_range_and_bad_name(schemas: crd_schema.SchemaSet) -> None:
    gateway = copy.deepcopy(_upstream("bookinfo__gateway-api__bookinfo-gateway.yaml", 0))
    gateway["spec"]["listeners"][0]["port"] = 70000
    gateway["metadata"]["name"] = "Bookinfo_Gateway"
    errors = schemas.validate(gateway)
    assert len(errors) == 2
    assert errors[0].startswith("metadata.name: 'Bookinfo_Gateway' does not match")
    assert errors[1] == "spec.listeners[0].port: 70000 is greater than the maximum of 65535"


def test_null_only_where_nullable(schemas: crd_schema.SchemaSet) -> None:
    dr = _load("istio/traffic/destination-rule-all.yaml")
    dr["spec"]["trafficPolicy"] = {"outlierDetection": {"consecutive5xxErrors": None}}
    assert schemas.validate(dr) == []
    dr["spec"]["host"] = None
    assert schemas.validate(dr) == ["spec.host: expected string, got null"]


def test_status_preserves_unknown_fields(schemas: crd_schema.SchemaSet) -> None:
    vs = _load("istio/traffic/virtual-service-reviews-v3.yaml")
    vs["status"] = {"anything": {"goes": 1}}
    assert schemas.validate(vs) == []


def test_int_or_string_accepts_both() -> None:
    validator = crd_schema._KubeValidator(crd_schema._structural({
        "type": "object",
        "properties": {"port": {"x-kubernetes-int-or-string": True}},
    }))
    assert list(validator.iter_errors({"port": 8080})) == []
    assert list(validator.iter_errors({"port": "http"})) == []
    assert list(validator.iter_errors({"port": True})) != []
    assert list(validator.iter_errors({"port": 1.5})) != []


def test_missing_upstream_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConformanceError, match=re.escape(str(missing / "istio" / "crd-all.gen.yaml"))):
        crd_schema.SchemaSet(missing)
    with pytest.raises(ConformanceError, match=re.escape(str(UPSTREAM / "istio" / "nowhere.yaml"))):
        upstream_file("istio/nowhere.yaml")


# --- loader --------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_yaml_reports_file_line_column_on_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n   labels: {}\n")
    with pytest.raises(ManifestError) as caught:
        manifests.load_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert re.fullmatch(re.escape(str(path)) + r":5:\d+: malformed YAML: .+", message), message


def test_duplicate_key_is_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n")
    with pytest.raises(ManifestError, match=re.escape(f"{path}:5:3: malformed YAML: duplicate key 'name'")):
        manifests.load_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found: .*absent.yaml"):
        manifests.load_file(tmp_path / "absent.yaml")
    with pytest.raises(ManifestError, match="manifest not found: no/such.yaml"):
        manifests.load("no/such.yaml")


def test_document_without_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n")
    with pytest.raises(ManifestError, match=re.escape(f"{path}:5: document 2 lacks kind")):
        manifests.load_file(path)


def test_document_without_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: v1\nkind: Service\nmetadata: {labels: {}}\n")
    with pytest.raises(ManifestError, match=re.escape(f"{path}:1: document 1 (Service) lacks metadata.name")):
        manifests.load_file(path)


def test_document_not_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n- b\n")
    with pytest.raises(ManifestError, match=re.escape(f"{path}:1: document 1 is a list, not a mapping")):
        manifests.load_file(path)


def test_empty_documents_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n")
    assert manifests.load_file(path) == [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}]


def test_load_by_name_or_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    by_name = manifests.load("clients/curl.yaml")
    assert manifests.load(str(manifests.manifests_dir() / "clients" / "curl.yaml")) == by_name
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: here}\n", "local.yaml")
    assert manifests.load("local.yaml")[0]["metadata"]["name"] == "here"


def test_manifests_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n", "a.yaml")
    (tmp_path / "notes.txt").write_text("not a manifest")
    monkeypatch.setenv(manifests.MANIFESTS_ENV, str(tmp_path))
    assert manifests.manifests_dir() == tmp_path
    assert manifests.all_files() == [tmp_path / "a.yaml"]
    assert manifests.load("a.yaml")[0]["metadata"]["name"] == "a"
