"""Shared helpers of the cluster side's tests: a kubeconfig for the fake Kubernetes API
(tests/fakeapi.py), this machine as `meshconf up` finds it (the `machine` fixture of
tests/conftest.py), cluster targets on the fake API and exec into its pods. The upstream CRDs,
Gateway API and Istio releases are in tests/release_builders.py.
"""

import copy
import functools
import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from conformance import cli, manifests
from conformance.names import DEFAULT_REVISION, INJECTION_LABEL, ISTIO_NAMESPACE, istiod_name
from conformance.settings import GATEWAY_API_RELEASES_ENV, ISTIO_RELEASES_ENV, RunSettings, Timeouts
from conformance.targets import istio, kind
from conformance.targets.cluster import ClusterAccess, ClusterTarget
from conformance.targets.kube import Kube
from conformance.targets.local.admission.control import SERVICE_PORT, istiod_webhooks
from tests.builders import upstream_file
from tests.fake_discovery import Route
from tests.fakeapi import FakeApi
from tests.fakegateway import FakeGateway, free_port
from tests.release_builders import (GATEWAY_API, ISTIO_CRDS, ISTIO_VERSION, READINESS_GATEWAY, accept_once_then_deny,
                                    fake_release, install_crds, publish_gateway_api)
from tests.fakes import FakeTools
from tests.release_server import ReleaseServer

# ---------------------------------------------------------------------------------------------
# A kubeconfig for the fake Kubernetes API

KUBECONFIG_TOKEN = "sekret-token-0123456789abcdef"
KUBECONFIG_CLIENT_KEY = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tZmFrZQ=="


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [
            {"name": "fake", "user": {"token": KUBECONFIG_TOKEN}},
            {"name": "certs", "user": {"client-key-data": KUBECONFIG_CLIENT_KEY,
                                       "client-certificate-data": "Q0VSVA=="}},
        ],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path



# ---------------------------------------------------------------------------------------------
# This machine as `meshconf up` finds it


def fake_proc(root: Path, watches: int = 524288, instances: int = 512, available_kib: int = 16 * 1024**2) -> Path:
    """A /proc tree under root with these inotify limits and available memory; its path."""
    inotify = root / "proc" / "sys" / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_watches").write_text(f"{watches}\n")
    (inotify / "max_user_instances").write_text(f"{instances}\n")
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   {available_kib:>8} kB\n"
        "HugePages_Total:       0\n"
    )
    return root / "proc"


# What istioctl answers on a healthy cluster.
HEALTHY = {"istioctl": {"install": {"stdout": "\u2714 Installation complete\n"}}}


@dataclass
class Machine:
    """A machine with nothing real but itself, on which the CLI runs in-process (cli.main):
    - fake docker and kind on PATH (tests/fakes); `kind create cluster` writes a kubeconfig
      pointing at the fake API server (state "server");
    - a local release server ($MESHCONF_ISTIO_RELEASES) serving an Istio archive whose bin/istioctl
      is the fake istioctl launcher, and whose samples/addons hold small prometheus.yaml and
      kiali.yaml shaped like upstream's; istioctl is removed from PATH, so only the release's copy
      can answer; the same server serves the Gateway API release ($MESHCONF_GATEWAY_API_RELEASES);
    - the fake Kubernetes API (tests/fakeapi.py): discovery for every applied kind, Deployments
      rolled out once applied, Istio's validating webhook accepting the invalid VirtualService
      once, then denying it;
    - a fake ingress gateway (tests/fakegateway.py) on a free host port (--ingress-port), which
      starts answering once the readiness Gateway is applied, as Envoy would.
    The only thing patched in-process is /proc: kind.preflight reads inotify limits and memory from
    a fake /proc tree (this machine's real limits fail the preflight), while the docker and kind
    checks still run the fake tools."""

    tools: FakeTools
    api: FakeApi
    releases: ReleaseServer
    project: Path  # the working directory: .meshconf/ goes here
    home: Path
    capsys: pytest.CaptureFixture[str]
    gateway: FakeGateway
    https_port: int

    @property
    def ports(self) -> list[str]:
        return ["--ingress-port", str(self.gateway.port), "--ingress-https-port", str(self.https_port)]

    @property
    def work_dir(self) -> Path:
        return self.project / ".meshconf" / "kind-meshconf"

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    def settings(self, **changes: Any) -> RunSettings:
        """A kind run's settings on this machine's ports."""
        return RunSettings(target="kind", ingress_port=self.gateway.port, ingress_https_port=self.https_port,
                           **changes)

    def meshconf(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def patches(self, path: str) -> list[Any]:
        return [self.api.requests[i] for i in self.api.seen("PATCH", path)]


def set_up_machine(tmp_path: Path, fake_tools: FakeTools, api: FakeApi, release_server: ReleaseServer,
                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   gateway: FakeGateway) -> Machine:
    fake_tools.set_scenario({**HEALTHY, "state": {"server": api.url}})
    fake_tools.remove("istioctl")  # only the release's bin/istioctl may answer
    # What the cluster has (default, where the readiness check's invalid VirtualService goes), and what
    # istioctl install creates first: its namespace and CRDs.
    seed_namespace(api, "default")
    seed_namespace(api, ISTIO_NAMESPACE)
    install_crds(api, *ISTIO_CRDS)
    api.deployments_roll_out = True
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    release_server.publish(ISTIO_VERSION, fake_release())
    monkeypatch.setenv(ISTIO_RELEASES_ENV, release_server.url)
    monkeypatch.setenv(GATEWAY_API_RELEASES_ENV, publish_gateway_api(release_server, GATEWAY_API))
    for name in ("INSTALL", "ROLLOUT", "REQUEST", "MESH_READY", "FIRST_DEPLOY"):
        monkeypatch.delenv(f"MESHCONF_TIMEOUT_{name}", raising=False)
    monkeypatch.setattr(kind, "preflight", functools.partial(kind.preflight, fake_proc(tmp_path)))
    # Longer than 80 columns: the printed kubeconfig path must not be wrapped.
    project = tmp_path / "a-project-directory-whose-path-is-long-enough-to-wrap-in-a-terminal"
    project.mkdir()
    monkeypatch.chdir(project)
    return Machine(fake_tools, api, release_server, project, tmp_path / "home", capsys, gateway, free_port())


# ---------------------------------------------------------------------------------------------
# Istio's admission on the fake API, upstream injected pods, and a ClusterTarget on the fake API

# The Service Istio's webhooks name (clientConfig.service: istiod in istio-system, port 443).
ISTIOD_WEBHOOK_SERVICE = (ISTIO_NAMESPACE, istiod_name(DEFAULT_REVISION), SERVICE_PORT)
ADMISSION_PATH = "/apis/admissionregistration.k8s.io/v1"


def install_istio_admission(api: FakeApi, root_pem: str, address: tuple[str, int]) -> list[dict[str, Any]]:
    """Istio's webhook configurations on the fake API as istiod leaves them once it runs (its CA in
    every caBundle), their Service reaching the webhook server at `address`; the documents."""
    docs = istiod_webhooks(root_pem)
    for doc in docs:
        api.objects[f"{ADMISSION_PATH}/{doc['kind'].lower()}s/{doc['metadata']['name']}"] = copy.deepcopy(doc)
    api.webhook_services[ISTIOD_WEBHOOK_SERVICE] = address
    return docs


def seed_namespace(api: FakeApi, name: str, labels: Mapping[str, str] | None = None) -> None:
    """A namespace the cluster already has (kube-system, default), as the API server lists it."""
    api.objects[f"/api/v1/namespaces/{name}"] = {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
        "status": {"phase": "Active"}}


def upstream_pod(relative: str) -> dict[str, Any]:
    """The pod of an upstream workload file (tests/upstream/): a Pod as it is, or a Deployment's pod
    template as a Pod named after the Deployment."""
    docs = [d for d in yaml.safe_load_all(upstream_file(relative).read_text()) if d]
    [doc] = [d for d in docs if d.get("kind") in ("Pod", "Deployment")]
    if doc["kind"] == "Pod":
        return doc
    template = doc["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template.get("metadata", {}), "name": f"{doc['metadata']['name']}-0"},
            "spec": template["spec"]}


class StaticProvisioner:
    """Hands on the ClusterAccess it was given: a ClusterTarget on the fake API, nothing provisioned."""

    def __init__(self, access: ClusterAccess, name: str = "kind") -> None:
        self.access, self.name = access, name

    def up(self) -> ClusterAccess:
        return self.access

    def down(self) -> None:
        pass

    def collect_debug(self, directory: Path, namespaces: Sequence[str] = (),
                      applied: Sequence[Mapping[str, Any]] | None = None) -> None:
        pass

    def phases(self) -> Mapping[str, float]:
        return {}


# Budgets for a fake API that answers at once: a wait that fails does so in a second or two.
FAST = Timeouts(request=5, rollout=1.5, first_deploy=1.5, install=10, mesh_ready=2)


def cluster_target(api: FakeApi, directory: Path, istio_install: istio.IstioInstall | None = None,
                   unsupported: Mapping[str, str] | None = None, settings: RunSettings | None = None,
                   kubernetes_version: str = "1.33.1") -> ClusterTarget:
    """A ClusterTarget (not up yet) on the fake API, with what a provisioner would hand on; `settings`
    (by default the kind target's, run r1) with the fake API's FAST budgets."""
    access = ClusterAccess(write_kubeconfig(directory / "kubeconfig", api.port), None, "http://127.0.0.1:9",
                           kubernetes_version, ISTIO_VERSION, unsupported=dict(unsupported or {}), istio=istio_install)
    settings = replace(settings or RunSettings(target="kind", run_id="r1"), timeouts=FAST)
    return ClusterTarget(settings, StaticProvisioner(access),
                         kube_factory=lambda path, context, timeouts: Kube(path, context, timeouts=timeouts,
                                                                            poll_interval=0.02))


# ---------------------------------------------------------------------------------------------
# Exec into the fake API's pods


class ExecStream:
    """What kubernetes.stream.stream hands Kube.exec (a WSClient in binary mode): the command has
    run; its output and the kubelet's closing Status wait on their channels."""

    def __init__(self, stdout: bytes, stderr: bytes, exit_code: int, argv: Sequence[str]) -> None:
        # kubernetes/kubernetes staging/src/k8s.io/kubelet/pkg/cri/streaming/remotecommand/exec.go
        # ServeExec: Success, or NonZeroExitCode with the code as an ExitCode cause.
        done: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if exit_code:
            done = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                    "message": f"command terminated with non-zero exit code: error executing command {list(argv)}, "
                               f"exit code {exit_code}",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
        self.frames = {1: stdout, 2: stderr, 3: json.dumps(done).encode()}
        self.open = True

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        self.open = False  # everything was sent at once: the server closes the stream

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        return self.frames.pop(channel, b"")

    def close(self) -> None:
        self.open = False


class PodExec:
    """The API server's pods/exec for the fake API's pods, in place of kubernetes.stream.stream
    (monkeypatch it over conformance.targets.kube.stream).

    The pod must exist and have the container, as the API server checks before the upgrade
    (kubernetes/kubernetes pkg/registry/core/pod/strategy.go: "container %s is not valid for pod %s",
    a 400 that the client's websocket reports as a failed handshake). `sh -c` commands (the curl
    batch script) run on this machine; any other argv is answered from `answers`, in turn, the last
    one repeating."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.answers: dict[tuple[str, ...], list[str]] = {}
        self.calls: list[tuple[str, str, str, tuple[str, ...]]] = []  # pod, namespace, container, argv[:2]

    def __call__(self, _method: Any, name: str, namespace: str, *, command: list[str], container: str,
                 **_: Any) -> ExecStream:
        with self.api.lock:
            pod = self.api.objects.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if pod is None:
            raise _handshake_refused(404, "NotFound", f'pods "{name}" not found')
        spec = pod.get("spec") or {}
        names = [c["name"] for kind in ("containers", "initContainers") for c in spec.get(kind) or []]
        if container not in names:
            raise _handshake_refused(400, "BadRequest", f"container {container} is not valid for pod {name}")
        self.calls.append((name, namespace, container, tuple(command[:2])))
        if command[0] == "sh":
            done = subprocess.run(command, capture_output=True, timeout=120)
            return ExecStream(done.stdout, done.stderr, done.returncode, command)
        replies = self.answers.get(tuple(command))
        if not replies:
            raise AssertionError(f"PodExec: no answer for {command} in {namespace}/{name}")
        text = replies.pop(0) if len(replies) > 1 else replies[0]
        return ExecStream(text.encode(), b"", 0, command)


def _handshake_refused(code: int, reason: str, message: str) -> ApiException:
    """A refused exec upgrade as kubernetes.stream raises it: websocket's bad handshake, wrapped
    (kubernetes/stream/ws_client.py websocket_call) with the API server's Status as its body."""
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code})
    return ApiException(status=0, reason=f"Handshake status {code} {HTTPStatus(code).phrase} -+-+- {{}} -+-+- {body}")


@contextmanager
def running_cluster(api: FakeApi, tmp_path: Path, *namespaces: str) -> Iterator[ClusterTarget]:
    """A cluster target up on the fake API with Istio's CRDs and `namespaces`, its Deployments
    running their pods; down after the block."""
    install_crds(api, *ISTIO_CRDS)
    for name in namespaces:
        seed_namespace(api, name)
    api.deployments_roll_out = True
    target = cluster_target(api, tmp_path)
    target.up()
    try:
        yield target
    finally:
        target.down()


@contextmanager
def injected_namespace(target: ClusterTarget, api: FakeApi, root_pem: str, injector: tuple[str, int],
                       name: str, *manifest_names: str) -> Iterator[str]:
    """A namespace labelled for Istio's injection on the fake API, with `manifest_names` applied and
    their pods injected (by Istio's webhook configurations, served at `injector`) and running;
    removed after the block."""
    install_istio_admission(api, root_pem, injector)
    with target.namespace(name, {INJECTION_LABEL: "enabled"}) as ns:
        target.apply([d for m in manifest_names for d in manifests.load(m)], ns)
        target.wait_ready(ns)
        yield ns


def object_path(api: FakeApi, doc: Mapping[str, Any], namespace: str) -> str:
    """Where the fake API server keeps `doc` in `namespace`, found from what it serves (not from the
    target's own rules)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    [resource] = [r for r in api.served() if (r.group, r.version, r.kind) == (group, version, doc["kind"])]
    return Route(resource, namespace if resource.namespaced else None, doc["metadata"]["name"]).object_path
