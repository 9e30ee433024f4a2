"""The local mesh's admission as a Target offers it: a second revision's istiod and webhooks for
a block, server-side dry-run pods, and the webhook configurations as istiod leaves them."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.names import PROXY_CONTAINER
from conformance.targets.local.admission.injector import INJECT_PATH
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.objects import namespace_doc
from conformance.verdicts.revisions import proxy_discovery_address
from conformance.webhooks import configurations
from tests.builders import manifest_docs as docs, running_local_mesh

DRY_RUN_POD = manifests.load("injection/dry-run-pod.yaml")[0]


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with running_local_mesh(tmp_path) as local:
        yield local


def _curl_in(mesh: LocalMesh, ns: str, labels: dict[str, str]) -> tuple[bool, str | None]:
    """Whether a curl pod in a new namespace with `labels` is injected, and its proxy's istiod."""
    mesh.apply([namespace_doc(ns, labels)], ns)
    mesh.apply(docs("clients/curl.yaml"), ns)
    mesh.wait_ready(ns, 30, 0.05)
    [pod] = [p for p in mesh.running() if p.model.namespace == ns]
    if pod.proxy is None:
        return False, None
    return True, proxy_discovery_address(pod.proxy.config_dump())


def test_a_revision_injects_its_pods_for_the_block_only(mesh: LocalMesh) -> None:
    with mesh.revision("canary"):
        names = {d["metadata"]["name"] for d in mesh.webhook_configurations()}
        assert "istio-sidecar-injector-canary" in names
        assert _curl_in(mesh, "canary", {"istio.io/rev": "canary"}) == (True, "istiod-canary.istio-system.svc:15012")
        assert _curl_in(mesh, "stable", {"istio.io/rev": "default"}) == (True, "istiod.istio-system.svc:15012")
    # The revision is gone: its webhooks too, so a canary-labelled namespace selects no injector.
    assert "istio-sidecar-injector-canary" not in {d["metadata"]["name"] for d in mesh.webhook_configurations()}
    assert set(mesh.admission.injectors) == {"default"}
    assert _curl_in(mesh, "after", {"istio.io/rev": "canary"}) == (False, None)


def test_an_unknown_revision_is_refused_with_nothing_started(mesh: LocalMesh) -> None:
    with pytest.raises(ConformanceError, match="no revision 'blue' .*it has canary"):
        with mesh.revision("blue"):
            pass
    assert set(mesh.admission.injectors) == {"default"}


def test_a_dry_run_pod_goes_through_the_webhooks_and_is_not_created(mesh: LocalMesh) -> None:
    mesh.apply([namespace_doc("plain", {})], "plain")
    injector = mesh.admission.injector
    told: list[bool] = []
    answer = injector.routes[INJECT_PATH]
    injector.serve(INJECT_PATH, lambda review: told.append(review["request"]["dryRun"]) or answer(review))
    injected = mesh.dry_run_pod(DRY_RUN_POD, "plain")
    assert told == [True]  # the webhook is told it is a dry run (sideEffects None lets it be called)
    assert PROXY_CONTAINER in [c["name"] for c in injected["spec"]["containers"]]
    assert injected["metadata"]["namespace"] == "plain"
    # kube-system exists in every cluster, and istiod never injects it, though `object.` is called.
    ignored = mesh.dry_run_pod(DRY_RUN_POD, "kube-system")
    assert [c["name"] for c in ignored["spec"]["containers"]] == ["curl"]
    assert mesh.running() == []
    with pytest.raises(ConformanceError, match="namespace 'nowhere' does not exist"):
        mesh.dry_run_pod(DRY_RUN_POD, "nowhere")


def test_webhook_configurations_carry_istiods_ca_bundle(mesh: LocalMesh) -> None:
    hooks = configurations(mesh.webhook_configurations())
    assert len(hooks) == 5 and all(h.ca_pem() == mesh.ca.root_pem for h in hooks)
    # A copy: changing it changes nothing in the mesh.
    mesh.webhook_configurations()[0]["webhooks"].clear()
    assert len(configurations(mesh.webhook_configurations())) == 5
