"""conformance.targets.kube against a recorded-response fake of the Kubernetes API.

The fake (tests/fakeapi.py) answers discovery, keeps applied/created objects by URL path,
lets a test script the answers for one path, and records every request it saw.
"""

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.errors import ConformanceError, NotConverged
from conformance.names import RUN_ID_LABEL
from conformance.settings import Timeouts
from conformance.targets import kube as kube_module
from conformance.targets.kube import Kube
from conformance.targets.kube_credentials import redacted_kubeconfig
from tests.cluster_builders import KUBECONFIG_CLIENT_KEY, KUBECONFIG_TOKEN, seed_namespace, write_kubeconfig
from tests.release_builders import ISTIO_CRDS, install_crds, upstream_crd
from tests.fake_http import status
from tests.fakeapi import FakeApi, items

VS_PATH = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io"

VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "reviews"},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]},
}
CRD = upstream_crd("virtualservices.networking.istio.io")


# ---- apply / delete -------------------------------------------------------------


def test_apply_virtual_service_is_server_side_apply(api: FakeApi, kube: Kube) -> None:
    seed_namespace(api, "bookinfo")
    install_crds(api, *ISTIO_CRDS)
    kube.apply([VIRTUAL_SERVICE], "bookinfo")

    [i] = api.seen("PATCH", VS_PATH)
    req = api.requests[i]
    assert req.headers["content-type"] == "application/apply-patch+yaml"
    assert req.query == {"fieldManager": ["meshconf"], "force": ["true"]}
    assert req.headers["authorization"] == f"Bearer {KUBECONFIG_TOKEN}"
    assert req.body["kind"] == "VirtualService" and req.body["spec"]["hosts"] == ["reviews"]


def test_crd_is_applied_and_established_before_its_custom_resources(api: FakeApi, kube: Kube) -> None:
    seed_namespace(api, "bookinfo")
    _ = kube.dynamic  # discovery read before the CRD exists: the kind must resolve after a refresh
    not_yet = {**CRD, "status": {"conditions": [{"type": "Established", "status": "False"}]}}
    established = {**CRD, "status": {"conditions": [{"type": "Established", "status": "True"}]}}
    api.script("GET", CRD_PATH, (404, status(404, "NotFound", "x")), (200, not_yet), (200, established))

    kube.apply([VIRTUAL_SERVICE, CRD], "bookinfo")  # the CR comes first in the batch on purpose

    [crd_patch] = api.seen("PATCH", CRD_PATH)
    crd_gets = api.seen("GET", CRD_PATH)
    [vs_patch] = api.seen("PATCH", VS_PATH)
    assert crd_patch < crd_gets[0] and len(crd_gets) >= 3 and crd_gets[-1] < vs_patch
    assert "namespaces" not in api.requests[crd_patch].path  # cluster-scoped
    assert any(crd_patch < i < vs_patch for i in api.seen("GET", "/apis")), "discovery was not refreshed"


def test_crd_that_never_becomes_established_times_out(api: FakeApi, tmp_path: Path) -> None:
    k = Kube(write_kubeconfig(tmp_path / "kc", api.port),  # type: ignore[attr-defined]
             timeouts=Timeouts(install=0.2), poll_interval=0.02)
    api.script("GET", CRD_PATH, (200, {**CRD, "status": {"conditions": [
        {"type": "Established", "status": "False", "reason": "Installing", "message": "wait"}]}}))
    with pytest.raises(NotConverged, match="Established is False .Installing"):
        k.apply([CRD, VIRTUAL_SERVICE], "bookinfo")
    assert not api.seen("PATCH", VS_PATH)


def test_unknown_kind_is_a_one_line_error(api: FakeApi, kube: Kube) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ConformanceError) as caught:
        kube.apply([widget], "bookinfo")
    message = str(caught.value)
    assert "\n" not in message and "Widget" in message and "example.com/v1" in message
    assert not [r for r in api.requests if r.method == "PATCH"]


def test_delete_ignores_absent_objects_and_unknown_kinds(api: FakeApi, kube: Kube) -> None:
    install_crds(api, *ISTIO_CRDS)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    kube.delete([VIRTUAL_SERVICE, widget], "bookinfo")
    assert api.seen("DELETE", VS_PATH)


def test_api_errors_are_one_line_with_the_status_message(api: FakeApi, kube: Kube) -> None:
    install_crds(api, *ISTIO_CRDS)
    api.script("PATCH", VS_PATH, (400, status(400, "BadRequest",
               'admission webhook "validation.istio.io" denied the request:\nconfiguration is invalid')))
    with pytest.raises(ConformanceError) as caught:
        kube.apply([VIRTUAL_SERVICE], "bookinfo")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("apply VirtualService bookinfo/reviews: HTTP 400")
    assert 'denied the request: configuration is invalid' in message


# ---- namespaces -------------------------------------------------------------------


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": "u-1", "labels": labels},
            "status": {"phase": "Active"}}


@pytest.mark.parametrize("labels", [{}, {RUN_ID_LABEL: "other-run"}])
def test_delete_namespace_refuses_one_this_run_did_not_label(
        api: FakeApi, kube: Kube, labels: dict[str, str]) -> None:
    api.objects["/api/v1/namespaces/prod"] = namespace("prod", labels)
    with pytest.raises(ConformanceError, match=f"refusing to delete namespace prod: it lacks label {RUN_ID_LABEL}=run1"):
        kube.delete_namespace("prod", "run1")
    assert not [r for r in api.requests if r.method == "DELETE"]


def test_delete_namespace_deletes_a_labelled_one_and_waits(api: FakeApi, kube: Kube) -> None:
    path = "/api/v1/namespaces/mc-run1"
    terminating = {**namespace("mc-run1", {RUN_ID_LABEL: "run1"}), "status": {"phase": "Terminating"}}
    api.script("GET", path, (200, namespace("mc-run1", {RUN_ID_LABEL: "run1"})),
               (200, terminating), (404, status(404, "NotFound", "gone")))
    api.script("DELETE", path, (200, terminating))
    kube.delete_namespace("mc-run1", "run1")
    [i] = api.seen("DELETE", path)
    assert api.requests[i].body == {"preconditions": {"uid": "u-1"}}
    assert len(api.seen("GET", path)) == 3


def test_create_namespace_refuses_to_adopt_a_foreign_namespace(api: FakeApi, kube: Kube) -> None:
    api.objects["/api/v1/namespaces/bookinfo"] = namespace("bookinfo", {})
    with pytest.raises(ConformanceError, match="already exists and was not created by run run1"):
        kube.create_namespace("bookinfo", {RUN_ID_LABEL: "run1", "istio-injection": "enabled"})
    kube.create_namespace("fresh", {RUN_ID_LABEL: "run1"})
    [i] = api.seen("POST", "/api/v1/namespaces")[-1:]
    assert api.requests[i].body["metadata"]["labels"] == {RUN_ID_LABEL: "run1"}
    kube.create_namespace("fresh", {RUN_ID_LABEL: "run1"})  # ours already: fine


# ---- waiting ------------------------------------------------------------------------


def deployment(name: str, want: int, updated: int, available: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 2}, "spec": {"replicas": want},
            "status": {"observedGeneration": 2, "replicas": want, "updatedReplicas": updated,
                       "availableReplicas": available}}


def test_wait_rollout_times_out_naming_the_deployment(api: FakeApi, kube: Kube) -> None:
    api.script("GET", "/apis/apps/v1/namespaces/bookinfo/deployments",
               items(deployment("ratings-v1", 1, 1, 1), deployment("reviews-v2", 2, 2, 1)))
    with pytest.raises(NotConverged) as caught:
        kube.wait_rollout("bookinfo")
    message = str(caught.value)
    assert "reviews-v2 (2 updated, 1 available" in message and "ratings-v1" not in message
    assert "\n" not in message


def test_wait_rollout_passes_once_ready(api: FakeApi, kube: Kube) -> None:
    path = "/apis/apps/v1/namespaces/bookinfo/deployments"
    api.script("GET", path, items(deployment("reviews-v2", 2, 1, 1)), items(deployment("reviews-v2", 2, 2, 2)))
    kube.wait_rollout("bookinfo")
    assert len(api.seen("GET", path)) == 2


# ---- observation --------------------------------------------------------------------


def test_pods_maps_a_native_sidecar(api: FakeApi, kube: Kube) -> None:
    pod = {
        "metadata": {"name": "reviews-v2-abc", "namespace": "bookinfo", "labels": {"app": "reviews"},
                     "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"serviceAccountName": "bookinfo-reviews",
                 "initContainers": [{"name": "istio-init", "image": "proxyv2"},
                                    {"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always"}],
                 "containers": [{"name": "reviews", "image": "reviews"}]},
        "status": {"podIP": "10.244.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    api.script("GET", "/api/v1/namespaces/bookinfo/pods", items(pod))
    [view] = kube.pods("bookinfo")
    assert view.containers == ("reviews",)
    assert view.init_containers == ("istio-init", "istio-proxy")
    assert (view.ip, view.ready, view.service_account) == ("10.244.0.7", True, "bookinfo-reviews")
    assert view.labels == {"app": "reviews"}


def test_webhooks_summary(api: FakeApi, kube: Kube) -> None:
    hook = {"name": "namespace.sidecar-injector.istio.io", "failurePolicy": "Fail",
            "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
            "rules": [{"operations": ["CREATE"], "resources": ["pods"]}], "clientConfig": {"caBundle": "x"}}
    api.script("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
               items({"metadata": {"name": "istio-sidecar-injector"}, "webhooks": [hook]}))
    summary = kube.webhooks()
    assert summary["validating"] == {}
    [entry] = summary["mutating"]["istio-sidecar-injector"]
    assert entry == {"name": "namespace.sidecar-injector.istio.io", "failurePolicy": "Fail",
                     "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                     "objectSelector": {}, "rules": [{"operations": ["CREATE"], "resources": ["pods"]}]}


def test_events_oldest_first_and_logs_raw(api: FakeApi, kube: Kube) -> None:
    api.script("GET", "/api/v1/namespaces/bookinfo/events", items(
        {"type": "Warning", "reason": "BackOff", "message": "Back-off\nrestarting", "count": 3,
         "lastTimestamp": "2025-01-01T00:00:09Z", "involvedObject": {"kind": "Pod", "name": "a"}},
        {"type": "Normal", "reason": "Scheduled", "message": "ok",
         "lastTimestamp": "2025-01-01T00:00:01Z", "involvedObject": {"kind": "Pod", "name": "a"}},
    ))
    assert kube.events("bookinfo") == [
        "2025-01-01T00:00:01Z Normal Scheduled pod/a: ok",
        "2025-01-01T00:00:09Z Warning BackOff pod/a: Back-off restarting (x3)",
    ]
    log_path = "/api/v1/namespaces/bookinfo/pods/a/log"
    api.script("GET", log_path, (200, '{"level": "info"}\n'))
    assert kube.logs("a", "bookinfo", container="istio-proxy", tail=20) == '{"level": "info"}\n'
    [i] = api.seen("GET", log_path)
    assert api.requests[i].query == {"container": ["istio-proxy"], "tailLines": ["20"]}


# ---- credentials ----------------------------------------------------------------------


def test_token_never_appears_in_errors_or_the_redacted_kubeconfig(api: FakeApi, kube: Kube, tmp_path: Path) -> None:
    # A misbehaving proxy that echoes the request headers into its error body.
    api.script("GET", "/api/v1/namespaces/bookinfo/pods",
               lambda: (500, f"upstream failed for Authorization: Bearer {KUBECONFIG_TOKEN}"))
    with pytest.raises(ConformanceError) as caught:
        kube.pods("bookinfo")
    assert KUBECONFIG_TOKEN not in str(caught.value) and "REDACTED" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = Kube(write_kubeconfig(tmp_path / "dead", dead_port), poll_interval=0.02)
    with pytest.raises(ConformanceError) as unreachable:
        dead.pods("x")
    dead.close()
    assert "cannot reach the API server" in str(unreachable.value) and KUBECONFIG_TOKEN not in str(unreachable.value)

    text = redacted_kubeconfig(kube.kubeconfig)
    assert KUBECONFIG_TOKEN not in text and KUBECONFIG_CLIENT_KEY not in text and "Q0VSVA==" not in text
    users = {u["name"]: u["user"] for u in yaml.safe_load(text)["users"]}
    assert users == {"fake": {"token": "REDACTED"},
                     "certs": {"client-key-data": "REDACTED", "client-certificate-data": "REDACTED"}}
    assert f"http://127.0.0.1:{api.port}" in text  # type: ignore[attr-defined]


# ---- exec and port-forward (websocket transport replaced) ------------------------------


class FakeExecStream:
    """Stands in for ws_client.WSClient in binary mode."""

    def __init__(self, frames: dict[int, bytes], finishes: bool = True) -> None:
        self.frames = frames
        self.finishes = finishes
        self.open = True
        self.closed = False

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        if self.finishes:
            self.open = False
        else:
            threading.Event().wait(min(timeout, 0.05))

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        return self.frames.pop(channel, b"")

    def close(self) -> None:
        self.closed = True
        self.open = False


def test_exec_uses_a_dedicated_client_per_call_and_reads_the_exit_code(
        kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[Any] = []
    answers = iter([
        FakeExecStream({1: b"hello \xc3", 2: b"", 3: b'{"metadata":{},"status":"Success"}'}),
        FakeExecStream({1: b"", 2: b"boom", 3: json.dumps({
            "status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with exit code 7",
            "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}).encode()}),
    ])

    def fake_stream(api_method: Any, *args: Any, **kwargs: Any) -> FakeExecStream:
        clients.append(api_method.__self__.api_client)
        assert kwargs["_preload_content"] is False and kwargs["command"] == ["curl", "-s", "x"]
        return next(answers)

    monkeypatch.setattr(kube_module, "stream", fake_stream)
    first = kube.exec("curl-1", "bookinfo", "curl", ["curl", "-s", "x"], timeout=5)
    second = kube.exec("curl-1", "bookinfo", "curl", ["curl", "-s", "x"], timeout=5)
    assert (first.stdout, first.exit_code) == ("hello \N{REPLACEMENT CHARACTER}", 0)
    assert (second.stderr, second.exit_code) == ("boom", 7)
    assert len({id(c) for c in clients}) == 2 and kube.api not in clients


def test_exec_timeout_closes_the_stream_and_names_the_command(
        kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    hung = FakeExecStream({}, finishes=False)
    monkeypatch.setattr(kube_module, "stream", lambda *a, **k: hung)
    with pytest.raises(NotConverged, match=r"exec `sleep 60` in bookinfo/curl-1 container curl: did not finish within 0.2s"):
        kube.exec("curl-1", "bookinfo", "curl", ["sleep", "60"], timeout=0.2)
    assert hung.closed


def test_exec_that_cannot_start_is_a_conformance_error(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = FakeExecStream({3: json.dumps({"status": "Failure", "reason": "InternalError",
                                            "message": 'container "nope" not found'}).encode()})
    monkeypatch.setattr(kube_module, "stream", lambda *a, **k: failed)
    with pytest.raises(ConformanceError, match='container "nope" not found'):
        kube.exec("curl-1", "bookinfo", "nope", ["true"], timeout=1)


class FakeForward:
    """Stands in for ws_client.PortForward: the pod side is an echo server on a socketpair."""

    def __init__(self) -> None:
        self.app, pod = socket.socketpair()
        self.closed = False
        threading.Thread(target=self._echo, args=(pod,), daemon=True).start()

    @staticmethod
    def _echo(pod: socket.socket) -> None:
        with pod:
            while data := pod.recv(1024):
                pod.sendall(b"echo:" + data)

    def socket(self, port_number: int) -> socket.socket:
        assert port_number == 9080
        return self.app

    def error(self, port_number: int) -> str | None:
        return None

    def close(self) -> None:
        self.closed = True
        self.app.close()


def test_port_forward_bridges_each_connection_through_its_own_forward(
        api: FakeApi, kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    api.objects["/api/v1/namespaces/bookinfo/pods/reviews-1"] = {"metadata": {"name": "reviews-1"}}
    forwards: list[FakeForward] = []
    clients: list[Any] = []

    def fake_portforward(api_method: Any, pod: str, ns: str, ports: str) -> FakeForward:
        assert (pod, ns, ports) == ("reviews-1", "bookinfo", "9080")
        clients.append(api_method.__self__.api_client)
        forwards.append(FakeForward())
        return forwards[-1]

    monkeypatch.setattr(kube_module, "portforward", fake_portforward)
    with kube.port_forward("reviews-1", "bookinfo", 9080) as (host, port):
        assert host == "127.0.0.1"
        for word in (b"a", b"b"):
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(word)
                assert conn.recv(100) == b"echo:" + word
    assert len(forwards) == 2 and all(f.closed for f in forwards)
    assert len({id(c) for c in clients}) == 2 and kube.api not in clients
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1)


def test_port_forward_to_a_missing_pod(kube: Kube) -> None:
    with (pytest.raises(ConformanceError, match="pod bookinfo/ghost does not exist"),
          kube.port_forward("ghost", "bookinfo", 80)):
        pass
