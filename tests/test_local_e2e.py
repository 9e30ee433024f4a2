"""`meshconf run` end to end on the local reference mesh: a correct mesh passes, a broken one fails."""

import json
from pathlib import Path

import yaml

from conformance import features
from conformance.targets.local.target import SUPPORTED
from tests.builders import WHOLE_MESH, mesh_processes, meshconf

pytestmark = WHOLE_MESH


def report(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "results" / "report.yaml").read_text())


def outcomes(rep: dict) -> dict[str, str]:
    return {f["name"]: f["outcome"] for f in rep["features"]}


def test_run_passes_on_correct_mesh(tmp_path: Path) -> None:
    # In two workers: tests/test_run_modes.py shows a parallel run reports what a serial one does.
    done = meshconf(["run", "--target", "local", "-n", "2"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "target local" in done.stderr
    rep = report(tmp_path)
    assert rep["run"]["target"] == "local" and "no Kubernetes" in rep["run"]["mode"]
    # Every feature passes but those the local target does not run, which say why.
    assert outcomes(rep) == {f.name: "PASSED" if f.name in SUPPORTED else "NOT_SUPPORTED" for f in features.CATALOGUE}
    graph = next(f for f in rep["features"] if f["name"] == "ServiceGraph")
    assert "the local reference mesh runs no Kiali" in graph["reason"]
    assert rep["result"] == "success"
    route = next(f for f in rep["features"] if f["name"] == "RouteToVersion")
    assert "100 v1 held: 90 requests, v1 90 (100.0%)" in route["reason"]
    assert "100 v3 held: 90 requests, v3 90 (100.0%)" in route["reason"]
    assert set(rep["timings"]) >= {"mesh up", "bookinfo ready", "teardown"}
    labels = allure_labels(tmp_path / "results" / "allure")
    assert {("epic", "MESH-TRAFFIC"), ("feature", "RouteToVersion"), ("severity", "critical")} <= labels
    assert (tmp_path / "results" / "junit.xml").exists()
    assert mesh_processes(str(tmp_path)) == []
    assert list((tmp_path / ".meshconf").iterdir()) == []  # run directories removed


def allure_labels(directory: Path) -> set[tuple[str, str]]:
    labels = set()
    for path in directory.glob("*-result.json"):
        for label in json.loads(path.read_text()).get("labels", []):
            labels.add((label["name"], label["value"]))
    return labels


def test_broken_mesh_fails_with_reason(tmp_path: Path) -> None:
    done = meshconf(["run", "--target", "local", "--local-mutant", "swap-subsets", "--consistency-timeout", "3",
                     "--feature", "IngressGateway", "--feature", "RouteToVersion"], cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr
    rep = report(tmp_path)
    assert outcomes(rep) == {"IngressGateway": "PASSED", "RouteToVersion": "FAILED"}
    assert rep["result"] == "failure"
    assert "swap-subsets" in rep["run"]["mode"]
    reason = next(f["reason"] for f in rep["features"] if f["name"] == "RouteToVersion")
    assert "100 v1 failed: v2 is not a destination of the split but received" in reason, reason
    assert "destination   weight   expected  observed    share  p-value" in reason  # the table
    traffic = next(p for p in rep["profiles"] if p["name"] == "MESH-TRAFFIC")
    assert traffic["core"]["result"] == "failure"
    debug = list((tmp_path / "results" / "debug").iterdir())
    assert len(debug) == 1 and any(p.name.endswith("config_dump.json") for p in debug[0].iterdir())
    # The control plane's view: every proxy in sync (the mesh is wrong, not its configuration's delivery).
    status = (debug[0] / "proxy-status.txt").read_text().splitlines()
    assert status[0].split() == ["NAME", "CDS", "EDS", "LDS", "RDS", "SDS", "STREAM"]
    assert len(status) > 5 and all(row.split()[1:] == ["SYNCED"] * 5 + ["connected"] for row in status[1:]), status
    assert mesh_processes(str(tmp_path)) == []


def test_one_feature(tmp_path: Path) -> None:
    done = meshconf(["run", "--target", "local", "--feature", "IngressGateway"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert outcomes(report(tmp_path)) == {"IngressGateway": "PASSED"}
