"""The wheel carries everything a run needs, under the conformance package, and runs from anywhere."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conformance.report.report_schema import SCHEMA_DIR
from conformance.targets.crd_schema import CRD_DIR, crd_files
from tests.builders import REPO, WHOLE_MESH

pytestmark = WHOLE_MESH

# Where each installed package lives in a checkout (pyproject.toml's package-dir).
SOURCES = {"conformance": "conformance", "conformance/suites": "suites", "conformance/fixtures": "fixtures",
           "conformance/manifests_data": "manifests"}
PROJECT_FILES = ("pyproject.toml", "README.md", *sorted(set(SOURCES.values())))


def expected_files() -> set[str]:
    """Every .py, .sh and .yaml file of the checkout's packages, by its path in the wheel."""
    files = set()
    for installed, source in SOURCES.items():
        root = REPO / source
        for path in root.rglob("*"):
            if path.suffix not in (".py", ".sh", ".yaml") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(root)
            if installed == "conformance" and relative.parts[0] in ("suites", "fixtures", "manifests_data"):
                continue
            files.add(f"{installed}/{relative.as_posix()}")
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (the build writes build/ and *.egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "dist").glob("mesh_conformance-*.whl")
    return built


def test_wheel_holds_every_module_and_manifest_under_conformance(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"conformance"}  # no top-level suites/fixtures
    shipped = {n for n in names if n.endswith((".py", ".sh", ".yaml"))}
    assert shipped == expected_files()
    assert "conformance/manifests_data/bookinfo/bookinfo.yaml" in shipped
    assert "conformance/probes/curl_batch.sh" in shipped


def test_wheel_holds_the_crds_the_local_mesh_validates_against_with_their_provenance(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = f"conformance/{CRD_DIR.relative_to(REPO / 'conformance').as_posix()}"
    crds = {f"{in_wheel}/{path.relative_to(CRD_DIR).as_posix()}" for path in crd_files()}
    assert f"{in_wheel}/istio/crd-all.gen.yaml" in crds and len(crds) == 6
    assert crds <= names, sorted(crds - names)
    assert {f"{in_wheel}/README.md", f"{in_wheel}/LICENSE"} <= names


def test_wheel_holds_the_reports_json_schema_of_every_api_version(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = {f"conformance/report/schema/{path.name}" for path in SCHEMA_DIR.glob("*.json")}
    assert "conformance/report/schema/meshconf.dev_v1alpha1.json" in schemas
    assert schemas <= names, sorted(schemas - names)


def test_installed_wheel_runs_from_an_empty_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    # The installed copy comes first on the path: nothing of the checkout is read.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import conformance.suites as s, conformance.manifests as m;"
                            "print(s.__file__); print(m.manifests_dir())"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    done = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--target", "local",
                           "--feature", "IngressGateway", "--feature", "RouteToVersion"],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "2 passed" in summary and "warning" not in summary, summary
    report = yaml.safe_load((empty / "results" / "report.yaml").read_text())
    assert {f["name"]: f["outcome"] for f in report["features"]} == {"IngressGateway": "PASSED",
                                                                       "RouteToVersion": "PASSED"}
    assert report["features"][0]["tests"][0]["id"].startswith("suites/test_ingress.py::")
    # The gate validates it against the schema the wheel carries (results/report.yaml by default).
    gated = subprocess.run([sys.executable, "-m", "conformance.cli", "gate", "--baseline", "results/report.yaml"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=60)
    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert "PASS (exit 0)" in gated.stdout and "2 features: 0 regressions, 0 fixes, 2 unchanged" in gated.stdout
