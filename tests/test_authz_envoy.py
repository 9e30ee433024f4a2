"""AuthorizationPolicy in the local mesh: the implemented subset (admitted field by field, the rest
refused by name), the RBAC filters as a real Envoy accepts them, and enforced by a real sidecar and by
the whole local mesh (istio/istio tag 1.28.0; the filters by value are tests/test_translator_authz.py)."""

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UnsupportedResource
from conformance.manifests import manifests_dir
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import Pod, Service, ServicePort, app_port
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.authorization import RBAC_FILTER
from conformance.targets.local.translator.resources import HCM_FILTER
from conformance.verdicts.security import RBAC_DENIED, XFCC
from tests.builders import (
    GATEWAY_NS,
    NS,
    RATINGS,
    WHOLE_MESH,
    eventually,
    http_get,
    make_pod,
    manifest_docs,
    running_local_mesh,
)
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    envoy_validate,
    injected_pod,
    plaintext_request,
    static_bootstrap,
    through,
)
from tests.security_builders import DENY_ALL, IGNORED, filters_of, policy, secured


# ---------------------------------------------------------------------------------------------
# The implemented subset: admitted field by field, the rest refused by name


EVERY_FIELD = policy("every-field", {
    "selector": {"matchLabels": {"app": "productpage"}},
    "action": "ALLOW",
    "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/tools/sa/curl"], "notPrincipals": ["*/sa/intruder"],
                             "namespaces": ["tools"], "notNamespaces": ["kube-*"]}}],
        "to": [{"operation": {"methods": ["GET"], "notMethods": ["DELETE"], "paths": ["/api/*"], "notPaths": ["*.php"],
                              "ports": ["9080"], "notPorts": ["15000"]}}],
        "when": [{"key": "request.headers[x-user]", "values": ["jason"]}, {"key": "source.principal", "values": ["*"]},
                 {"key": "source.namespace", "notValues": ["other"]}, {"key": "destination.port", "values": ["9080"]}],
    }],
})


def test_every_implemented_field_and_the_security_manifests_are_admitted() -> None:
    check_supported(EVERY_FIELD)
    files = sorted(path.relative_to(manifests_dir()) for path in (manifests_dir() / "security").glob("*.yaml"))
    docs = [d for name in files for d in manifest_docs(str(name), "AuthorizationPolicy")]
    assert len(docs) >= 4
    for doc in docs:
        check_supported({**doc, "metadata": {**doc["metadata"], "namespace": NS}})


def _with(path: str, value: Any) -> dict:
    """EVERY_FIELD with `value` at the dotted `path` (a number indexes a list)."""
    out = copy.deepcopy(EVERY_FIELD)
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(("path", "value", "refusal"), [
    ("spec.action", "AUDIT", "field spec.action AUDIT is not implemented by the local mesh (only ALLOW, DENY)"),
    ("spec.action", "CUSTOM", "field spec.action CUSTOM is not implemented"),
    ("spec.provider", {"name": "ext"}, "field spec.provider is not implemented"),
    ("spec.targetRefs", [{"kind": "Gateway", "name": "gw"}], "field spec.targetRefs is not implemented"),
    ("spec.rules.0.from.0.source.requestPrincipals", ["*"], "field spec.rules[0].from[0].source.requestPrincipals is"),
    ("spec.rules.0.from.0.source.serviceAccounts", ["curl"], "field spec.rules[0].from[0].source.serviceAccounts is"),
    ("spec.rules.0.from.0.source.ipBlocks", ["10.0.0.0/8"], "field spec.rules[0].from[0].source.ipBlocks is"),
    ("spec.rules.0.from.0.source.notRemoteIpBlocks", ["1.2.3.4"], "source.notRemoteIpBlocks is not implemented"),
    ("spec.rules.0.to.0.operation.hosts", ["a.com"], "field spec.rules[0].to[0].operation.hosts is not implemented"),
    ("spec.rules.0.to.0.operation.paths", ["/a/{*}"], "field spec.rules[0].to[0].operation.paths: path templates"),
    ("spec.rules.0.to.0.operation.notPaths", ["/{**}/x"], "operation.notPaths: path templates ({*}, {**}) are not"),
    ("spec.rules.0.when.1.key", "request.auth.claims[iss]",
     "field spec.rules[0].when[1].key 'request.auth.claims[iss]' is not implemented by the local mesh"),
    ("spec.rules.0.when.0.key", "source.ip", "when[0].key 'source.ip' is not implemented"),
    ("spec.rules.0.when.0.key", "request.headers[]", "when[0].key 'request.headers[]' is not implemented"),
    ("metadata.annotations", {"istio.io/dry-run": "true"}, "annotation istio.io/dry-run is not implemented"),
    ("apiVersion", "networking.istio.io/v1", "apiVersion 'networking.istio.io/v1' is not implemented"),
])
def test_what_is_not_implemented_is_refused_by_name(path: str, value: Any, refusal: str) -> None:
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(_with(path, value))
    assert refusal in str(refused.value)
    assert "AuthorizationPolicy bookinfo/every-field" in str(refused.value)


def test_dry_run_false_is_an_enforced_policy() -> None:
    check_supported(_with("metadata.annotations", {"istio.io/dry-run": "false"}))


def http_connection_managers(listener: dict) -> list[dict]:
    """The HTTP connection manager of each of a listener's filter chains."""
    managers = [f["typed_config"] for chain in listener["filter_chains"] for f in chain["filters"]
                if f["name"] == HCM_FILTER]
    assert managers, listener["name"]
    return managers


# ---------------------------------------------------------------------------------------------
# Real Envoy: the filters sit first in each inbound HTTP filter chain, and Envoy accepts them


def test_envoy_accepts_the_filters_first_in_every_inbound_chain(tmp_path: Path) -> None:
    """Istio places the RBAC filters after authentication and before the fault filter and the router
    (istio/istio pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager); never on
    the outbound listener (plugin/authz/authorization.go BuildHTTP)."""
    docs = [EVERY_FIELD, policy("deny", {"action": "DENY", "rules": [
        {"to": [{"operation": {"paths": ["*"], "notMethods": ["*"]}}], "when": [{"key": "request.headers[a]",
                                                                                 "notValues": ["*x", "y*"]}]}]}),
            policy("nothing", {}, namespace=GATEWAY_NS), policy("all", {"rules": [{}]})]
    pod = make_pod("productpage-v1", "127.0.1.1", {"app": "productpage"}, ports=(9080, 9443))
    state = secured(*docs, pods=(pod, RATINGS))
    config = translate(pod, state)
    expected = filters_of(pod, state)
    assert [f["typed_config"]["rules"]["action"] for f in expected] == ["DENY", "ALLOW"]
    inbound = [item for item in config.listeners if item["traffic_direction"] == "INBOUND"]
    assert len(inbound) == 2
    for listener in inbound:
        for hcm in http_connection_managers(listener):  # every chain: plaintext and mutual TLS
            assert hcm["http_filters"][:2] == expected
    outbound = [item for item in config.listeners if item["traffic_direction"] == "OUTBOUND"]
    assert outbound and all(f["name"] != RBAC_FILTER for item in outbound
                            for hcm in http_connection_managers(item) for f in hcm["http_filters"])
    envoy_validate(static_bootstrap(pod, config), tmp_path)


# ---------------------------------------------------------------------------------------------
# Live: a request to a real sidecar's inbound listener, the app behind it


PORT = 9080


@contextmanager
def serve(run_dir: Path, server: Pod, *docs: Mapping[str, Any], mutants: frozenset[str] = frozenset()) -> Iterator[None]:
    """`server`'s sidecar running with `docs` applied, for the block (the app behind it, on
    server.ip:app_port, is the caller's)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with Proxies(run_dir) as proxies:
        proxies.start(server, secured(*docs, pods=(server,), mutants=mutants))
        yield


def server_pod(ip: str, labels: Mapping[str, str] | None = None) -> Pod:
    return make_pod("httpbin", ip, labels or {"app": "httpbin"}, ports=(PORT,))


DENY_STATUS = policy("httpbin-deny-status", {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "DENY",
                                             "rules": [{"to": [{"operation": {"paths": ["/status/*"]}}]}]})


@pytest.mark.parametrize("mutants", [frozenset(), IGNORED], ids=["istio", "authz-ignored"])
def test_live_deny_by_path(tmp_path: Path, loopback_ips: list[str], mutants: frozenset[str]) -> None:
    """Istio: 403 `RBAC: access denied` for the path the DENY policy names, and the app never sees it;
    200 from the app elsewhere. With authz-ignored, the denied path reaches the app."""
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, serve(tmp_path, server_pod(ip), DENY_STATUS,
                                                                              mutants=mutants):
        assert plaintext_request(ip, PORT, "GET", "/headers") == (200, "from-app")
        denied = plaintext_request(ip, PORT, "GET", "/status/418")
        if mutants:
            assert denied == (200, "from-app")
            assert len(app.seen) == 2
        else:
            assert denied == (403, RBAC_DENIED)
            assert len(app.seen) == 1  # only /headers got through


def test_live_allow_nothing_denies_everything(tmp_path: Path, loopback_ips: list[str]) -> None:
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, \
            serve(tmp_path, server_pod(ip), policy("allow-nothing", {})):
        for method_name, path in (("GET", "/"), ("GET", "/headers"), ("POST", "/post"), ("DELETE", "/x")):
            assert plaintext_request(ip, PORT, method_name, path) == (403, RBAC_DENIED), (method_name, path)
        assert app.seen == []


def test_live_namespace_wide_deny_all(tmp_path: Path, loopback_ips: list[str]) -> None:
    """No selector: every workload of the namespace, this one (whatever its labels) included."""
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, \
            serve(tmp_path, server_pod(ip, {"app": "anything"}), policy("deny-all", DENY_ALL)):
        for path in ("/", "/headers", "/status/200"):
            assert plaintext_request(ip, PORT, "GET", path) == (403, RBAC_DENIED), path
        assert app.seen == []


def test_live_allow_by_method(tmp_path: Path, loopback_ips: list[str]) -> None:
    """An ALLOW policy applies: what none of its rules matches is denied (here, every method but GET)."""
    ip = loopback_ips[0]
    allow_get = policy("allow-get", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, serve(tmp_path, server_pod(ip), allow_get):
        assert plaintext_request(ip, PORT, "GET", "/anything") == (200, "from-app")
        for method_name in ("POST", "PUT", "DELETE"):
            assert plaintext_request(ip, PORT, method_name, "/anything") == (403, RBAC_DENIED), method_name
        assert len(app.seen) == 1


def test_live_a_principal_rule_denies_a_plaintext_client(tmp_path: Path, loopback_ips: list[str]) -> None:
    """A client without a certificate has no principal: an ALLOW naming one denies it, a DENY naming
    one does not apply to it (the peer identity comes only from mutual TLS)."""
    ip = loopback_ips[0]
    only_curl = policy("only-curl", {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/tools/sa/curl"]}}]}]})
    deny_curl = policy("deny-curl", {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["*"]}}]}]})
    with RecordingUpstream(ip, app_port(PORT), body="from-app"):
        with serve(tmp_path / "allow", server_pod(ip), only_curl):
            assert plaintext_request(ip, PORT, "GET", "/") == (403, RBAC_DENIED)
        with serve(tmp_path / "deny", server_pod(ip), deny_curl):
            assert plaintext_request(ip, PORT, "GET", "/") == (200, "from-app")


def test_live_only_the_allowed_service_accounts_sidecar_gets_through(tmp_path: Path, loopback_ips: list[str]) -> None:
    """Mutual TLS between sidecars (auto mTLS to an injected server, PERMISSIVE by default) gives the
    server's RBAC filter the client's certificate: the curl service account's sidecar gets 200, the
    intruder's sidecar and a plaintext client 403 (istio.io docs: tasks/security/authorization/authz-http)."""
    server_ip, curl_ip, intruder_ip = loopback_ips
    server = injected_pod("httpbin", server_ip, (PORT,))
    curl, intruder = injected_pod("curl", curl_ip, ()), injected_pod("intruder", intruder_ip, ())
    assert (curl.service_account, intruder.service_account) == ("curl", "intruder")
    service = Service("httpbin", NS, (ServicePort("http", 8000, PORT),), {"app": "httpbin"})
    only_curl = policy("httpbin-allow-curl", {"selector": {"matchLabels": {"app": "httpbin"}}, "rules": [
        {"from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/curl"]}}]}]})
    state = secured(only_curl, pods=(server, curl, intruder), services=(service,))
    with RecordingUpstream(server_ip, app_port(PORT), body="from-app") as app, Proxies(tmp_path) as proxies:
        for pod in (server, curl, intruder):
            proxies.start(pod, state)
        allowed = through(curl_ip, "http://httpbin:8000/headers")
        assert (allowed.status, allowed.body) == (200, "from-app")
        denied = through(intruder_ip, "http://httpbin:8000/headers")
        assert (denied.status, denied.body) == (403, RBAC_DENIED)
        assert plaintext_request(server_ip, PORT, "GET", "/headers") == (403, RBAC_DENIED)
        assert len(app.seen) == 1
        assert app.seen[0][XFCC.lower()].endswith(f"URI=spiffe://cluster.local/ns/{NS}/sa/curl")


@WHOLE_MESH
def test_local_mesh_admits_and_enforces_the_security_manifests(tmp_path: Path) -> None:
    """The whole path on a LocalMesh: the policies are admitted (CRD schema, Istio's webhook, the
    subset), translated and pushed; the httpbin sidecar enforces each one as soon as it is applied."""
    namespace = "secured"
    with running_local_mesh(tmp_path) as local:
        local.apply([namespace_doc(namespace, {"istio-injection": "enabled"})], namespace)
        local.apply(manifest_docs("clients/httpbin.yaml"), namespace)
        local.wait_ready(namespace, 30, 0.05)
        (pod,) = local.running()
        ip, port = pod.model.ip, pod.model.container_ports[0]

        def get(path: str) -> tuple[int, str]:
            status, _, body = http_get(ip, port, path)
            return status, body

        assert get("/status/418")[0] == 418
        local.apply(manifest_docs("security/authz-deny-status.yaml"), namespace)
        eventually(lambda: get("/status/418") == (403, RBAC_DENIED), "the DENY policy")
        assert get("/headers")[0] == 200
        local.apply(manifest_docs("security/authz-allow-nothing.yaml"), namespace)
        eventually(lambda: get("/headers") == (403, RBAC_DENIED), "the allow-nothing policy")
        local.delete(manifest_docs("security/authz-allow-nothing.yaml"), namespace)
        eventually(lambda: get("/headers")[0] == 200, "allow-nothing's removal")
