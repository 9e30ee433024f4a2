"""The GitHub Actions template (ci/github/meshconf.yml) cannot be run here: these tests check it
against GitHub's workflow schema (SchemaStore's, vendored by check-jsonschema) and against
meshconf itself: its matrix, its kind, its command line and the files it uploads."""

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import cli
from conformance.mesh_upgrade import LATEST_PATCHES
from conformance.settings import RunSettings
from conformance.targets import istio_support, kind
from tests.builders import REPO
from tests.fakes.engine.commands import load

WORKFLOW = REPO / "ci" / "github" / "meshconf.yml"


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120,
    )


def test_workflow_is_a_valid_github_workflow() -> None:
    done = schema_check(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_names_what_is_wrong_in_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    done = schema_check(broken)
    assert done.returncode == 1
    assert "runs-on" in done.stdout + done.stderr


def steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [job] = workflow["jobs"].values()
    return list(job["steps"])


def matrix() -> list[dict[str, str]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [job] = workflow["jobs"].values()
    return list(job["strategy"]["matrix"]["include"])


def step_using(action: str) -> dict[str, Any]:
    return next(s for s in steps() if str(s.get("uses", "")).startswith(action + "@"))


def with_entry(text: str, entry: dict[str, str]) -> str:
    """`text` with each ${{ matrix.<key> }} replaced by the entry's value (an unknown key fails)."""
    return re.sub(r"\$\{\{ matrix\.([\w-]+) \}\}", lambda m: entry[m.group(1)], text)


def entry_id(entry: dict[str, str]) -> str:
    return "-".join(f"{key}-{value}" for key, value in entry.items())


@pytest.mark.parametrize("entry", matrix(), ids=entry_id)
def test_matrix_pairs_are_supported_and_have_a_node_image(entry: dict[str, str]) -> None:
    assert entry["kubernetes"] in kind.NODE_IMAGES
    assert istio_support.check_support(entry["istio"], entry["kubernetes"]) is None  # refuses an unsupported pair
    # A patch release, not a minor's first: x.0 is the least fixed, and the first past its end of life.
    assert not entry["istio"].endswith(".0"), entry


def test_matrix_covers_every_supported_minor_and_both_install_methods() -> None:
    rows = matrix()
    istioctl = {istio_support.minor(e["istio"]) for e in rows if e["install-method"] == "istioctl"}
    assert istioctl == set(istio_support.SUPPORT_MATRIX)
    newest = max(istio_support.SUPPORT_MATRIX, key=lambda m: tuple(int(p) for p in m.split(".")))
    newest_kubernetes = istio_support.SUPPORT_MATRIX[newest][-1]
    for method in ("istioctl", "helm"):
        assert any(istio_support.minor(e["istio"]) == newest and e["kubernetes"] == newest_kubernetes
                   and e["install-method"] == method for e in rows), method
    # One artifact per job: the names tell every row apart.
    name = step_using("actions/upload-artifact")["with"]["name"]
    assert len({with_entry(name, e) for e in rows}) == len(rows)


def test_kind_is_the_release_the_node_images_need() -> None:
    assert step_using("helm/kind-action")["with"]["version"] == kind.KIND_VERSION


def test_helm_is_the_release_the_fake_helm_models() -> None:
    # meshconf's Helm command lines are checked against flags read in helm/helm at one tag: the
    # runner must not use another Helm (its own, or Helm 4).
    install = step_using("azure/setup-helm")
    assert install["with"]["version"] == load("helm")["provenance"]["tag"]
    run = next(i for i, s in enumerate(steps()) if "meshconf run" in str(s.get("run", "")))
    assert steps().index(install) < run


def test_the_default_istio_is_the_patch_the_matrix_runs_for_its_minor() -> None:
    default = RunSettings().istio_version
    assert [e["istio"] for e in matrix() if istio_support.minor(e["istio"]) == istio_support.minor(default)] == \
        [default]


@pytest.mark.parametrize("entry", matrix(), ids=entry_id)
def test_run_step_is_a_meshconf_command_and_the_upload_takes_what_it_writes(entry: dict[str, str]) -> None:
    run = next(s["run"] for s in steps() if "meshconf run" in str(s.get("run", "")))
    program, *argv = shlex.split(with_entry(run, entry))
    assert program == ".venv/bin/meshconf"
    args = cli.parser().parse_args(argv)  # an unknown flag, or an install method it does not know, exits here
    assert (args.command, args.target, args.istio_version, args.kubernetes_version, args.install_method) == \
        ("run", "kind", entry["istio"], entry["kubernetes"], entry["install-method"])

    results = Path(args.results)
    written = {results / "report.yaml", results / "junit.xml", results / "allure",
               RunSettings(report=results / "report.yaml").debug_dir.relative_to(Path.cwd())}
    upload = step_using("actions/upload-artifact")
    assert upload["if"] == "always()"  # a failed run's results are the ones that matter
    assert {Path(p) for p in upload["with"]["path"].split()} == written


def test_meshconf_is_installed_with_pip_not_from_a_checkout() -> None:
    install = next(s["run"] for s in steps() if "pip install" in str(s.get("run", "")))
    assert install.endswith('pip install "$MESHCONF_PACKAGE"') and "-e" not in install.split()
    package = yaml.safe_load(WORKFLOW.read_text())["jobs"]["conformance"]["env"]["MESHCONF_PACKAGE"]
    assert package.startswith("mesh-conformance")
    assert not any(s.get("with", {}).get("submodules") for s in steps())


def test_the_matrix_runs_the_patch_meshupgrade_knows_for_each_minor() -> None:
    assert {istio_support.minor(e["istio"]): e["istio"] for e in matrix()} == LATEST_PATCHES
