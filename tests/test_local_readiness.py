"""The local mesh's endpoints follow pods' readiness, as Kubernetes' EndpointSlices do: a pod
gets traffic once ready and none once it stops; readiness is watched by a thread of its own."""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conformance.errors import NotConverged
from conformance.targets.local import mesh as mesh_module
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import OUTBOUND_PORT
from conformance.targets.local.pods import RunningPod
from conformance.targets.local.objects import namespace_doc
from tests.builders import eventually, http_get, manifest_docs as docs, running_local_mesh

# A sitecustomize that holds an app before it listens (see its docstring).
GATE = Path(__file__).parent / "data" / "gate"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with running_local_mesh(tmp_path) as local:
        yield local


def _gate_httpbin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hold httpbin pods before they listen, until the returned FIFO is opened for writing."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(GATE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MESHCONF_GATE_FIFO", str(gate))
    monkeypatch.setenv("MESHCONF_GATE_POD", "httpbin-")
    return gate


def _held_httpbin_and_ready_curl(mesh: LocalMesh, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> tuple[Path, RunningPod]:
    """httpbin in namespace web, held before it listens (the FIFO releases it), and a ready
    injected curl in namespace tools."""
    gate = _gate_httpbin(tmp_path, monkeypatch)
    mesh.apply([namespace_doc(ns, {"istio-injection": "enabled"}) for ns in ("web", "tools")], "web")
    mesh.apply(docs("clients/httpbin.yaml"), "web")
    mesh.apply(docs("clients/curl.yaml"), "tools")
    mesh.wait_ready("tools", 30, 0.05)
    [curl] = [p for p in mesh.running() if p.workload.name == "curl"]
    return gate, curl


def _endpoints(pod: RunningPod, cluster: str) -> list[str] | None:
    """The hosts of `cluster` in the pod's Envoy, or None while Envoy has no such cluster."""
    assert pod.proxy is not None
    lines = pod.proxy.admin("/clusters").text.splitlines()
    if not any(line.startswith(f"{cluster}::") for line in lines):
        return None
    return sorted({line.split("::")[1] for line in lines
                   if line.startswith(f"{cluster}::") and line.split("::")[1][:1].isdigit()})


def test_a_pod_gets_traffic_only_once_ready(mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ready pods are endpoints: istiod sends no unhealthy endpoint by default
    (istio/istio pilot/pkg/xds/endpoints/endpoint_builder.go, PILOT_SEND_UNHEALTHY_ENDPOINTS);
    the mesh pushes when a pod becomes ready, as Kubernetes updates a Service's endpoints.
    The pod's own sidecar is configured meanwhile."""
    gate, curl = _held_httpbin_and_ready_curl(mesh, tmp_path, monkeypatch)
    [httpbin] = [p for p in mesh.running() if p.workload.name == "httpbin"]
    cluster = "outbound|8000||httpbin.web.svc.cluster.local"

    def get() -> tuple[int, str]:
        status, _, body = http_get(curl.model.ip, OUTBOUND_PORT, "http://httpbin.web:8000/get")
        return status, body

    # Not ready: the client's sidecar has the service, without endpoint.
    eventually(lambda: _endpoints(curl, cluster) is not None, "the client's sidecar to know httpbin")
    assert _endpoints(curl, cluster) == []
    assert get() == (503, "no healthy upstream")
    assert not httpbin.ready()
    # The pod's own sidecar has its configuration: its inbound listener.
    assert httpbin.proxy is not None
    proxy = httpbin.proxy
    assert eventually(lambda: f"inbound_{httpbin.model.ip}_8080" in proxy.admin("/listeners").text,
                      "the not-ready pod's sidecar to be configured")

    # Let the app start: nobody calls wait_ready, the mesh notices on its own.
    os.close(eventually(lambda: os.open(gate, os.O_WRONLY | os.O_NONBLOCK), "the gated app to open its gate"))
    assert eventually(lambda: get()[0] == 200, "httpbin to get traffic once ready")
    assert _endpoints(curl, cluster) == [f"{httpbin.model.ip}:8080"]


def test_a_pod_leaves_every_proxys_endpoints_before_its_processes_stop(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Kubernetes removes a terminating pod from its EndpointSlices: every proxy has ACKed the
    endpoints without it before the pod stops, so no request goes to a pod that is stopping."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/httpbin.yaml") + docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    [curl] = [p for p in mesh.running() if p.workload.name == "curl"]
    [httpbin] = [p for p in mesh.running() if p.workload.name == "httpbin"]
    cluster = "outbound|8000||httpbin.ns.svc.cluster.local"
    assert _endpoints(curl, cluster) == [f"{httpbin.model.ip}:8080"]
    at_stop: list[list[str] | None] = []
    real_stop = RunningPod.stop

    def stop(pod: RunningPod, supervisor: object) -> None:
        if pod is httpbin:
            at_stop.append(_endpoints(curl, cluster))
        real_stop(pod, supervisor)  # type: ignore[arg-type]

    monkeypatch.setattr(RunningPod, "stop", stop)
    mesh.delete(docs("clients/httpbin.yaml", "Deployment"), "ns")
    assert at_stop == [[]]



# ---------------------------------------------------------------------------------------------
# The readiness watcher: a thread of its own, probing outside the mesh's lock

WATCHER = "meshconf-readiness"  # the watcher thread's name


def test_the_readiness_watcher_outlives_any_error_and_wait_ready_reports_it(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is no ConformanceError (an OSError writing config, say) ends neither the
    watcher nor its work: wait_ready names it meanwhile, and once it is gone a pod that becomes
    ready gets traffic without anyone calling wait_ready."""
    gate, curl = _held_httpbin_and_ready_curl(mesh, tmp_path, monkeypatch)
    real_sync = mesh.sync_readiness
    failing = threading.Event()
    failing.set()

    def sync() -> bool:
        if threading.current_thread().name == WATCHER and failing.is_set():
            raise OSError(28, "No space left on device")
        return real_sync()

    monkeypatch.setattr(mesh, "sync_readiness", sync)
    with pytest.raises(NotConverged, match=r"readiness watcher: OSError: \[Errno 28\] No space left on device"):
        mesh.wait_ready("web", 1, 0.05)
    failing.clear()
    os.close(eventually(lambda: os.open(gate, os.O_WRONLY | os.O_NONBLOCK), "the gated app to open its gate"))
    eventually(lambda: http_get(curl.model.ip, OUTBOUND_PORT, "http://httpbin.web:8000/get")[0] == 200,
               "httpbin to get traffic once ready")


def _hold_the_watcher_in_a_probe(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the watcher's next probe of a ready pod hang until the returned event is set."""
    inside, release = threading.Event(), threading.Event()
    real_failure = RunningPod.failure

    def failure(pod: RunningPod) -> str | None:
        if threading.current_thread().name == WATCHER and not release.is_set():
            inside.set()
            release.wait(30)
        return real_failure(pod)

    monkeypatch.setattr(RunningPod, "failure", failure)
    assert inside.wait(10), "the watcher never probed"
    return release


def test_a_probe_that_hangs_delays_neither_apply_nor_stop(mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher probes outside the mesh's lock, and stop() waits for it a bounded time."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    release = _hold_the_watcher_in_a_probe(monkeypatch)
    try:
        _returns_while_the_probe_hangs(lambda: mesh.apply([namespace_doc("other", {})], "other"))
        monkeypatch.setattr(mesh_module, "WATCHER_JOIN_TIMEOUT", 0.2)
        _returns_while_the_probe_hangs(mesh.stop)
        assert mesh.running() == []
    finally:
        release.set()


def _returns_while_the_probe_hangs(action: Callable[[], None]) -> None:
    done = threading.Thread(target=action, daemon=True)
    done.start()
    done.join(10)
    assert not done.is_alive(), f"{action} waited for the watcher's probe"



def test_a_readiness_round_whose_probes_predate_another_publish_changes_nothing(
    mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher and wait_ready both probe, outside the lock. A round that probed a pod not
    ready yet, while another round saw it ready and published that, must not publish its older
    view: the pod would leave every Service's endpoints again until the next round."""
    real_probe = mesh_module.probe_readiness
    entered, go = threading.Event(), threading.Event()

    def probe(pods, ready):  # type: ignore[no-untyped-def]
        if threading.current_thread().name != "stale-round":
            return real_probe(pods, ready)
        entered.set()
        go.wait(30)
        return [(pod, False) for pod in pods]  # what it saw before the pod was ready

    monkeypatch.setattr(mesh_module, "probe_readiness", probe)
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    published: list[bool] = []
    stale = threading.Thread(target=lambda: published.append(mesh.sync_readiness()), name="stale-round")
    stale.start()
    assert entered.wait(30)
    mesh.wait_ready("ns", 30, 0.05)
    [curl] = mesh.running()
    go.set()
    stale.join(30)
    assert published == [False]
    assert [(p.name, p.ready) for p in mesh.state().pods] == [(curl.model.name, True)]
