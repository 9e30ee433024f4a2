"""Make-before-break: which documents go first, what names a subset's cluster, and the cluster target
applying and deleting a subset with its route against the fake API server (tests/fakeapi.py), the
sidecars' clusters and routes as pilot-agent prints them (tests/cluster_builders.py PodExec)."""

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conformance import manifests
from conformance.errors import ConformanceError, NotConverged
from conformance.names import ISTIO_NAMESPACE, PROXY_CONTAINER, SIDECAR_STATUS_ANNOTATION
from conformance.targets import kube as kube_module
from conformance.targets import make_before_break as mbb
from conformance.targets.base import PodView
from conformance.targets.cluster import ClusterTarget
from conformance.targets.local.admission.control import AdmissionControl
from tests.cluster_builders import PodExec, injected_namespace, object_path, running_cluster
from tests.fakeapi import FakeApi

NS = "bookinfo-r1"
CHANGE = ("istio/traffic/virtual-service-reviews-v3.yaml", "zero-downtime/dr-reviews-v1-v3.yaml")  # route first
V3 = f"outbound|9080|v3|reviews.{NS}.svc.cluster.local"
V1 = f"outbound|9080|v1|reviews.{NS}.svc.cluster.local"
CLUSTERS = ("pilot-agent", "request", "GET", mbb.CLUSTERS_PATH)
ROUTES = ("pilot-agent", "request", "GET", mbb.ROUTES_PATH)


def change() -> list[dict[str, Any]]:
    return [d for name in CHANGE for d in manifests.load(name)]


def test_destination_rules_go_before_the_routes_and_after_them_when_deleted() -> None:
    docs = change()
    first, routes = mbb.apply_phases(docs)
    assert [d["kind"] for d in first] == ["DestinationRule"] and [d["kind"] for d in routes] == ["VirtualService"]
    assert mbb.delete_phases(docs) == (routes, first)
    assert mbb.apply_phases(first) == (first, [])


def test_a_subset_cluster_is_named_as_istio_names_it() -> None:
    assert mbb.subset_clusters(change(), NS) == [f"|{subset}|reviews.{NS}.svc.cluster.local" for subset in ("v1", "v3")]
    # A host with a dot is taken as written (Istio's ResolveShortnameToFQDN), even a partial one.
    assert mbb.fqdn("reviews.other", NS) == "reviews.other" and mbb.fqdn("*", NS) == "*"


def active_clusters(*names: str) -> str:
    """Envoy's config_dump?resource=dynamic_active_clusters with these clusters."""
    return json.dumps({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                                    "cluster": {"name": name}} for name in names]})


def test_only_an_active_cluster_counts_as_in_place() -> None:
    def wait(text: str, present: bool) -> None:
        mbb.wait_for_proxies(lambda pod: text, lambda: ["reviews-v1"], mbb.CLUSTERS_PATH,
                             mbb.subset_clusters(change(), NS), present, 0.05, 0.01, "subsets")

    wait(active_clusters(V1, V3), present=True)
    with pytest.raises(NotConverged, match=f"not yet in {re.escape(mbb.CLUSTERS_PATH)}: reviews-v1"):
        wait(active_clusters(V1), present=True)  # v3 still warming: not listed
    wait(active_clusters(), present=False)
    with pytest.raises(NotConverged):
        wait(f'{{"cluster": "{V3}"}}', present=False)  # a route still names v3


class Recorder(PodExec):
    """PodExec that notes, at each pilot-agent read, which of the change's objects the API holds."""

    def __init__(self, api: FakeApi, paths: dict[str, str]) -> None:
        super().__init__(api)
        self.paths = paths
        self.held: list[tuple[str, frozenset[str]]] = []

    def __call__(self, method: Any, name: str, namespace: str, **kwargs: Any) -> Any:
        if kwargs["command"][0] == "pilot-agent":
            with self.api.lock:
                held = frozenset(kind for kind, path in self.paths.items() if path in self.api.objects)
            self.held.append((kwargs["command"][-1], held))
        return super().__call__(method, name, namespace, **kwargs)


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    with running_cluster(api, tmp_path, ISTIO_NAMESPACE) as target:
        yield target


@contextmanager
def sidecars(cluster: ClusterTarget, api: FakeApi, admission_control: AdmissionControl) -> Iterator[str]:
    """NS with curl and httpbin injected; istiod's injector and validator both: the change passes
    Istio's validation webhook too."""
    bundle = admission_control.istiod_webhooks()[0]["webhooks"][0]["clientConfig"]["caBundle"]
    root_pem = base64.b64decode(bundle).decode()  # the mesh root, as istiod fills every caBundle
    with injected_namespace(cluster, api, root_pem, admission_control.injector.address, NS, "clients/curl.yaml",
                            "clients/httpbin.yaml") as ns:
        yield ns


@pytest.mark.parametrize("native", [False, True], ids=["sidecar-containers", "native-sidecars"])
def test_the_cluster_applies_the_subset_and_waits_for_it_before_the_route_and_deletes_in_reverse(
        cluster: ClusterTarget, api: FakeApi, admission_control: AdmissionControl,
        monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    docs = change()
    paths = {d["kind"]: object_path(api, d, NS) for d in docs}
    recorder = Recorder(api, paths)
    monkeypatch.setattr(kube_module, "stream", recorder)
    # Istio 1.27+ on Kubernetes 1.33+ injects istio-proxy as an init container (restartPolicy Always).
    monkeypatch.setattr(admission_control.injector, "native_sidecars", native)
    with sidecars(cluster, api, admission_control) as ns:
        pods = cluster.pods(ns)
        assert len(pods) == 2
        assert all((PROXY_CONTAINER in p.init_containers, PROXY_CONTAINER in p.containers) == (native, not native)
                   for p in pods)
        warming = active_clusters(V1)
        recorder.answers[CLUSTERS] = [warming, warming, active_clusters(V1, V3)]
        cluster.apply(docs, ns)  # the route first, as given
        dr, vs = api.seen("PATCH", paths["DestinationRule"]), api.seen("PATCH", paths["VirtualService"])
        assert len(dr) == len(vs) == 1 and dr[0] < vs[0]
        clusters_reads = [held for path, held in recorder.held if path == mbb.CLUSTERS_PATH]
        # Two sidecars (curl, httpbin) read until both list v3 as active; the route only after.
        assert len(clusters_reads) >= 3 and all(held == {"DestinationRule"} for held in clusters_reads)
        routed = f'{{"route_config": {{"virtual_hosts": [{{"routes": [{{"route": {{"cluster": "{V3}"}}}}]}}]}}}}'
        recorder.answers[ROUTES] = [routed, '{"route_config": {}}']
        cluster.delete(docs, ns)
        vs_gone, dr_gone = api.seen("DELETE", paths["VirtualService"]), api.seen("DELETE", paths["DestinationRule"])
        assert len(vs_gone) == len(dr_gone) == 1 and vs_gone[0] < dr_gone[0]
        routes_reads = [held for path, held in recorder.held if path == mbb.ROUTES_PATH]
        assert len(routes_reads) >= 2 and all(held == {"DestinationRule"} for held in routes_reads)


ROUTED = f'{{"route_config": {{"virtual_hosts": [{{"routes": [{{"route": {{"cluster": "{V3}"}}}}]}}]}}}}'


def test_a_failed_route_wait_still_deletes_the_subsets_and_stays_the_error(
        cluster: ClusterTarget, api: FakeApi, admission_control: AdmissionControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = change()
    paths = {d["kind"]: object_path(api, d, NS) for d in docs}
    recorder = Recorder(api, paths)
    monkeypatch.setattr(kube_module, "stream", recorder)
    with sidecars(cluster, api, admission_control) as ns:
        recorder.answers[CLUSTERS] = [active_clusters(V1, V3)]
        cluster.apply(docs, ns)
        recorder.answers[ROUTES] = [ROUTED]  # a sidecar that keeps the route: the wait never ends
        with pytest.raises(NotConverged, match="DestinationRule subsets out of the routes"):
            cluster.delete(docs, ns)
        assert paths["VirtualService"] not in api.objects and paths["DestinationRule"] not in api.objects


class Vanishing(Recorder):
    """Recorder whose `victim` pod is gone from the API at its first routes read, as a rollout's old
    pod goes: the exec is refused (PodExec answers 404 for a pod that does not exist)."""

    def __init__(self, api: FakeApi, paths: dict[str, str], victim: str) -> None:
        super().__init__(api, paths)
        self.victim = victim

    def __call__(self, method: Any, name: str, namespace: str, **kwargs: Any) -> Any:
        if name == self.victim and kwargs["command"][-1] == mbb.ROUTES_PATH:
            with self.api.lock:
                self.api.objects.pop(f"/api/v1/namespaces/{namespace}/pods/{name}", None)
        return super().__call__(method, name, namespace, **kwargs)


def test_a_sidecar_that_leaves_during_the_wait_is_not_waited_for(
        cluster: ClusterTarget, api: FakeApi, admission_control: AdmissionControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = change()
    paths = {d["kind"]: object_path(api, d, NS) for d in docs}
    with sidecars(cluster, api, admission_control) as ns:
        [victim] = [p.name for p in cluster.pods(ns) if p.labels.get("app") == "httpbin"]
        recorder = Vanishing(api, paths, victim)
        monkeypatch.setattr(kube_module, "stream", recorder)
        recorder.answers[CLUSTERS] = [active_clusters(V1, V3)]
        cluster.apply(docs, ns)
        recorder.answers[ROUTES] = ['{"route_config": {}}']
        cluster.delete(docs, ns)
        assert victim not in [p.name for p in cluster.pods(ns)]
        assert paths["DestinationRule"] not in api.objects


def injected_pod(containers: tuple[str, ...], init_containers: tuple[str, ...] = ()) -> PodView:
    return PodView("curl-1", NS, {"app": "curl"}, {SIDECAR_STATUS_ANNOTATION: "{}"}, containers, init_containers,
                   "10.0.0.1", True, "curl")


def test_injected_pods_with_no_istio_proxy_found_fail_the_wait_rather_than_pass_it(
        cluster: ClusterTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.kube, "pods", lambda namespace: [injected_pod(("curl", "proxy"))])
    with pytest.raises(ConformanceError, match=r"pods curl-1 in bookinfo-r1 are injected \(sidecar.istio.io/status\) "
                                               "but none has a container or init container istio-proxy"):
        cluster.delete(change(), NS)
    native = injected_pod(("curl",), ("istio-init", PROXY_CONTAINER))
    monkeypatch.setattr(cluster.kube, "pods", lambda namespace: [native])
    assert cluster._sidecars(NS) == ["curl-1"]
