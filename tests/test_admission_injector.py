"""The local sidecar injector called directly over HTTPS, as the API server calls istiod:
AdmissionReview in, Istio's JSONPatch out."""

import base64
import json
import ssl
from typing import Any

import httpx
import jsonpatch
import pytest

from conformance.names import (DEFAULT_REVISION, PROMETHEUS_PATH, PROMETHEUS_PORT, PROMETHEUS_SCRAPE, PROXY_CONTAINER,
                               SIDECAR_STATUS_ANNOTATION, TLS_MODE_LABEL)
from conformance.targets.local.admission.injector import (
    INIT_CONTAINER,
    webhook_dns_name,
    Injector,
    injected,
)
from conformance.targets.local.xds.secrets import MeshCA
from tests.admission_builders import names, pod_doc, review_of

WEBHOOK_DNS = webhook_dns_name(DEFAULT_REVISION)  # the default istiod's webhook Service


# --- (2) the injector, called directly over HTTPS --------------------------------------------


def _post(url: str, body: Any, root_pem: str, server_name: str = WEBHOOK_DNS,
          content_type: str = "application/json") -> httpx.Response:
    context = ssl.create_default_context(cadata=root_pem)
    with httpx.Client(verify=context, timeout=5) as client:
        return client.post(url, content=json.dumps(body), headers={"Content-Type": content_type},
                           extensions={"sni_hostname": server_name})


def _patch_of(reply: httpx.Response, uid: str = "0b1a-uid") -> list[dict[str, Any]] | None:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = body["response"]
    assert response["uid"] == uid and response["allowed"] is True
    if "patch" not in response:
        assert "patchType" not in response
        return None
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


def test_injector_patches_a_pod_it_injects(injector: Injector, ca: MeshCA) -> None:
    pod = pod_doc()
    patch = _patch_of(_post(injector.url, review_of(pod), ca.root_pem))
    assert patch is not None
    ops = {(op["op"], op["path"]): op.get("value") for op in patch}
    assert ops[("add", "/spec/initContainers")][0]["name"] == INIT_CONTAINER
    assert ops[("add", "/spec/containers/1")]["name"] == PROXY_CONTAINER
    assert ops[("add", "/spec/containers/1")]["args"][:2] == ["proxy", "sidecar"]
    assert ops[("add", "/metadata/labels/security.istio.io~1tlsMode")] == "istio"
    status = json.loads(ops[("add", "/metadata/annotations")][SIDECAR_STATUS_ANNOTATION])
    assert status == {"initContainers": [INIT_CONTAINER], "containers": [PROXY_CONTAINER], "volumes": [],
                      "imagePullSecrets": None, "revision": "default"}
    assert len(ops) == 4, sorted(ops)
    # The patch applies to the pod as sent, and leaves the app's container first.
    result = jsonpatch.apply_patch(pod, patch)
    assert names(result["spec"]["containers"]) == ["httpbin", PROXY_CONTAINER]
    assert names(result["spec"]["initContainers"]) == [INIT_CONTAINER]
    assert result["metadata"]["labels"] == {"app": "httpbin", TLS_MODE_LABEL: "istio"}


@pytest.mark.parametrize(("pod", "namespace"), [
    (pod_doc(annotations={"sidecar.istio.io/inject": "false"}), "apps"),
    (pod_doc(labels={"app": "httpbin", "sidecar.istio.io/inject": "false"}), "apps"),
    (pod_doc(hostNetwork=True), "apps"),
    (pod_doc(), "kube-system"),
])
def test_injector_leaves_pods_istiod_refuses(injector: Injector, ca: MeshCA, pod: dict[str, Any], namespace: str) -> None:
    assert _patch_of(_post(injector.url, review_of(pod, namespace), ca.root_pem)) is None


def test_injector_with_native_sidecars(ca: MeshCA) -> None:
    native = Injector(ca, "127.0.0.1", native_sidecars=True, revision="canary")
    native.start()
    try:
        pod = pod_doc(initContainers=[{"name": "setup", "image": "busybox"}])
        # A revision's webhook is its own Service, istiod-canary, and its certificate names that.
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
            _post(native.url, review_of(pod), ca.root_pem)
        patch = _patch_of(_post(native.url, review_of(pod), ca.root_pem, server_name=webhook_dns_name("canary")))
    finally:
        native.stop()
    assert patch is not None
    result = jsonpatch.apply_patch(pod, patch)
    assert names(result["spec"]["initContainers"]) == [INIT_CONTAINER, PROXY_CONTAINER, "setup"]
    assert result["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    assert names(result["spec"]["containers"]) == ["httpbin"]
    status = json.loads(result["metadata"]["annotations"][SIDECAR_STATUS_ANNOTATION])
    assert (status["initContainers"], status["containers"], status["revision"]) == (
        [INIT_CONTAINER, PROXY_CONTAINER], None, "canary")
    assert result["metadata"]["annotations"]["istio.io/rev"] == "canary"
    # pilot-agent learns its istiod from the injected ProxyConfig: the canary's, by name.
    env = {e["name"]: e["value"] for e in result["spec"]["initContainers"][1]["env"]}
    assert json.loads(env["PROXY_CONFIG"]) == {"discoveryAddress": "istiod-canary.istio-system.svc:15012"}


def test_default_revision_leaves_the_default_discovery_address_out() -> None:
    pod = injected(pod_doc())
    assert pod["metadata"]["annotations"]["istio.io/rev"] == "default"
    proxy = next(c for c in pod["spec"]["containers"] if c["name"] == PROXY_CONTAINER)
    assert proxy["env"] == [{"name": "PROXY_CONFIG", "value": "{}"}]


def test_prometheus_is_pointed_at_the_agent_unless_the_pod_opts_out() -> None:
    # pkg/kube/inject/webhook.go applyPrometheusMerge: the pod's own prometheus.io/port is replaced.
    merged = injected(pod_doc(annotations={PROMETHEUS_PORT: "8080"}))["metadata"]["annotations"]
    assert (merged[PROMETHEUS_SCRAPE], merged[PROMETHEUS_PORT], merged[PROMETHEUS_PATH]) == \
        ("true", "15020", "/stats/prometheus")
    opted_out = injected(pod_doc(annotations={PROMETHEUS_SCRAPE: "false"}))["metadata"]["annotations"]
    assert opted_out[PROMETHEUS_SCRAPE] == "false" and PROMETHEUS_PORT not in opted_out


def test_native_sidecar_annotation_overrides_the_injector() -> None:
    classic = injected(pod_doc(annotations={"sidecar.istio.io/nativeSidecar": "false"}), native_sidecars=True)
    assert names(classic["spec"]["containers"]) == ["httpbin", PROXY_CONTAINER]
    native = injected(pod_doc(annotations={"sidecar.istio.io/nativeSidecar": "true"}), native_sidecars=False)
    assert names(native["spec"]["initContainers"]) == [INIT_CONTAINER, PROXY_CONTAINER]
    # Classic: istio-init runs after the app's own init containers.
    late = injected(pod_doc(initContainers=[{"name": "setup", "image": "busybox"}]))
    assert names(late["spec"]["initContainers"]) == ["setup", INIT_CONTAINER]


def test_injector_certificate_names_istiod_service(injector: Injector, ca: MeshCA) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _post(injector.url, review_of(pod_doc()), ca.root_pem, server_name="other.istio-system.svc")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _post(injector.url, review_of(pod_doc()), MeshCA().root_pem)
    # The injector still serves after refused handshakes.
    assert _patch_of(_post(injector.url, review_of(pod_doc()), ca.root_pem)) is not None


def test_injector_refuses_other_paths_and_content(injector: Injector, ca: MeshCA) -> None:
    host, port = injector.address
    assert _post(f"https://{host}:{port}/validate", review_of(pod_doc()), ca.root_pem).status_code == 404
    assert _post(injector.url, review_of(pod_doc()), ca.root_pem, content_type="text/plain").status_code == 415
    assert _post(injector.url, {"request": None}, ca.root_pem).status_code == 400


