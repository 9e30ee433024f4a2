"""The fakes themselves: they must refuse what the real tools and API server refuse, as those do.

A fake that accepts a flag the real tool lacks would let a broken command line pass every test.
So: each fake CLI refuses an unknown flag and an unknown subcommand with the real tool's words
and exit code; every command line meshconf builds passes the fakes' flag check (tests/fakes/
engine/flagcheck.py, flag data from each tool's source in tests/fakes/flags/); the fake API server
serves a CRD-backed kind only while its CRD is applied, validates against the CRD's schema, and
answers conflicts and Services as a kind cluster's API server; the fake helm waits as Helm does.
"""

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from conformance.errors import ConformanceError, UnsupportedResource
from conformance.settings import Timeouts
from conformance.targets import istio, kind
from conformance.targets.istio import IstioInstall
from conformance.targets.kube import Kube
from conformance.targets.local.xds.secrets import MeshCA
from conformance.targets.preflight import docker_check
from tests.admission_builders import WebhookServer, answer_of, configuration_doc, hook_doc
from tests.cluster_builders import ISTIO_CRDS, install_crds, upstream_crd, write_kubeconfig
from tests.fakeapi import FakeApi
from tests.fakes import FakeTools
from tests.fakes.engine.commands import Parsed, load
from tests.fakes.engine.flagcheck import check

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}
VS_PATH = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews"
VS_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io"


def run(fake: FakeTools, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=fake.env(), capture_output=True, text=True, timeout=60)


# --- the CLIs refuse what the real tools refuse ----------------------------------------------------


@pytest.mark.parametrize(("argv", "exit", "stderr"), [
    # kind logs "ERROR: <error>" and exits 1 (cmd/kind/app/main.go).
    (["kind", "create", "cluster", "--name", "x", "--nodes", "3"], 1, "ERROR: unknown flag: --nodes\n"),
    (["kind", "frobnicate"], 1, 'ERROR: unknown command "frobnicate" for "kind"\n'),
    (["kind", "creat", "cluster"], 1, 'ERROR: unknown command "creat" for "kind"\n\nDid you mean this?\n\tcreate\n'),
    (["kind", "create", "cluster", "extra"], 1, 'ERROR: unknown command "extra" for "kind create cluster"\n'),
    (["kind", "create", "cluster", "--wait", "5.5"], 1,
     'ERROR: invalid argument "5.5" for "--wait" flag: time: invalid duration "5.5"\n'),
    # Helm: cobra's "Error: ...", exit 1 (cmd/helm/helm.go).
    (["helm", "upgrade", "--install", "r", "c", "--wait-for-ever"], 1, "Error: unknown flag: --wait-for-ever\n"),
    (["helm", "frobnicate"], 1, "Error: unknown command \"frobnicate\" for \"helm\"\nRun 'helm --help' for usage.\n"),
    (["helm", "upgrade", "--install", "r"], 1,
     'Error: "helm upgrade" requires 2 arguments\n\nUsage:  helm upgrade [RELEASE] [CHART] [flags]\n'),
    # istioctl: a parse error exits 64 (istioctl/cmd/sysexits.go).
    (["istioctl", "install", "--context-name", "x"], 64, "Error: unknown flag: --context-name\n"),
    (["istioctl", "frobnicate"], 64,
     "Error: unknown command \"frobnicate\" for \"istioctl\"\nRun 'istioctl --help' for usage.\n"),
    (["istioctl", "uninstall", "-y"], 1, "Error: at least one of the --revision (or --set revision=<revision>), "
                                         "--filename or --purge flags must be set\n"),
    (["istioctl", "uninstall", "--revison", "canary", "-y"], 64, "Error: unknown flag: --revison\n"),
    # docker: FlagErrorFunc's status 125, the root's own unknown command (docker/cli cli/cobra.go, cmd/docker).
    (["docker", "info", "--output", "json"], 125,
     "unknown flag: --output\n\nUsage:  docker info [OPTIONS]\n\nRun 'docker info --help' for more information\n"),
    (["docker", "info", "--debug"], 125,  # a global option, but only before the subcommand
     "unknown flag: --debug\n\nUsage:  docker info [OPTIONS]\n\nRun 'docker info --help' for more information\n"),
    (["docker", "frobnicate"], 1, "docker: unknown command: docker frobnicate\n\nRun 'docker --help' for more information\n"),
])
def test_each_fake_refuses_what_the_real_tool_refuses(fake_tools: FakeTools, argv: list[str], exit: int,
                                                      stderr: str) -> None:
    done = run(fake_tools, *argv)
    assert (done.returncode, done.stderr) == (exit, stderr)
    assert fake_tools.calls(argv[0]) == [argv]  # logged all the same: tests see what was tried


def test_a_real_subcommand_without_flag_data_fails_loudly(fake_tools: FakeTools) -> None:
    done = run(fake_tools, "kind", "get", "nodes")
    assert done.returncode == 97 and "has no flag data" in done.stderr


def test_global_flags_are_accepted_where_the_real_tool_takes_them(fake_tools: FakeTools) -> None:
    assert run(fake_tools, "docker", "--debug", "info", "--format", "{{.ServerVersion}}").returncode == 0
    assert run(fake_tools, "kind", "version", "-q").returncode == 0  # persistent: after the subcommand too


def test_the_fake_docker_is_the_docker_its_flag_data_comes_from(fake_tools: FakeTools) -> None:
    # docker/cli and the engine are released together: the engine answering is the flag data's release.
    tag = load("docker")["provenance"]["tag"]
    assert run(fake_tools, "docker", "info", "--format", "{{.ServerVersion}}").stdout == f"{tag.removeprefix('v')}\n"
    assert f"Server Version: {tag.removeprefix('v')}\n" in run(fake_tools, "docker", "info").stdout


# --- every command line meshconf builds passes ----------------------------------------------------


def accepted(argv: list[str]) -> Parsed:
    found = check(Path(argv[0]).name, argv[1:])
    assert isinstance(found, Parsed), f"{argv} refused: {found}"
    return found


@pytest.mark.parametrize("method", ["istioctl", "helm"])
@pytest.mark.parametrize("revision", [None, "canary"])
@pytest.mark.parametrize("context", [None, "kind-x"])
def test_istio_install_and_uninstall_lines_pass(method: str, revision: str | None, context: str | None) -> None:
    install = IstioInstall(version="1.28.2", kubeconfig=Path("/run/kc"), method=method,  # type: ignore[arg-type]
                           revision=revision, context=context, release_dir=Path("/cache/istio-1.28.2"),
                           values={"meshConfig.accessLogFile": "/dev/stdout"}, gateway_service_type="NodePort")
    for argv in install.install_argvs() + install.uninstall_argvs():
        parsed = accepted(argv)
        assert parsed.value("kubeconfig") == "/run/kc"


@pytest.mark.parametrize("context", [None, "kind-x"])
def test_revision_lines_pass(context: str | None) -> None:
    """RevisionInjection's second control plane: istioctl's minimal profile with --revision, or the
    istiod chart alone; removed by revision (istioctl) or release (Helm)."""
    istioctl = IstioInstall(version="1.28.2", kubeconfig=Path("/run/kc"), context=context,
                            release_dir=Path("/cache/istio-1.28.2"))
    [install] = [accepted(argv) for argv in istioctl.revision_install_argvs("canary")]
    assert (install.path, install.value("revision"), install.flags["set"][0]) == (("install",), "canary",
                                                                                  "profile=minimal")
    [uninstall] = [accepted(argv) for argv in istioctl.revision_uninstall_argvs("canary")]
    assert (uninstall.path, uninstall.value("revision"), uninstall.has("purge")) == (("uninstall",), "canary", False)
    helm = IstioInstall(version="1.28.2", kubeconfig=Path("/run/kc"), method="helm", context=context)
    [upgrade] = [accepted(argv) for argv in helm.revision_install_argvs("canary")]
    assert (upgrade.path, upgrade.args, upgrade.flags["set"]) == (("upgrade",), ["istiod-canary", "istiod"],
                                                                  ["revision=canary"])
    [removal] = [accepted(argv) for argv in helm.revision_uninstall_argvs("canary")]
    assert (removal.path, removal.args) == (("uninstall",), ["istiod-canary"])
    for parsed in (install, uninstall, upgrade, removal):
        assert parsed.value("kubeconfig") == "/run/kc"
        assert parsed.value("context" if parsed.tool == "istioctl" else "kube-context") == context


def test_debug_bundle_lines_pass() -> None:
    commands = istio.debug_commands("/cache/istio-1.28.2/bin/istioctl", Path("/run/kc"), "ctx",
                                    [("curl-1", "bookinfo"), ("fortio-2", "bookinfo")])
    assert len(commands) == 9
    for argv in commands.values():
        assert accepted(argv).value("context") == "ctx"


def test_kind_lifecycle_lines_pass(tmp_path: Path) -> None:
    cluster = kind.KindCluster("mc", "1.34", tmp_path, timeouts=Timeouts(install=90))
    for argv in (cluster.create_argv(), cluster.delete_argv(), cluster.export_logs_argv(tmp_path / "logs"),
                 cluster.get_clusters_argv(), cluster.export_kubeconfig_argv()):
        accepted(argv)
    assert accepted(cluster.create_argv()).value("wait") == "90s"


def test_doctor_probes_pass(fake_tools: FakeTools) -> None:
    assert docker_check().ok and kind.kind_check().ok
    assert fake_tools.all_calls() == [["docker", "info", "--format", "{{.ServerVersion}}"], ["kind", "version"]]
    for argv in fake_tools.all_calls():
        accepted(argv)


# --- the API server: CRD kinds, schemas, conflicts, Services ----------------------------------------


def raw(api: FakeApi, method: str, path: str, body: Any = None, content_type: str = "application/json",
        **query: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request as any client would send it: (status, JSON body, headers)."""
    url = f"{api.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def apply(api: FakeApi, path: str, body: dict[str, Any], manager: str = "meshconf",
          **query: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return raw(api, "PATCH", path, body, "application/apply-patch+yaml", fieldManager=manager, **query)


def test_a_crd_kind_is_not_found_until_its_crd_is_applied_and_again_after_it_is_deleted(
        api: FakeApi, kube: Kube) -> None:
    with pytest.raises(ResourceNotFoundError):
        kube.dynamic.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    with pytest.raises(UnsupportedResource, match="is its CRD installed"):
        kube.apply([VS], "bookinfo")
    code, body, _ = apply(api, VS_PATH, VS)
    assert (code, body["reason"], body["message"]) == (404, "NotFound", "the server could not find the requested resource")

    crd = upstream_crd("virtualservices.networking.istio.io")
    kube.apply([crd], "bookinfo")
    kube.apply([VS], "bookinfo")
    assert api.objects[VS_PATH]["spec"]["hosts"] == ["reviews"]

    kube.delete([crd], "bookinfo")
    assert VS_PATH not in api.objects  # its objects went with it
    assert raw(api, "GET", VS_PATH)[0] == 404 and raw(api, "GET", "/apis/networking.istio.io/v1")[0] == 404


def test_an_object_against_its_crd_schema_is_refused_as_the_api_server_words_it(api: FakeApi, kube: Kube) -> None:
    install_crds(api, *ISTIO_CRDS)
    invalid = {**VS, "spec": {"hosts": "reviews", "http": [{"route": [{"destination": {}}]}]}}
    code, body, _ = apply(api, VS_PATH, invalid)
    assert code == 422 and body["reason"] == "Invalid" and body["code"] == 422
    assert body["message"].startswith('VirtualService.networking.istio.io "reviews" is invalid: [')
    assert body["details"]["name"] == "reviews" and body["details"]["group"] == "networking.istio.io"
    causes = {c["field"]: c for c in body["details"]["causes"]}
    assert causes["spec.hosts"]["reason"] == "FieldValueInvalid"
    assert causes["spec.http[0].route[0].destination.host"] == {
        "reason": "FieldValueRequired", "message": "Required value", "field": "spec.http[0].route[0].destination.host"}
    assert VS_PATH not in api.objects
    with pytest.raises(ConformanceError, match="HTTP 422 .*is invalid"):
        kube.apply([invalid], "bookinfo")


def test_an_undeclared_field_is_pruned_with_a_warning_or_refused_when_strict(api: FakeApi) -> None:
    install_crds(api, *ISTIO_CRDS)
    typo = {**VS, "spec": {**VS["spec"], "htttp": []}}
    code, body, _ = apply(api, VS_PATH, typo, fieldValidation="Strict")
    assert code == 400 and "strict decoding error: unknown field \"spec.htttp\"" in body["message"]
    code, body, headers = apply(api, VS_PATH, typo)
    assert code == 201 and "htttp" not in body["spec"]
    assert headers["Warning"] == '299 - "unknown field \"spec.htttp\""'


def test_create_of_a_taken_name_is_already_exists(api: FakeApi) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bookinfo"}}
    assert raw(api, "POST", "/api/v1/namespaces", namespace)[0] == 201
    code, body, _ = raw(api, "POST", "/api/v1/namespaces", namespace)
    assert (code, body["reason"], body["message"]) == (409, "AlreadyExists", 'namespaces "bookinfo" already exists')


def test_apply_conflicts_with_another_manager_unless_forced(api: FakeApi) -> None:
    path = "/api/v1/namespaces/istio-system/configmaps/mesh"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh"}, "data": {"mesh": "a"}}
    assert apply(api, path, config, manager="istioctl")[0] == 201
    assert apply(api, path, config)[0] == 200  # the same value: shared, no conflict
    changed = {**config, "data": {"mesh": "b"}}
    code, body, _ = apply(api, path, changed)
    assert code == 409 and body["reason"] == "Conflict"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "istioctl": .data.mesh'
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "istioctl"',
                                          "field": ".data.mesh"}]
    code, body, _ = apply(api, path, changed, force="true")  # what meshconf sends (kube.py)
    assert code == 200 and body["data"] == {"mesh": "b"}
    owners = {f["manager"]: f["fieldsV1"] for f in body["metadata"]["managedFields"]}
    assert owners == {"meshconf": {"f:data": {"f:mesh": {}}}}


def test_a_load_balancer_gets_no_address_on_kind(api: FakeApi) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw"},
               "spec": {"type": "LoadBalancer", "ports": [{"name": "http2", "port": 80}]}}
    code, body, _ = apply(api, "/api/v1/namespaces/istio-system/services/gw", service)
    assert code == 201 and body["spec"]["clusterIP"]
    assert 30000 <= body["spec"]["ports"][0]["nodePort"] <= 32767
    assert body["status"] == {"loadBalancer": {}}
    taken = {**service, "metadata": {"name": "other"},
             "spec": {"type": "NodePort", "ports": [{"name": "http2", "port": 80,
                                                     "nodePort": body["spec"]["ports"][0]["nodePort"]}]}}
    code, body, _ = apply(api, "/api/v1/namespaces/istio-system/services/other", taken)
    assert code == 422 and "provided port is already allocated" in body["message"]


# --- helm --wait waits as Helm does --------------------------------------------------------------


def helm_gateway(fake: FakeTools, kubeconfig: Path, *sets: str, timeout: str = "1s") -> subprocess.CompletedProcess[str]:
    return run(fake, "helm", "upgrade", "--install", "istio-ingressgateway", "gateway", "--namespace",
               "istio-system", "--create-namespace", "--kubeconfig", str(kubeconfig), *sets,
               "--wait", "--timeout", timeout)


def test_helm_wait_on_a_load_balancer_without_an_address_runs_out_of_time(
        fake_tools: FakeTools, api: FakeApi, tmp_path: Path) -> None:
    done = helm_gateway(fake_tools, write_kubeconfig(tmp_path / "kc", api.port))
    assert (done.returncode, done.stderr) == (1, "Error: context deadline exceeded\n")
    assert done.stdout == 'Release "istio-ingressgateway" does not exist. Installing it now.\n'
    service = api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"]
    assert service["spec"]["type"] == "LoadBalancer"  # the gateway chart's default
    assert [p["port"] for p in service["spec"]["ports"]] == [15021, 80, 443]
    assert service["spec"]["selector"] == {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    assert fake_tools.state()["helm_releases"]["istio-system/istio-ingressgateway"]["status"] == "failed"


def test_helm_wait_on_a_node_port_is_done_at_once(fake_tools: FakeTools, api: FakeApi, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kc", api.port)
    done = helm_gateway(fake_tools, kubeconfig, "--set", "service.type=NodePort", timeout="30s")
    assert done.returncode == 0, done.stderr
    assert "STATUS: deployed" in done.stdout
    done = run(fake_tools, "helm", "uninstall", "istio-ingressgateway", "-n", "istio-system",
               "--kubeconfig", str(kubeconfig))
    assert done.stdout == 'release "istio-ingressgateway" uninstalled\n'
    assert "/api/v1/namespaces/istio-system/services/istio-ingressgateway" not in api.objects
    done = run(fake_tools, "helm", "uninstall", "istio-ingressgateway", "-n", "istio-system",
               "--kubeconfig", str(kubeconfig))
    assert (done.returncode, done.stderr) == (
        1, "Error: uninstall: Release not loaded: istio-ingressgateway: release: not found\n")


def test_helm_needs_a_cluster_it_can_reach(fake_tools: FakeTools, tmp_path: Path) -> None:
    done = helm_gateway(fake_tools, write_kubeconfig(tmp_path / "kc", 1))
    assert done.returncode == 1 and done.stderr.startswith("Error: Kubernetes cluster unreachable: Get ")


# --- the API server: dry runs, typed lists, admission webhooks, a Deployment's pods -------------

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}
PODS = "/api/v1/namespaces/apps/pods"


def test_a_dry_run_create_answers_the_object_and_stores_nothing(api: FakeApi) -> None:
    code, body, _ = raw(api, "POST", PODS, POD, dryRun="All")
    assert code == 201 and body["metadata"]["name"].startswith("web-") and len(body["metadata"]["name"]) == 9
    assert body["metadata"]["uid"] and body["metadata"]["namespace"] == "apps"
    assert "resourceVersion" not in body["metadata"]
    assert api.objects == {}
    code, body, _ = raw(api, "POST", PODS, POD, dryRun="Yes")  # only All exists (metav1.DryRunAll)
    assert (code, body["reason"], body["message"]) == (422, "Invalid", 'CreateOptions.meta.k8s.io "" is invalid: '
                                                       'dryRun: Unsupported value: []string{"Yes"}: supported values: "All"')
    assert body["details"]["causes"] == [{"reason": "FieldValueNotSupported", "field": "dryRun",
                                          "message": 'Unsupported value: []string{"Yes"}: supported values: "All"'}]
    code, body, _ = apply(api, f"{PODS}/web", {**POD, "metadata": {"name": "web"}}, dryRun="All")
    assert code == 405 and "not modelled" in body["message"]  # loudly: a dry-run apply is not modelled
    assert api.objects == {}


def test_a_built_in_kinds_list_items_carry_no_kind_a_crds_do(api: FakeApi) -> None:
    install_crds(api, *ISTIO_CRDS)
    assert raw(api, "POST", PODS, {**POD, "metadata": {"name": "web"}})[0] == 201
    assert apply(api, VS_PATH, VS)[0] == 201
    [pod] = raw(api, "GET", PODS)[1]["items"]
    assert "kind" not in pod and "apiVersion" not in pod and pod["metadata"]["name"] == "web"
    [vs] = raw(api, "GET", VS_PATH.rsplit("/", 1)[0])[1]["items"]
    assert (vs["apiVersion"], vs["kind"]) == ("networking.istio.io/v1", "VirtualService")
    assert raw(api, "GET", f"{PODS}/web")[1]["kind"] == "Pod"  # a single object carries its kind


@dataclass
class Hooks:
    """A webhook server of the tests' own: its response fields (`replies`) and the reviews it got."""

    replies: dict[str, Any]
    seen: list[dict[str, Any]]


@pytest.fixture
def hooks(api: FakeApi, ca: MeshCA, tmp_path: Path) -> Iterator[Hooks]:
    """The webhook server behind Service tests/hooks, which the fake API resolves; allowing until a
    test changes its replies."""
    replies: dict[str, Any] = {"allowed": True}
    server = WebhookServer(ca, "hooks.tests.svc", lambda review: (200, answer_of(review, **replies)), tmp_path)
    api.webhook_services[("tests", "hooks", 443)] = server.address
    yield Hooks(replies, server.seen)
    server.close()


def store_configuration(api: FakeApi, kind: str, ca: MeshCA, **fields: Any) -> None:
    trusted = {"service": {"namespace": "tests", "name": "hooks", "path": "/hook"},
               "caBundle": base64.b64encode(ca.root_pem.encode()).decode()}
    doc = configuration_doc(kind, hook_doc(clientConfig=trusted, **fields))
    code, body, _ = raw(api, "POST", f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s", doc)
    assert code == 201, body


def test_a_webhooks_denial_is_the_api_servers_400_and_nothing_is_stored(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    hooks.replies.update(allowed=False, status={"message": "no pods today"})
    code, body, _ = raw(api, "POST", PODS, POD)
    # ToStatusErr: the webhook set no code, so 400; its message after the API server's words.
    assert (code, body) == (400, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": 'admission webhook "hook.tests.example.com" denied the request: '
                                             "no pods today", "code": 400})
    assert hooks.seen[0]["request"]["operation"] == "CREATE" and not any("/pods/" in p for p in api.objects)
    assert raw(api, "POST", PODS, POD, dryRun="All")[0] == 400  # a dry run is admitted too


def test_a_webhook_that_cannot_be_called_fails_the_request_under_failure_policy_fail(
        api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    everything = [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]
    store_configuration(api, "MutatingWebhookConfiguration", ca, rules=everything)
    api.webhook_services.clear()
    code, body, _ = raw(api, "POST", PODS, POD)
    assert (code, body["reason"]) == (500, "InternalError")
    assert body["message"] == ('Internal error occurred: failed calling webhook "hook.tests.example.com": '
                               'service "hooks" not found')
    # Webhook configurations themselves are never admitted by webhooks: this one goes in.
    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    assert hooks.seen == []


def test_webhooks_mutate_before_the_schema_and_validate_after_it(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    install_crds(api, *ISTIO_CRDS)
    rules = [{"operations": ["CREATE"], "apiGroups": ["networking.istio.io"], "apiVersions": ["*"],
              "resources": ["*"]}]
    store_configuration(api, "MutatingWebhookConfiguration", ca, rules=rules)
    store_configuration(api, "ValidatingWebhookConfiguration", ca, rules=rules)
    invalid = {**VS, "spec": {"hosts": "reviews", "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}
    code, body, _ = apply(api, VS_PATH, invalid)
    assert (code, body["reason"]) == (422, "Invalid")
    assert len(hooks.seen) == 1  # the mutating webhook only: validating webhooks never see a schema refusal
    assert apply(api, VS_PATH, VS)[0] == 201 and len(hooks.seen) == 3


def test_a_deployment_runs_its_pods_through_admission(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    api.deployments_roll_out = True
    template = {"metadata": {"labels": {"app": "web"}}, "spec": POD["spec"]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}}
    path = "/apis/apps/v1/namespaces/apps/deployments/web"
    code, body, _ = apply(api, path, deployment)
    assert code == 201 and body["status"]["availableReplicas"] == 2
    pods = raw(api, "GET", PODS)[1]["items"]
    assert len(pods) == 2 and all(p["metadata"]["name"].startswith("web-") for p in pods)
    assert all(p["status"]["conditions"][0] == {"type": "Ready", "status": "True"} for p in pods)
    assert raw(api, "DELETE", path)[0] == 200 and raw(api, "GET", PODS)[1]["items"] == []  # garbage-collected

    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    hooks.replies.update(allowed=False, status={"message": "no pods today"})
    code, body, _ = apply(api, path, deployment)
    assert code == 201 and body["status"]["availableReplicas"] == 0  # applied, but its pods are refused
    [condition] = body["status"]["conditions"]
    assert (condition["type"], condition["reason"]) == ("ReplicaFailure", "FailedCreate")
    assert "no pods today" in condition["message"] and raw(api, "GET", PODS)[1]["items"] == []
