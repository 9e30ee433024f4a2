"""Debug bundles of a kind cluster: what a failed bring-up leaves, and that no file of a bundle
ever holds a credential of the kubeconfig.
"""

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.targets.cluster import ClusterTarget
from conformance.targets.debug_bundle import Istioctl, collect_cluster_debug
from conformance.targets.kube import Kube
from conformance.targets.provision import KindProvisioner
from tests.cluster_builders import HEALTHY, Machine, write_kubeconfig
from tests.fakeapi import FakeApi, items
from tests.fakes import FakeTools

TOKEN = "bundle-token-7f3a9c1e5b2d4680"
PASSWORD = "bundle-password-0d1e2f3a"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fakekey\n-----END PRIVATE KEY-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIDazCCAlOgAwIBAgIUfakecertificate0123\n-----END CERTIFICATE-----\n"
KEY_DATA = base64.b64encode(KEY_PEM.encode()).decode()
CERT_DATA = base64.b64encode(CERT_PEM.encode()).decode()


def credentialed_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [
            {"name": "fake", "user": {"token": TOKEN}},
            {"name": "certs", "user": {"client-key-data": KEY_DATA, "client-certificate-data": CERT_DATA}},
            {"name": "basic", "user": {"username": "admin", "password": PASSWORD}},
        ],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path


def pod(name: str, namespace: str, containers: list[str], init: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0]},
                         "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"initContainers": [{"name": c, "image": "proxyv2"} for c in init],
                     "containers": [{"name": c, "image": "img"} for c in containers]},
            "status": {"phase": "Running"}}


PROXY_STATUS = "NAME                  CLUSTER     CDS      LDS      EDS      RDS\ncurl-b.bookinfo-r1    Kubernetes  SYNCED   SYNCED   SYNCED   SYNCED\n"


def test_failed_bring_up_bundle_holds_the_node_logs_next_to_the_report(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "kind": {"create cluster": {"exit": 1, "stderr": "ERROR: kubeadm init\n"}}})
    settings = m.settings(run_id="r1", report=m.project / "results" / "report.yaml")
    with pytest.raises(ConformanceError, match="kind could not create cluster") as caught:
        ClusterTarget(settings, KindProvisioner(settings)).up()
    bundle = m.project / "results" / "debug" / "bring-up-r1"
    assert str(caught.value).endswith(f"debug bundle: {bundle}")
    # The nodes are gone: the logs exported before deleting them are what the bundle keeps.
    assert (bundle / "kind-logs" / "meshconf-control-plane" / "kubelet.log").read_text() == "fake kubelet log\n"
    assert [argv[1] for argv in m.tools.calls("kind")] == ["version", "get", "create", "export", "delete"]


def test_node_logs_in_a_bundle_are_scrubbed_of_credentials(machine: Machine) -> None:
    m = machine
    settings = m.settings(run_id="r1")
    provisioner = KindProvisioner(settings)
    provisioner.up()
    try:
        credentialed_kubeconfig(m.kubeconfig, m.api.url)
        m.tools.set_scenario({"state": {**m.tools.state(), "kubelet_log": f"Authorization: Bearer {TOKEN}\n"}})
        provisioner.collect_debug(m.project / "bundle")
    finally:
        provisioner.down()
    log = m.project / "bundle" / "kind-logs" / "meshconf-control-plane" / "kubelet.log"
    assert log.read_text() == "Authorization: Bearer REDACTED\n"



def test_debug_bundle_never_holds_credentials(api: FakeApi, tmp_path: Path, fake_tools: FakeTools) -> None:
    kubeconfig = credentialed_kubeconfig(tmp_path / "kubeconfig", api.url)
    fake_tools.set_scenario({"istioctl": {
        "proxy-status": {"stdout": PROXY_STATUS},
        # A dump that quotes a credential (a header value in a route, say) ...
        "proxy-config": {"stdout": json.dumps({"configs": [{"header": f"Bearer {TOKEN}"}]})},
        # ... and a proxy that cannot be reached for one of them.
        "proxy-config route": {"exit": 1, "stderr": "Error: failed to execute command on sidecar: connection refused\n"},
    }})
    api.script("GET", "/api/v1/namespaces/istio-system/pods", items(pod("istiod-1", "istio-system", ["discovery"])))
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods", items(
        pod("reviews-v1-a", "bookinfo-r1", ["reviews"], init=("istio-init", "istio-proxy")),  # native sidecar
        pod("curl-b", "bookinfo-r1", ["curl", "istio-proxy"])))
    api.script("GET", "/api/v1/namespaces/istio-system/events", items(
        {"type": "Normal", "reason": "Started", "message": "ok", "lastTimestamp": "2026-01-01T00:00:00Z",
         "involvedObject": {"kind": "Pod", "name": "istiod-1"}}))
    # A misbehaving proxy that echoes the request's Authorization header into its error.
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/events",
               lambda: (500, f"upstream failed for Authorization: Bearer {TOKEN}"))
    # Logs that quote credentials (an app printing what it was given).
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods/curl-b/log",
               (200, (f"> Authorization: Bearer {TOKEN}\nkey:\n{KEY_PEM}cert:\n{CERT_PEM}password={PASSWORD}\n"
                      f"basic {base64.b64encode(f'admin:{PASSWORD}'.encode()).decode()}\n")))
    api.script("GET", "/api/v1/namespaces/istio-system/pods/istiod-1/log", (200, "info\tready\n"))
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods/reviews-v1-a/log", (200, "started\n"))
    api.script("GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", items(
        {"metadata": {"name": "istio-validator-istio-system"},
         "webhooks": [{"name": "validation.istio.io", "failurePolicy": "Ignore",
                       "clientConfig": {"caBundle": CERT_DATA}}]}))
    applied = manifests.load("kind/ingress-nodeports.yaml")
    bundle = tmp_path / "bundle"

    kube = Kube(kubeconfig, poll_interval=0.02)
    try:
        collect_cluster_debug(kube, bundle, kubeconfig, namespaces=["bookinfo-r1"], applied=applied,
                              istioctl=Istioctl("istioctl", kubeconfig, "fake", 10.0))
        # Before the release was downloaded there is no istioctl: the bundle says so.
        collect_cluster_debug(kube, tmp_path / "early", kubeconfig, istioctl=Istioctl(None, kubeconfig, None, 10.0))
    finally:
        kube.close()
    assert "the Istio release was not downloaded" in (tmp_path / "early" / "istioctl.error").read_text()

    # istioctl: the mesh's sync state, and the config of the client's proxy only (no secrets).
    flags = ["--kubeconfig", str(kubeconfig), "--context", "fake"]
    assert fake_tools.calls("istioctl") == [
        ["istioctl", "proxy-status", *flags],
        *(["istioctl", "proxy-config", kind, "curl-b.bookinfo-r1", "-o", "json", *flags]
          for kind in ("cluster", "listener", "route", "endpoint")),
    ]

    files = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert set(files) == {
        "kubeconfig.redacted.yaml", "webhooks.yaml", "applied.yaml",
        "namespaces/istio-system/events.txt", "namespaces/istio-system/pods.yaml",
        "namespaces/istio-system/logs/istiod-1/discovery.log",
        "namespaces/bookinfo-r1/events.txt.error", "namespaces/bookinfo-r1/pods.yaml",
        *(f"namespaces/bookinfo-r1/logs/{p}.log" for p in (
            "reviews-v1-a/istio-init", "reviews-v1-a/istio-proxy", "reviews-v1-a/reviews",
            "curl-b/curl", "curl-b/istio-proxy")),
        "istioctl/proxy-status.txt",
        *(f"istioctl/bookinfo-r1/curl-b/proxy-config-{kind}.json" for kind in ("cluster", "listener", "endpoint")),
        "istioctl/bookinfo-r1/curl-b/proxy-config-route.json.error",
    }
    assert files["istioctl/proxy-status.txt"].decode() == PROXY_STATUS
    assert b"connection refused" in files["istioctl/bookinfo-r1/curl-b/proxy-config-route.json.error"]
    assert json.loads(files["istioctl/bookinfo-r1/curl-b/proxy-config-cluster.json"]) == \
        {"configs": [{"header": "Bearer REDACTED"}]}
    # What a debugger needs is there ...
    pods = list(yaml.safe_load_all(files["namespaces/bookinfo-r1/pods.yaml"]))
    assert [p["metadata"]["name"] for p in pods] == ["reviews-v1-a", "curl-b"]
    assert all("managedFields" not in p["metadata"] for p in pods)
    assert b"Started pod/istiod-1: ok" in files["namespaces/istio-system/events.txt"]
    assert files["namespaces/istio-system/logs/istiod-1/discovery.log"] == b"info\tready\n"
    proxy_logs = [i for i in api.seen("GET", "/api/v1/namespaces/bookinfo-r1/pods/reviews-v1-a/log")
                  if api.requests[i].query.get("container") == ["istio-proxy"]]
    assert len(proxy_logs) == 1  # the native sidecar's log was asked for by name
    assert b"HTTP 500" in files["namespaces/bookinfo-r1/events.txt.error"]
    assert b"Authorization: Bearer REDACTED" in files["namespaces/bookinfo-r1/logs/curl-b/istio-proxy.log"]
    assert yaml.safe_load(files["applied.yaml"])["metadata"]["name"] == "istio-ingressgateway"
    assert api.url.encode() in files["kubeconfig.redacted.yaml"]

    # ... and no credential, in any form, anywhere.
    forbidden = {TOKEN, PASSWORD, KEY_DATA, CERT_DATA, KEY_PEM, CERT_PEM,
                 base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
                 base64.b64encode(TOKEN.encode()).decode(), base64.b64encode(PASSWORD.encode()).decode(),
                 *(line for pem in (KEY_PEM, CERT_PEM) for line in pem.splitlines() if "-----" not in line)}
    for name, data in files.items():
        for secret in forbidden:
            assert secret.encode() not in data, f"{name} holds {secret[:12]}..."


def test_applied_secrets_reach_the_bundle_with_their_keys_and_without_their_values(tmp_path: Path) -> None:
    key_pem = "-----BEGIN PRIVATE KEY-----\nMIIEdGVzdC1rZXk=\n-----END PRIVATE KEY-----\n"
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "bookinfo-credential", "namespace": "istio-system"},
              "data": {"tls.key": base64.b64encode(key_pem.encode()).decode(), "tls.crt": "Y2VydA=="},
              "stringData": {"note": key_pem}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"a": "kept"}}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", 1)
    collect_cluster_debug(None, tmp_path / "bundle", kubeconfig, applied=[secret, config])
    text = (tmp_path / "bundle" / "applied.yaml").read_text()
    written, plain = yaml.safe_load_all(text)
    assert written["data"] == {"tls.key": "REDACTED", "tls.crt": "REDACTED"}
    assert written["stringData"] == {"note": "REDACTED"}
    assert written["metadata"] == secret["metadata"] and written["type"] == "kubernetes.io/tls"
    assert plain == config  # only a Secret's values are hidden
    assert "PRIVATE KEY" not in text and secret["data"]["tls.key"] not in text
    assert secret["data"]["tls.key"] != "REDACTED"  # the applied object itself is left as it was
