"""The fake CLIs themselves (tests/fakes/): they must refuse what the real tools refuse, as those do.

A fake that accepts a flag the real tool lacks would let a broken command line pass every test.
So: each fake CLI refuses an unknown flag and an unknown subcommand with the real tool's words
and exit code; every command line meshconf builds passes the fakes' flag check (tests/fakes/
engine/flagcheck.py, flag data from each tool's source in tests/fakes/flags/); the fake helm waits
as Helm does. The fake API server's own tests are tests/test_fakeapi.py.
"""

import subprocess
from pathlib import Path

import pytest

from conformance.settings import Timeouts
from conformance.targets import istio, kind
from conformance.targets.istio import IstioInstall
from conformance.targets.istio_revision import REVISION_REQUESTS, Revision
from conformance.targets.preflight import docker_check
from tests.cluster_builders import write_kubeconfig
from tests.fakeapi import FakeApi
from tests.fakes import FakeTools
from tests.fakes.engine.commands import Parsed, load
from tests.fakes.engine.flagcheck import check


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
    istiod chart alone, each with the demo profile's requests; removed by revision (istioctl) or
    release (Helm)."""
    requests = [f"{key}={value}" for key, value in REVISION_REQUESTS.items()]
    istioctl = Revision(IstioInstall(version="1.28.2", kubeconfig=Path("/run/kc"), context=context,
                                     release_dir=Path("/cache/istio-1.28.2")), "canary")
    [install] = [accepted(argv) for argv in istioctl.install_argvs()]
    assert (install.path, install.value("revision"), install.flags["set"]) == (
        ("install",), "canary", ["profile=minimal", *(f"values.{r}" for r in requests)])
    [uninstall] = [accepted(argv) for argv in istioctl.uninstall_argvs()]
    assert (uninstall.path, uninstall.value("revision"), uninstall.has("purge")) == (("uninstall",), "canary", False)
    helm = Revision(IstioInstall(version="1.28.2", kubeconfig=Path("/run/kc"), method="helm", context=context),
                    "canary")
    [upgrade] = [accepted(argv) for argv in helm.install_argvs()]
    assert (upgrade.path, upgrade.args, upgrade.flags["set"]) == (("upgrade",), ["istiod-canary", "istiod"],
                                                                  ["revision=canary", *requests])
    [removal] = [accepted(argv) for argv in helm.uninstall_argvs()]
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
