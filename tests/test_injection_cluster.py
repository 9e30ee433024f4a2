"""MESH-INJECTION on a cluster, against the fake API server (tests/fakeapi.py): what the cluster
target creates and reads for SidecarInjection, how the verdicts read pods shaped as Istio injects
them and refusals as the API server words them, admission by dry run, the webhook configurations
read back, and a second Istio revision installed and removed around a block.

Istio's webhooks are called for real: the configurations Istio's charts install (caBundle patched
in, as istiod does) are stored in the fake API, which calls them over HTTPS as kube-apiserver does;
they are served by the local mesh's istiod webhook server (/inject and /validate).
"""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from conformance import manifests
from conformance.errors import ConformanceError, NotConverged
from conformance.names import ISTIO_VALIDATION_DENIED, PROXY_CONTAINER, SIDECAR_STATUS_ANNOTATION
from conformance.targets.cluster import ClusterTarget
from conformance.targets.istio import IstioInstall
from conformance.targets.istio_revision import REVISION_FEATURE, Revision, injector_configuration
from conformance.targets.kube_views import pod_view
from conformance.targets.local.admission import validator
from conformance.targets.local.admission.injector import INJECT_PATH, Injector
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.injection import InjectionCase, injection_table, is_injected, observed
from conformance.verdicts.validation import Attempt, refused_by, validation_table
from conformance.webhooks import configurations
from tests.admission_builders import pod_doc
from tests.cluster_builders import (
    ADMISSION_PATH,
    cluster_target,
    install_istio_admission,
    running_cluster,
    seed_namespace,
    upstream_pod,
)
from tests.release_builders import ISTIO_VERSION
from tests.fake_http import status
from tests.fakeapi import FakeApi
from tests.fakes import FakeTools

REVISION = "canary"
CANARY_ISTIOD = "/apis/apps/v1/namespaces/istio-system/deployments/istiod-canary"
CANARY_INJECTOR = f"{ADMISSION_PATH}/mutatingwebhookconfigurations/{injector_configuration(REVISION)}"


@pytest.fixture(scope="module")
def istiod(ca: MeshCA) -> Iterator[Injector]:
    """istiod's webhook server: /inject and /validate on one port, its certificate from the mesh CA."""
    server = Injector(ca, "127.0.0.1")
    server.serve(validator.VALIDATE_PATH, validator.review_response)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    """A cluster target on the fake API with Istio's CRDs; its Deployments run their pods."""
    with running_cluster(api, tmp_path) as target:
        yield target


@pytest.fixture
def istio_admission(api: FakeApi, ca: MeshCA, istiod: Injector) -> list[dict[str, Any]]:
    return install_istio_admission(api, ca.root_pem, istiod.address)


# --- SidecarInjection: what is created and what is read ---------------------------------------

# (namespace labels, manifests/injection/<pod>.yaml, injected by Istio's policy): a few of the suite's.
CASES = (
    ({"istio-injection": "enabled"}, "pod-plain", True),
    ({"istio-injection": "enabled"}, "pod-label-false", False),
    ({"istio-injection": "disabled"}, "pod-label-true", False),
    ({}, "pod-label-true", True),
    ({}, "pod-plain", False),
    ({"istio.io/rev": "default"}, "pod-plain", True),
)


@pytest.mark.parametrize("istio_installed", [True, False])
def test_sidecar_injection_creates_labelled_namespaces_and_deployments_and_reads_their_pods(
        cluster: ClusterTarget, api: FakeApi, ca: MeshCA, istiod: Injector, istio_installed: bool) -> None:
    if istio_installed:
        install_istio_admission(api, ca.root_pem, istiod.address)
    with ExitStack() as stack:
        placed = []
        for number, (labels, manifest, injected) in enumerate(CASES, 1):
            ns = stack.enter_context(cluster.namespace(f"inject{number}-r1", labels))
            cluster.apply(manifests.load(f"injection/{manifest}.yaml"), ns)
            placed.append((InjectionCase(f"{labels} {manifest}", injected), ns))
        for _, ns in placed:
            cluster.wait_ready(ns)
        verdict = injection_table([(case, cluster.pods(ns)) for case, ns in placed])

        # Created: each namespace with its labels and the run's; the Deployment by server-side apply.
        posted = {r.body["metadata"]["name"]: r.body["metadata"]["labels"] for r in api.requests
                  if r.method == "POST" and r.path == "/api/v1/namespaces"}
        assert posted == {ns: {**labels, "meshconf.dev/run-id": "r1"} for (labels, _, _), (_, ns) in zip(CASES, placed)}
        for _, ns in placed:
            [apply] = [r for r in api.requests
                       if r.method == "PATCH" and r.path == f"/apis/apps/v1/namespaces/{ns}/deployments/inject-probe"]
            assert apply.headers["content-type"].startswith("application/apply-patch+yaml")
            assert apply.query["fieldManager"] == ["meshconf"]
            # Read: the namespace's pods, which the Deployment's controller created through admission.
            assert api.seen("GET", f"/api/v1/namespaces/{ns}/pods")
    assert verdict.ok == istio_installed, verdict.message  # without Istio's webhooks nothing is injected
    if not istio_installed:
        assert "3 of 6 injection cases differ" in verdict.message


# --- the verdict on pods shaped as Istio injects them -----------------------------------------

# istio/istio 1.28.0 pkg/kube/inject/testdata/inject (tests/upstream/istio/inject__*): how each carries a sidecar.
UPSTREAM_PODS = (
    ("istio/inject__hello.yaml.injected", "native sidecar", True),  # 1.28 injects native sidecars by default
    ("istio/inject__native-sidecar-opt-out.yaml.injected", "sidecar", True),
    ("istio/inject__hello-ignore.yaml.injected", "none", False),
)


def test_the_injection_verdict_reads_upstream_injected_pods_as_the_cluster_lists_them(
        cluster: ClusterTarget) -> None:
    cases = []
    for number, (relative, how, injected) in enumerate(UPSTREAM_PODS):
        with cluster.namespace(f"upstream{number}-r1", {}) as ns:
            cluster.apply([upstream_pod(relative)], ns)
            [pod] = cluster.pods(ns)
        assert observed(pod) == how, relative
        assert is_injected(pod) == injected
        cases.append((pod, injected))
    assert injection_table([(InjectionCase(p.name, injected), [p]) for p, injected in cases]).ok
    # The same pods against the opposite expectation: every case is wrong.
    wrong = injection_table([(InjectionCase(p.name, not injected), [p]) for p, injected in cases])
    assert not wrong.ok and "3 of 3 injection cases differ" in wrong.message


def test_a_proxy_without_the_injectors_mark_is_not_an_injection(cluster: ClusterTarget) -> None:
    pod = upstream_pod("istio/inject__native-sidecar-opt-out.yaml.injected")
    del pod["metadata"]["annotations"][SIDECAR_STATUS_ANNOTATION]
    with cluster.namespace("unmarked-r1", {}) as ns:
        cluster.apply([pod], ns)
        [view] = cluster.pods(ns)
    assert PROXY_CONTAINER in view.containers and not is_injected(view)


# --- ValidationWebhook: the API server's refusal, read by the verdict --------------------------

VS_SCHEMA_INVALID = {  # `hosts` a string: the CRD's schema refuses it before any webhook is asked
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "schema-invalid"},
    "spec": {"hosts": "reviews", "http": [{"route": [{"destination": {"host": "reviews"}}],
                                           "redirect": {"uri": "/v1"}}]}}


def attempt(target: ClusterTarget, case: str, docs: list[dict[str, Any]], expected: str, ns: str) -> Attempt:
    try:
        target.apply(docs, ns)
        error = None
    except ConformanceError as refused:
        error = str(refused)
    return Attempt(case, expected, error, all(target.exists(d, ns) for d in docs))


@pytest.mark.parametrize("istio_installed", [True, False])
def test_the_validation_verdict_tells_the_webhooks_denial_from_the_schemas(
        cluster: ClusterTarget, api: FakeApi, ca: MeshCA, istiod: Injector, istio_installed: bool) -> None:
    if istio_installed:
        install_istio_admission(api, ca.root_pem, istiod.address)
    with cluster.namespace("bookinfo-r1", {}) as ns:
        attempts = [
            attempt(cluster, "vs-route-and-redirect", manifests.load("validation/vs-route-and-redirect.yaml"),
                    "webhook: HTTP route cannot contain both route and redirect", ns),
            attempt(cluster, "gateway-no-servers", manifests.load("validation/gateway-no-servers.yaml"),
                    "webhook: gateway must have at least one server", ns),
            attempt(cluster, "schema-invalid", [VS_SCHEMA_INVALID], "schema: spec.hosts: Invalid value", ns),
            attempt(cluster, "vs-valid", manifests.load("validation/vs-valid.yaml"), "", ns),
        ]
    verdict = validation_table(attempts)
    assert [refused_by(a.error) for a in attempts] == (
        ["webhook", "webhook", "schema", "accepted"] if istio_installed else ["accepted", "accepted", "schema", "accepted"])
    assert verdict.ok == istio_installed, verdict.message
    if istio_installed:
        denial = attempts[0].error or ""
        # kube-apiserver's Status for a denial whose webhook set no code: 400 (ToStatusErr).
        assert f"HTTP 400 Bad Request: {ISTIO_VALIDATION_DENIED}: configuration is invalid: " \
               "HTTP route cannot contain both route and redirect" in denial


# --- admission by dry run ------------------------------------------------------------------------


def test_admitted_pod_is_a_dry_run_that_istio_injects_and_nothing_is_stored(
        cluster: ClusterTarget, api: FakeApi, istio_admission: list[dict[str, Any]]) -> None:
    with cluster.namespace("apps-r1", {"istio-injection": "enabled"}) as ns:
        pod = cluster.admitted_pod(pod_doc(), ns)
        assert cluster.pods(ns) == []  # nothing stored
    assert (pod.name, pod.namespace) == ("httpbin-1", "apps-r1")
    assert observed(pod) == "sidecar" and pod.containers == ("httpbin", PROXY_CONTAINER)
    [create] = [r for r in api.requests if r.method == "POST" and r.path == "/api/v1/namespaces/apps-r1/pods"]
    assert create.query["dryRun"] == ["All"]


def test_istiod_never_injects_kube_system_even_when_its_webhook_is_called(
        cluster: ClusterTarget, api: FakeApi, istiod: Injector, istio_admission: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # istio/istio pkg/kube/inject/initializer.go IgnoredNamespaces: kube-system, kube-public,
    # kube-node-lease, local-path-storage; injectRequired (inject.go) skips them whatever the labels.
    asked: list[str] = []
    answer = istiod.routes[INJECT_PATH]
    monkeypatch.setitem(istiod.routes, INJECT_PATH,
                        lambda review: asked.append(review["request"]["namespace"]) or answer(review))
    enabled = {"istio-injection": "enabled"}
    seed_namespace(api, "kube-system", enabled)  # labelled, so the webhook selects its pods
    seed_namespace(api, "apps", enabled)
    assert not is_injected(cluster.admitted_pod(pod_doc(), "kube-system"))
    assert is_injected(cluster.admitted_pod(pod_doc(), "apps"))  # the same pod and labels elsewhere
    assert asked == ["kube-system", "apps"]


def test_admitted_pod_takes_only_pods(cluster: ClusterTarget) -> None:
    with pytest.raises(ConformanceError, match="takes a v1 Pod, not apps/v1 Deployment"):
        cluster.admitted_pod(manifests.load("injection/pod-plain.yaml")[0], "default")


def test_a_webhook_that_cannot_be_reached_refuses_the_pod(
        cluster: ClusterTarget, api: FakeApi, istio_admission: list[dict[str, Any]]) -> None:
    api.webhook_services.clear()  # istiod's Service has no endpoints: failurePolicy Fail
    seed_namespace(api, "apps", {"istio-injection": "enabled"})
    with pytest.raises(ConformanceError, match='HTTP 500 .*Internal error occurred: failed calling webhook '
                                               '"namespace.sidecar-injector.istio.io"'):
        cluster.admitted_pod(pod_doc(), "apps")


# --- the webhook configurations in force ---------------------------------------------------------


def test_webhook_configurations_are_read_back_as_stored(
        cluster: ClusterTarget, ca: MeshCA, istio_admission: list[dict[str, Any]]) -> None:
    docs = cluster.webhook_configurations()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in istio_admission)
    # Whole documents again (the API server's list leaves apiVersion and kind out of its items).
    hooks = configurations(docs)
    assert len(hooks) == 5 and all(h.ca_pem() == ca.root_pem for h in hooks)


# --- a second revision -----------------------------------------------------------------------------


def canary_istiod(available: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod-canary", "namespace": "istio-system", "generation": 1},
            "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                                                "availableReplicas": available}}


def canary_injector(ca_bundle: str | None) -> dict[str, Any]:
    [doc] = manifests.load("local/istio-sidecar-injector-canary.yaml")
    for hook in doc["webhooks"]:
        if ca_bundle:
            hook["clientConfig"]["caBundle"] = ca_bundle
    return doc


@pytest.fixture
def installer(tmp_path: Path, fake_tools: FakeTools) -> IstioInstall:
    """The installation meshconf made (istioctl from PATH: the fake), as a kind target hands it on."""
    fake_tools.set_scenario({"istioctl": {"install": {"stdout": "\u2714 Installation complete\n"}, "uninstall": {}}})
    return IstioInstall(version=ISTIO_VERSION, kubeconfig=tmp_path / "kubeconfig", timeout=20)


@pytest.fixture
def owned(api: FakeApi, tmp_path: Path, installer: IstioInstall) -> Iterator[ClusterTarget]:
    target = cluster_target(api, tmp_path, istio_install=installer)
    target.up()
    try:
        yield target
    finally:
        target.down()


def test_a_revision_is_installed_waited_for_and_removed_after_the_block(
        owned: ClusterTarget, api: FakeApi, installer: IstioInstall, fake_tools: FakeTools) -> None:
    # istioctl's istiod-canary appears, pulls its image, then patches its CA into its injector.
    not_found = (404, status(404, "NotFound", 'deployments.apps "istiod-canary" not found'))
    api.script("GET", CANARY_ISTIOD, not_found, (200, canary_istiod(0)), (200, canary_istiod(1)))
    api.script("GET", CANARY_INJECTOR, (200, canary_injector(None)), (200, canary_injector("Q0E=")))
    with owned.revision(REVISION):
        assert fake_tools.calls("istioctl") == Revision(installer, REVISION).install_argvs()
        assert len(api.seen("GET", CANARY_ISTIOD)) >= 3 and len(api.seen("GET", CANARY_INJECTOR)) >= 2
    install, uninstall = fake_tools.calls("istioctl")
    assert install[:2] == ["istioctl", "install"] and "profile=minimal" in install
    assert install[install.index("--revision") + 1] == REVISION
    assert uninstall == ["istioctl", "uninstall", "--kubeconfig", str(installer.kubeconfig), "--revision", REVISION, "-y"]


def test_a_revision_is_removed_when_the_block_fails(
        owned: ClusterTarget, api: FakeApi, fake_tools: FakeTools) -> None:
    api.objects[CANARY_ISTIOD] = canary_istiod(1)
    api.objects[CANARY_INJECTOR] = canary_injector("Q0E=")
    with pytest.raises(RuntimeError, match="the suite's check failed"):
        with owned.revision(REVISION):
            raise RuntimeError("the suite's check failed")
    assert [argv[1] for argv in fake_tools.calls("istioctl")] == ["install", "uninstall"]


def test_a_revision_that_never_comes_up_fails_and_is_removed(owned: ClusterTarget, fake_tools: FakeTools) -> None:
    entered = []
    with pytest.raises(NotConverged, match="Istio revision canary ready.*Deployment istiod-canary does not exist"):
        with owned.revision(REVISION):
            entered.append(True)
    assert entered == []
    assert [argv[1] for argv in fake_tools.calls("istioctl")] == ["install", "uninstall"]


def test_an_unpatched_injector_is_not_ready(owned: ClusterTarget, api: FakeApi) -> None:
    api.objects[CANARY_ISTIOD] = canary_istiod(1)
    api.objects[CANARY_INJECTOR] = canary_injector(None)
    with pytest.raises(NotConverged, match="istio-sidecar-injector-canary: no caBundle in "
                                           "rev.namespace.sidecar-injector.istio.io, rev.object"):
        with owned.revision(REVISION):
            pass


def test_a_failed_uninstall_after_a_failed_block_is_noted_on_the_blocks_error(
        owned: ClusterTarget, api: FakeApi, fake_tools: FakeTools) -> None:
    fake_tools.set_scenario({"istioctl": {"install": {}, "uninstall": {"exit": 1, "stderr": "Error: timed out\n"}}})
    api.objects[CANARY_ISTIOD] = canary_istiod(1)
    api.objects[CANARY_INJECTOR] = canary_injector("Q0E=")
    with pytest.raises(RuntimeError) as raised:
        with owned.revision(REVISION):
            raise RuntimeError("the suite's check failed")
    assert raised.value.__notes__ == [
        "and uninstall Istio revision canary failed too: istioctl uninstall failed (exit 1): Error: timed out"]


def test_a_helm_revision_is_the_istiod_chart_alone(
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools) -> None:
    installer = IstioInstall(version=ISTIO_VERSION, kubeconfig=tmp_path / "kubeconfig", method="helm", timeout=20)
    target = cluster_target(api, tmp_path, istio_install=installer)
    api.objects[CANARY_ISTIOD] = canary_istiod(1)
    api.objects[CANARY_INJECTOR] = canary_injector("Q0E=")
    target.up()
    try:
        with target.revision(REVISION):
            assert list(fake_tools.state()["helm_releases"]) == ["istio-system/istiod-canary"]
    finally:
        target.down()
    upgrade, uninstall = fake_tools.calls("helm")
    assert upgrade[:5] == ["helm", "upgrade", "--install", "istiod-canary", "istiod"]
    assert "revision=canary" in upgrade and not any(a.startswith("defaultRevision") for a in upgrade)
    assert uninstall[:3] == ["helm", "uninstall", "istiod-canary"]
    assert fake_tools.state()["helm_releases"] == {}


def test_no_revision_beside_a_mesh_meshconf_did_not_install(api: FakeApi, tmp_path: Path,
                                                            fake_tools: FakeTools) -> None:
    reason = "meshconf did not install Istio on context 'x'; pass --install-mesh --yes"
    target = cluster_target(api, tmp_path, unsupported={REVISION_FEATURE: reason})
    target.up()
    try:
        assert not target.supports(REVISION_FEATURE)
        assert target.unsupported_reason(REVISION_FEATURE) == reason
        with pytest.raises(ConformanceError, match=f"cannot install Istio revision canary: {reason}"):
            with target.revision(REVISION):
                pass
    finally:
        target.down()
    assert fake_tools.all_calls() == []


def test_the_default_revision_is_not_a_second_one(owned: ClusterTarget, fake_tools: FakeTools) -> None:
    with pytest.raises(ConformanceError, match="revision 'default' is the installed mesh's own"):
        with owned.revision("default"):
            pass
    assert fake_tools.all_calls() == []


def test_pod_view_keeps_native_sidecars_where_kubernetes_puts_them() -> None:
    pod = pod_view(upstream_pod("istio/inject__hello.yaml.injected"))
    assert pod.init_containers == ("istio-init", PROXY_CONTAINER) and pod.containers == ("hello",)
