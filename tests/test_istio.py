"""conformance.targets.istio without a cluster: fake istioctl/helm, a local HTTP server, tmp files.

The fakes are tests/fakes/bin/istioctl and helm (see tests/fakes/engine/): only they
are on PATH, each call is logged, and the scenario says what each subcommand answers.
"""

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError, NotConverged, TargetUnavailable
from conformance.targets import istio
from conformance.targets.istio import IstioInstall
from conformance.targets.istio_revision import Revision
from conformance.targets import crd_schema
from tests.cluster_builders import write_kubeconfig
from tests.fakeapi import FakeApi
from tests.fakes import FakeTools

KUBECONFIG = Path("/tmp/meshconf-run/kubeconfig")
REPO = "https://istio-release.storage.googleapis.com/charts"

# Every istioctl subcommand the module runs, answering success (the fake helm acts on the fake API).
HEALTHY: dict[str, Any] = {
    "istioctl": {"install": {"stdout": "\u2714 Installation complete\n"}, "uninstall": {}},
}
GATEWAY_SERVICE = "/api/v1/namespaces/istio-system/services/istio-ingressgateway"


def _answer(fake: FakeTools, tool: str, subcommand: str, **spec: Any) -> None:
    current = json.loads(fake.scenario_path.read_text())
    current.setdefault(tool, {})[subcommand] = spec
    fake.set_scenario(current)


def _processes_under(directory: Path) -> list[str]:
    """Live processes whose command line names directory (the fakes run from there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if proc.name.isdigit() and state != "Z" and str(directory) in args:
            found.append(args)
    return found


def _install(**changes: Any) -> IstioInstall:
    return IstioInstall(**{"version": "1.28.2", "kubeconfig": KUBECONFIG, **changes})


# --- argv builders --------------------------------------------------------------------------


def test_istioctl_install_argv_defaults() -> None:
    assert _install().install_argv() == [
        "istioctl", "install", "--kubeconfig", str(KUBECONFIG),
        "--set", "profile=demo", "--readiness-timeout", "240s", "-y",
    ]


def test_istioctl_install_argv_everything() -> None:
    inst = _install(
        revision="canary", context="kind-meshconf", timeout=100,
        values={"meshConfig.accessLogFile": "/dev/stdout", "values.pilot.traceSampling": "100"},
        release_dir=Path("/cache/istio-1.28.2"),
    )
    assert inst.install_argv() == [
        "/cache/istio-1.28.2/bin/istioctl", "install",
        "--kubeconfig", str(KUBECONFIG), "--context", "kind-meshconf",
        "--set", "profile=demo", "--revision", "canary",
        "--set", "meshConfig.accessLogFile=/dev/stdout", "--set", "values.pilot.traceSampling=100",
        "--readiness-timeout", "80s", "-y",
    ]
    assert inst.install_argvs() == [inst.install_argv()]


def test_istioctl_uninstall_argv_purges_without_revision() -> None:
    assert _install(context="c").uninstall_argv() == [
        "istioctl", "uninstall", "--kubeconfig", str(KUBECONFIG), "--context", "c", "--purge", "-y",
    ]


def test_istioctl_uninstall_argv_removes_only_its_revision() -> None:
    argv = _install(revision="canary").uninstall_argv()
    assert argv == ["istioctl", "uninstall", "--kubeconfig", str(KUBECONFIG), "--revision", "canary", "-y"]
    assert "--purge" not in argv


def test_helm_install_argvs() -> None:
    inst = _install(method="helm", values={"meshConfig.accessLogFile": "/dev/stdout"})
    common = ["--repo", REPO, "--version", "1.28.2", "--namespace", "istio-system", "--create-namespace",
              "--kubeconfig", str(KUBECONFIG)]
    wait = ["--wait", "--timeout", "240s"]
    assert inst.helm_argvs() == [
        ["helm", "upgrade", "--install", "istio-base", "base", *common, *wait],
        ["helm", "upgrade", "--install", "istiod", "istiod", *common,
         "--set", "profile=demo", "--set", "meshConfig.accessLogFile=/dev/stdout", *wait],
        # No --wait: Helm would wait for a LoadBalancer address no controller may ever assign.
        ["helm", "upgrade", "--install", "istio-ingressgateway", "gateway", *common, "--timeout", "240s"],
    ]
    assert inst.install_argvs() == inst.helm_argvs()


def test_helm_argvs_with_revision_and_context() -> None:
    inst = _install(method="helm", revision="canary", context="kind-x")
    base, istiod, gateway = inst.helm_argvs()
    for argv in (base, istiod, gateway):
        assert argv[argv.index("--kubeconfig") + 1] == str(KUBECONFIG)
        assert argv[argv.index("--kube-context") + 1] == "kind-x"
        assert "--context" not in argv  # helm's flag is --kube-context
    assert base[3] == "istio-base" and "defaultRevision=canary" in base
    assert istiod[3] == "istiod-canary" and "revision=canary" in istiod
    assert "revision=canary" in gateway


def test_helm_gateway_service_type_is_set_on_the_gateway_chart_only() -> None:
    base, istiod, gateway = _install(method="helm", gateway_service_type="NodePort").helm_argvs()
    assert gateway[gateway.index("--set") + 1] == "service.type=NodePort"
    assert "service.type=NodePort" not in base + istiod
    assert not any(a.startswith("service.type") for a in sum(_install(method="helm").helm_argvs(), []))
    assert _install(gateway_service_type="NodePort").install_argvs() == [_install().install_argv()]


def test_a_revision_by_istioctl_is_the_minimal_profile_and_removed_by_revision() -> None:
    inst = _install(context="c", values={"meshConfig.accessLogFile": "/dev/stdout"})
    cluster = ["--kubeconfig", str(KUBECONFIG), "--context", "c"]
    # The demo profile's requests, not the chart's (pilot 500m/2048Mi, 100m/128Mi a proxy): a second
    # istiod must fit on the 2-CPU kind node beside the first.
    assert Revision(inst, "canary").install_argvs() == [[
        "istioctl", "install", *cluster, "--set", "profile=minimal", "--revision", "canary",
        "--set", "values.pilot.resources.requests.cpu=10m", "--set", "values.pilot.resources.requests.memory=100Mi",
        "--set", "values.global.proxy.resources.requests.cpu=10m",
        "--set", "values.global.proxy.resources.requests.memory=40Mi",
        "--set", "meshConfig.accessLogFile=/dev/stdout", "--readiness-timeout", "240s", "-y"]]
    assert Revision(inst, "canary").uninstall_argvs() == [
        ["istioctl", "uninstall", *cluster, "--revision", "canary", "-y"]]
    # The mesh's own installation is unchanged.
    assert inst.values == {"meshConfig.accessLogFile": "/dev/stdout"} and inst.profile == "demo"


def test_a_revision_by_helm_is_the_istiod_chart_alone() -> None:
    inst = _install(method="helm", context="c")
    cluster = ["--namespace", "istio-system", "--create-namespace", "--kubeconfig", str(KUBECONFIG),
               "--kube-context", "c"]
    # No base chart: its defaultRevision would point the default validator at the new revision.
    assert Revision(inst, "canary").install_argvs() == [[
        "helm", "upgrade", "--install", "istiod-canary", "istiod", "--repo", REPO, "--version", "1.28.2", *cluster,
        "--set", "revision=canary", "--set", "pilot.resources.requests.cpu=10m",
        "--set", "pilot.resources.requests.memory=100Mi", "--set", "global.proxy.resources.requests.cpu=10m",
        "--set", "global.proxy.resources.requests.memory=40Mi", "--wait", "--timeout", "240s"]]
    assert Revision(inst, "canary").uninstall_argvs() == [
        ["helm", "uninstall", "istiod-canary", "--namespace", "istio-system", "--kubeconfig", str(KUBECONFIG),
         "--kube-context", "c"]]


@pytest.mark.parametrize(("method", "key"), [("istioctl", "values.pilot.resources.requests.cpu"),
                                             ("helm", "pilot.resources.requests.cpu")])
def test_a_revision_takes_the_meshs_own_value_over_the_demo_request(method: str, key: str) -> None:
    [argv] = Revision(_install(method=method, values={key: "200m"}), "canary").install_argvs()
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert [s for s in sets if s.startswith(f"{key}=")] == [f"{key}=200m"]
    assert f"{key.replace('cpu', 'memory')}=100Mi" in sets  # the other requests stay


def test_helm_uninstall_argvs_reverse_order() -> None:
    inst = _install(method="helm", context="c")
    cluster = ["--namespace", "istio-system", "--kubeconfig", str(KUBECONFIG), "--kube-context", "c"]
    assert inst.uninstall_argvs() == [
        ["helm", "uninstall", "istio-ingressgateway", *cluster],
        ["helm", "uninstall", "istiod", *cluster],
        ["helm", "uninstall", "istio-base", *cluster],
    ]


def test_every_command_names_the_kubeconfig() -> None:
    for method in ("istioctl", "helm"):
        inst = _install(method=method)
        for argv in inst.install_argvs() + inst.uninstall_argvs():
            assert argv[argv.index("--kubeconfig") + 1] == str(KUBECONFIG), argv


def test_plan_is_shell_lines() -> None:
    inst = _install(values={"meshConfig.defaultConfig.proxyMetadata.X": "a b"})
    assert inst.plan() == [(
        f"istioctl install --kubeconfig {KUBECONFIG} --set profile=demo "
        "--set 'meshConfig.defaultConfig.proxyMetadata.X=a b' --readiness-timeout 240s -y"
    )]


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ConformanceError, match="unknown Istio install method 'kubectl'"):
        _install(method="kubectl")


# --- running through the fakes --------------------------------------------------------------


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_istioctl_install_and_uninstall_run(fake_tools: FakeTools) -> None:
    inst = _install(revision="r1", context="c")
    inst.install()
    inst.uninstall()
    assert fake_tools.all_calls() == [inst.install_argv(), inst.uninstall_argv()]


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_helm_install_runs_three_releases_and_uninstall_removes_them(fake_tools: FakeTools, api: FakeApi,
                                                                     tmp_path: Path) -> None:
    inst = _install(method="helm", kubeconfig=write_kubeconfig(tmp_path / "kc", api.port),
                    gateway_service_type="NodePort")
    inst.install()
    assert fake_tools.calls("helm") == inst.helm_argvs()
    assert [argv[3:5] for argv in fake_tools.calls("helm")] == [
        ["istio-base", "base"], ["istiod", "istiod"], ["istio-ingressgateway", "gateway"]]
    assert api.objects[GATEWAY_SERVICE]["spec"]["type"] == "NodePort"
    inst.uninstall()
    assert GATEWAY_SERVICE not in api.objects and fake_tools.state()["helm_releases"] == {}


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_istioctl_timeout_is_a_clear_error_and_cleanup_still_runs(fake_tools: FakeTools) -> None:
    _answer(fake_tools, "istioctl", "install", sleep=30)
    inst = _install(timeout=1)
    started = time.monotonic()
    with pytest.raises(ConformanceError, match=r"^istioctl install did not finish within 1s"):
        try:
            inst.install()
        finally:
            inst.uninstall()  # the caller's cleanup, as the run's teardown does it
    assert time.monotonic() - started < 15
    assert [argv[1] for argv in fake_tools.all_calls()] == ["install", "uninstall"]
    assert _processes_under(fake_tools.bin_dir) == []  # the sleeping fake was killed, not left behind


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_failing_install_names_the_error(fake_tools: FakeTools) -> None:
    _answer(fake_tools, "istioctl", "install", exit=1, stdout="- Processing resources for Istiod.\n",
            stderr="Istiod encountered an error: failed to wait for resource: resources not ready after 4m0s\n"
                   "Error: failed to install manifests: errors occurred during operation\n")
    with pytest.raises(ConformanceError) as caught:
        _install().install()
    message = str(caught.value)
    assert message.startswith("istioctl install failed (exit 1): Error: failed to install manifests")
    assert "\n" not in message


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_helm_failure_stops_before_the_next_chart(fake_tools: FakeTools, api: FakeApi, tmp_path: Path) -> None:
    _answer(fake_tools, "helm", "upgrade --install istiod", exit=1, stderr="Error: context deadline exceeded\n")
    with pytest.raises(ConformanceError, match=r"helm upgrade failed \(exit 1\): Error: context deadline exceeded"):
        _install(method="helm", kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)).install()
    assert [argv[3] for argv in fake_tools.calls("helm")] == ["istio-base", "istiod"]


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_helm_uninstall_tolerates_missing_releases_and_tries_all(fake_tools: FakeTools, api: FakeApi,
                                                                 tmp_path: Path) -> None:
    # Nothing was installed: helm answers "release: not found" for each; istiod's call fails otherwise.
    _answer(fake_tools, "helm", "uninstall istiod", exit=1, stderr="Error: Kubernetes cluster unreachable\n")
    with pytest.raises(ConformanceError, match="Kubernetes cluster unreachable"):
        _install(method="helm", kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)).uninstall()
    assert [argv[2] for argv in fake_tools.calls("helm")] == ["istio-ingressgateway", "istiod", "istio-base"]


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_helm_missing_from_path(fake_tools: FakeTools) -> None:
    fake_tools.remove("helm")
    with pytest.raises(TargetUnavailable, match=r"^helm is not installed \(not on PATH\): install Helm 3"):
        _install(method="helm").install()
    assert fake_tools.all_calls() == []


@pytest.mark.parametrize("scenario", [HEALTHY])
def test_istioctl_missing_from_path(fake_tools: FakeTools) -> None:
    fake_tools.remove("istioctl")
    with pytest.raises(TargetUnavailable, match=r"^istioctl is not installed \(not on PATH\): let the harness download"):
        _install().install()


def test_istioctl_missing_from_release(tmp_path: Path) -> None:
    with pytest.raises(TargetUnavailable, match=r"istioctl is not installed: the Istio release is incomplete"):
        _install(release_dir=tmp_path / "istio-1.28.2").install()


def test_runner_is_injectable() -> None:
    seen: list[tuple[list[str], float]] = []

    def runner(argv: Any, timeout: float) -> Any:
        import subprocess

        seen.append((list(argv), timeout))
        return subprocess.CompletedProcess(argv, 0, "", "")

    inst = _install(method="helm", timeout=42)
    inst.install(runner)
    assert [argv for argv, _ in seen] == inst.helm_argvs()
    assert {timeout for _, timeout in seen} == {42}


# --- addons ---------------------------------------------------------------------------------

# Same shape as istio/istio samples/addons/prometheus.yaml: several documents, the
# ConfigMap `prometheus` holding prometheus.yml as a string with a global section
# and per-job intervals (the "slow" jobs use 5m).
_PROMETHEUS_YML = (Path(__file__).parent / "data" / "prometheus.yml").read_text()


def _addon_release(tmp_path: Path) -> Path:
    release = tmp_path / "istio-1.28.2"
    addons = release / "samples" / "addons"
    addons.mkdir(parents=True)
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus", "namespace": "istio-system"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prometheus", "namespace": "istio-system"},
         "data": {"allow-snippet-annotations": "false", "prometheus.yml": _PROMETHEUS_YML, "rules": "{}\n"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "prometheus", "namespace": "istio-system"},
         "spec": {"ports": [{"name": "http", "port": 9090}]}},
    ]
    (addons / "prometheus.yaml").write_text("---\n" + yaml.safe_dump_all(docs, sort_keys=False) + "---\n")
    (addons / "kiali.yaml").write_text("kind: Service\n")
    return release


def test_prometheus_addon_scrapes_every_5s(tmp_path: Path) -> None:
    docs = istio.addons(_addon_release(tmp_path))
    # Prometheus's documents in upstream's order, then Kiali's.
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ConfigMap", "Service", "Service"]
    config = yaml.safe_load(docs[1]["data"]["prometheus.yml"])
    assert config["global"] == {"evaluation_interval": "1m", "scrape_interval": "5s", "scrape_timeout": "5s"}
    # Only the global section changes; a job's own interval stays.
    assert config["scrape_configs"][1]["scrape_interval"] == "5m"
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["localhost:9090"]}]
    assert docs[1]["data"]["rules"] == "{}\n"


def test_prometheus_addon_without_configmap(tmp_path: Path) -> None:
    release = _addon_release(tmp_path)
    (release / "samples/addons/prometheus.yaml").write_text("kind: Service\nmetadata: {name: prometheus}\n")
    with pytest.raises(ConformanceError, match="no ConfigMap 'prometheus' with data 'prometheus.yml'"):
        istio.addons(release)


def test_addons_from_an_incomplete_or_broken_release(tmp_path: Path) -> None:
    release = _addon_release(tmp_path)
    (release / "samples/addons/kiali.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ConformanceError, match="kiali.yaml: malformed YAML"):
        istio.addons(release)
    (release / "samples/addons/kiali.yaml").unlink()
    with pytest.raises(ConformanceError, match="addon manifest missing: .*kiali.yaml .*a complete Istio release"):
        istio.addons(release)


# --- readiness ------------------------------------------------------------------------------


def test_invalid_virtualservice_passes_the_schema_but_is_invalid_for_istio() -> None:
    docs = manifests.load(istio.INVALID_VIRTUALSERVICE)
    assert len(docs) == 1
    doc = docs[0]
    assert doc["kind"] == "VirtualService"
    assert crd_schema.schema_set().validate(doc) == []
    # What Istio's webhook refuses: one HTTP route with both route and redirect.
    assert len(doc["spec"]["http"]) == 1
    assert {"route", "redirect"} <= set(doc["spec"]["http"][0])


DENIED = ('error when creating "invalid-virtualservice.yaml": admission webhook "validation.istio.io" '
          "denied the request: configuration is invalid: HTTP route cannot contain both route and redirect")


def test_webhook_wait_retries_until_refused() -> None:
    events: list[str] = []
    answers = iter(["accept", "unreachable", "accept", "deny"])

    def apply_invalid() -> None:
        answer = next(answers)
        events.append(f"apply:{answer}")
        if answer == "unreachable":
            raise RuntimeError('Internal error occurred: failed calling webhook "validation.istio.io": connection refused')
        if answer == "deny":
            raise RuntimeError(DENIED)

    istio.wait_validation_webhook(apply_invalid, lambda: events.append("delete"), timeout=10, interval=0.01)
    assert events == ["apply:accept", "delete", "apply:unreachable", "apply:accept", "delete", "apply:deny"]


def test_webhook_wait_times_out_with_the_last_observation() -> None:
    deletes: list[int] = []
    with pytest.raises(NotConverged, match="invalid VirtualService was accepted .*is istiod running"):
        istio.wait_validation_webhook(lambda: None, lambda: deletes.append(1), timeout=0.2, interval=0.05)
    assert deletes  # every accepted copy was removed again
