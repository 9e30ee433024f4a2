"""The cluster-side CLI on a machine without Docker: doctor, run --plan, up/down refusals.

Real `meshconf` processes with only fake tools on PATH (tests/fakes).
"""

from pathlib import Path

import pytest

from tests.builders import meshconf
from tests.fakes import FakeTools

DOCKER_DOWN = {"docker": {"info": {"exit": 1, "stderr": "Cannot connect to the Docker daemon"}}}


@pytest.mark.parametrize("scenario", [DOCKER_DOWN])
def test_doctor_names_docker_and_the_fix(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["doctor"], cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    docker = next(i for i, line in enumerate(lines) if line.startswith("FAIL docker"))
    assert "Cannot connect to the Docker daemon" in lines[docker]
    assert lines[docker + 1].strip().startswith("fix: start the Docker engine")
    assert lines[-1].endswith("prerequisites met")


def test_doctor_passes_when_everything_is_there(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.set_scenario({"kind": {"version": {"stdout": "kind v0.32.0 go1.24.2 linux/amd64\n"}}})
    done = meshconf(["doctor"], cwd=tmp_path)
    docker = next(line for line in done.stdout.splitlines() if "docker" in line)
    assert docker.startswith("ok")


@pytest.mark.parametrize("scenario", [DOCKER_DOWN])
def test_plan_prints_and_runs_nothing(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--plan", "--istio-version", "1.28.0",
                     "--kubernetes-version", "1.34", "--ingress-port", "18080"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "hostPort: 18080" in text and "answers http://127.0.0.1:18080 (host readiness.meshconf.test)" in text
    # Only what suites apply is listed as such: provisioning's and the local mesh's own are not.
    listed = text.split("# manifests the suites apply")[1]
    assert "local/ingressgateway.yaml" not in listed and "istio/readiness/" not in listed
    assert "apiVersion: kind.x-k8s.io/v1alpha4" in text and "listenAddress: 127.0.0.1" in text
    assert "kind create cluster --name meshconf" in text and "--retain" in text and "--kubeconfig" in text
    assert "istioctl install --kubeconfig" in text and "--set profile=demo" in text
    assert "bookinfo/bookinfo.yaml: Service/details" in text
    # RevisionInjection's second control plane: installed and removed by revision, istiod only.
    revision = text.split("# RevisionInjection: a second control plane, revision canary, istiod only")[1]
    install, uninstall = revision.splitlines()[1:3]
    assert install.endswith("install --kubeconfig " + str(tmp_path / ".meshconf" / "kind-meshconf" / "kubeconfig")
                            + " --set profile=minimal --revision canary"
                            " --set values.pilot.resources.requests.cpu=10m"
                            " --set values.pilot.resources.requests.memory=100Mi"
                            " --set values.global.proxy.resources.requests.cpu=10m"
                            " --set values.global.proxy.resources.requests.memory=40Mi --readiness-timeout 240s -y")
    assert uninstall.endswith(" uninstall --kubeconfig " + str(tmp_path / ".meshconf" / "kind-meshconf" / "kubeconfig")
                              + " --revision canary -y")
    # The suites' injection and validation manifests are listed with the objects they apply.
    assert "injection/pod-plain.yaml: Deployment/inject-probe" in listed
    assert "validation/vs-route-and-redirect.yaml: VirtualService/" in listed
    assert fake_tools.all_calls() == []  # nothing ran, not even docker info
    assert not (tmp_path / ".meshconf").exists()


def test_plan_refuses_an_unsupported_pair_without_force(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--istio-version", "1.26.0", "--kubernetes-version", "1.36"],
                    cwd=tmp_path)
    assert done.returncode == 2
    assert "no kind v0.32.0 node image" in done.stderr or "supports Kubernetes" in done.stderr


@pytest.mark.parametrize("scenario", [DOCKER_DOWN])
def test_run_on_kind_without_docker_fails_before_creating_anything(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind"], cwd=tmp_path)
    assert done.returncode == 2
    assert "docker" in done.stderr and "Traceback" not in done.stderr
    assert fake_tools.calls("kind") == [["kind", "version"]]  # preflight only: no create


def test_down_refuses_a_cluster_it_did_not_create(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.set_scenario({"state": {"kind": {"clusters": ["meshconf"]}}})
    done = meshconf(["down"], cwd=tmp_path)
    assert done.returncode == 2
    assert "meshconf deletes only clusters it created" in done.stderr
    assert fake_tools.calls("kind") == []
