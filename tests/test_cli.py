"""Bad input gives one line, a non-zero exit, and starts nothing."""

import shutil
from pathlib import Path

import pytest

from conformance.manifests import manifests_dir
from tests.builders import WHOLE_MESH, mesh_processes, meshconf

pytestmark = WHOLE_MESH


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("meshconf: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def broken_manifests(tmp_path: Path) -> Path:
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    return copy


def run_local(tmp_path: Path, manifests: Path | None = None, *extra: str):  # type: ignore[no-untyped-def]
    env = {"MESHCONF_MANIFESTS": str(manifests)} if manifests else {}
    return meshconf(["run", "--target", "local", *extra], cwd=tmp_path, env=env, timeout=120)


def test_unknown_target(tmp_path: Path) -> None:
    done = meshconf(["run", "--target", "minikube"], cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown target 'minikube'" in one_error_line(done.stderr)


def test_kubeconfig_target_needs_a_context(tmp_path: Path) -> None:
    done = meshconf(["run", "--target", "kubeconfig"], cwd=tmp_path)
    assert done.returncode == 2
    assert "needs --context NAME" in one_error_line(done.stderr)


def test_kubeconfig_target_refuses_to_install_without_consent(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\ncontexts:\n- name: prod\n  context: {cluster: c, user: u}\n")
    done = meshconf(["run", "--target", "kubeconfig", "--context", "prod", "--install-mesh"], cwd=tmp_path,
                    env={"KUBECONFIG": str(config)})
    assert done.returncode == 2
    assert "refusing to install Istio" in one_error_line(done.stderr) and "--yes" in done.stderr
    missing = meshconf(["run", "--target", "kubeconfig", "--context", "staging"], cwd=tmp_path,
                       env={"KUBECONFIG": str(config)})
    assert "context 'staging' is not in" in one_error_line(missing.stderr)


@pytest.mark.parametrize(("flag", "value", "text"), [
    ("--feature", "Teleport", "unknown feature 'Teleport'"),
    ("--profile", "MESH-MAGIC", "unknown profile 'MESH-MAGIC'"),
    ("--local-mutant", "no-such-defect", "unknown local mutant(s) no-such-defect"),
])
def test_unknown_names(tmp_path: Path, flag: str, value: str, text: str) -> None:
    done = run_local(tmp_path, None, flag, value)
    assert done.returncode == 2
    assert text in one_error_line(done.stderr)


def test_malformed_yaml(tmp_path: Path, broken_manifests: Path) -> None:
    path = broken_manifests / "bookinfo" / "bookinfo.yaml"
    path.write_text(path.read_text() + "\n---\nkind: Service\nmetadata: {name: [unclosed\n")
    done = run_local(tmp_path, broken_manifests)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "bookinfo.yaml:" in line and "malformed YAML" in line
    assert not (tmp_path / ".meshconf").exists()
    assert mesh_processes(str(tmp_path)) == []


def test_unknown_image(tmp_path: Path, broken_manifests: Path) -> None:
    path = broken_manifests / "bookinfo" / "bookinfo.yaml"
    path.write_text(path.read_text().replace("examples-bookinfo-ratings-v1:", "examples-bookinfo-ratings-v9:"))
    done = run_local(tmp_path, broken_manifests)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "examples-bookinfo-ratings-v9" in line and "ratings-v1" in line  # the image and the Deployment
    assert mesh_processes(str(tmp_path)) == []


def test_unimplemented_field(tmp_path: Path, broken_manifests: Path) -> None:
    path = broken_manifests / "istio" / "traffic" / "virtual-service-reviews-v3.yaml"
    path.write_text(path.read_text().replace("  - route:", "  - mirror:\n      host: reviews\n    route:"))
    done = run_local(tmp_path, broken_manifests)
    assert done.returncode == 2
    assert "spec.http[0].mirror" in one_error_line(done.stderr)


def test_list(tmp_path: Path) -> None:
    done = meshconf(["list"], cwd=tmp_path)
    assert done.returncode == 0
    assert "RouteToVersion" in done.stdout and "MESH-INGRESS" in done.stdout
    mutants = meshconf(["list", "--mutants"], cwd=tmp_path)
    assert mutants.returncode == 0 and "swap-subsets" in mutants.stdout
