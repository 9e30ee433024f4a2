"""The ways users run meshconf: in parallel, interrupted or cancelled, or given bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import yaml

from conformance.targets.local import rundirs
from conformance.waiting import wait_for
from tests.builders import WHOLE_MESH, mesh_processes, meshconf

pytestmark = WHOLE_MESH

# The mutant makes some features fail, so both outcomes are compared, not only passes.
MIXED = ["run", "--target", "local", "--local-mutant", "swap-subsets", "--consistency-timeout", "3",
         "--feature", "IngressGateway", "--feature", "RouteToVersion", "--feature", "RequestTimeout",
         "--feature", "HeaderMatchRouting"]


def report(cwd: Path) -> dict:
    return yaml.safe_load((cwd / "results" / "report.yaml").read_text())


def junit_cases(cwd: Path) -> dict[str, str]:
    """JUnit test case -> passed | failure | error | skipped."""
    cases = {}
    for case in ET.parse(cwd / "results" / "junit.xml").getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        cases[f"{case.get('classname')}.{case.get('name')}"] = kinds[0] if kinds else "passed"
    return cases


def allure_statuses(cwd: Path) -> dict[str, str]:
    results = [json.loads(p.read_text()) for p in (cwd / "results" / "allure").glob("*-result.json")]
    return {r["fullName"]: r["status"] for r in results}


def summary_rows(stdout: str) -> list[str]:
    """The terminal summary's feature rows: feature name and outcome."""
    return sorted(" ".join(line.split("│")[2:5]).split()[0] + " " + line.split("│")[4].strip()
                  for line in stdout.splitlines() if line.startswith("│ MESH-"))


def shape(reason: str) -> str:
    """A reason's first statement without its measurements: counts, times, and the names of
    namespaces and pods (run and worker ids, generated suffixes) vary from run to run."""
    first = reason.splitlines()[0].split("; ")[0] if reason else ""
    return re.sub(r"\d+(\.\d+)?", "#", first)


def test_parallel_run_reports_what_a_serial_run_does(tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("serial", []), ("parallel", ["-n", "2"])):
        cwd = tmp_path / name
        cwd.mkdir()
        done = meshconf([*MIXED, *extra], cwd=cwd)
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr
        rep = report(cwd)
        runs[name] = {
            "result": rep["result"],
            "target": rep["run"]["target"],
            "features": {f["name"]: (f["outcome"], shape(f.get("reason", ""))) for f in rep["features"]},
            "tests": sorted((t["id"], t["outcome"]) for f in rep["features"] for t in f["tests"]),
            "junit": junit_cases(cwd),
            "allure": allure_statuses(cwd),
            "summary": summary_rows(done.stdout),
            "phases": set(rep["timings"]),
        }
        assert mesh_processes(str(cwd)) == []
        assert list((cwd / ".meshconf").iterdir()) == []
    serial, parallel = runs["serial"], runs["parallel"]
    assert serial["features"]["RouteToVersion"][0] == "FAILED" and serial["features"]["IngressGateway"][0] == "PASSED"
    # Reasons are compared on their first line: the counts of a failed split's table vary.
    assert parallel == serial


def start_run(cwd: Path, args: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "run", "--target", "local", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # our signal goes to the harness alone, like a kill from another shell
    )


def wait_subsets_applied(cwd: Path, harness: subprocess.Popen[str]) -> None:
    """Until a proxy has reviews' subset clusters: a test's call phase has applied its config.
    Each proxy's bootstrap names its admin address; its config dump says what it holds."""
    def pending() -> str | None:
        if harness.poll() is not None:
            raise AssertionError(f"harness ended early: {harness.stdout.read() if harness.stdout else ''}")
        for path in (cwd / ".meshconf").rglob("bootstrap.json"):
            try:
                admin = json.loads(path.read_text())["admin"]["address"]["socket_address"]
                dump = httpx.get(f"http://{admin['address']}:{admin['port_value']}/config_dump"
                                 "?resource=dynamic_active_clusters", timeout=2).text
            except (OSError, ValueError, httpx.HTTPError):  # a proxy starting or stopping
                continue
            if "|v1|reviews." in dump:
                return None
        return "no proxy has the reviews subsets yet"

    wait_for(pending, 60, 0.05, "a feature's configuration applied")


def finish(harness: subprocess.Popen[str]) -> str:
    try:
        out, _ = harness.communicate(timeout=60)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
    return out


@pytest.mark.parametrize(("sig", "extra"), [
    (signal.SIGINT, []),
    (signal.SIGTERM, []),
    (signal.SIGHUP, []),
    (signal.SIGTERM, ["-n", "2"]),
], ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGTERM-parallel"])
def test_signal_during_a_feature_tears_down_and_reports_it_interrupted(
        tmp_path: Path, sig: signal.Signals, extra: list[str]) -> None:
    harness = start_run(tmp_path, ["--feature", "CanaryProgression", *extra])
    try:
        wait_subsets_applied(tmp_path, harness)
        os.kill(harness.pid, sig)
    finally:
        out = finish(harness)
    assert harness.returncode == 128 + sig, out[-3000:]
    rep = report(tmp_path)
    assert rep["result"] == "interrupted"
    assert rep["run"]["target"] == "local"
    (canary,) = rep["features"]
    assert (canary["outcome"], canary["reason"]) == ("SKIPPED", "interrupted"), canary
    assert "meshconf: wrote report" in out
    assert mesh_processes(str(tmp_path)) == []
    assert [p.name for p in (tmp_path / ".meshconf").iterdir()] == []  # run directories removed


def test_a_killed_run_leaves_its_directory_and_the_next_run_removes_it(tmp_path: Path) -> None:
    harness = start_run(tmp_path, ["--feature", "RouteToVersion"])
    try:
        wait_subsets_applied(tmp_path, harness)
        os.kill(harness.pid, signal.SIGKILL)
    finally:
        finish(harness)
    wait_for(lambda: "; ".join(mesh_processes(str(tmp_path))) or None, 5, 0.1, "mesh processes gone")
    left = [p.name for p in (tmp_path / ".meshconf").iterdir()]
    assert len(left) == 1 and left[0].startswith("run-")
    again = meshconf(["run", "--target", "local", "--feature", "IngressGateway"], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert list((tmp_path / ".meshconf").iterdir()) == []


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path: Path) -> None:
    live = tmp_path / "run-live"
    rundirs.claim(live)  # this process: alive
    gone = tmp_path / "run-gone"
    ended = subprocess.run([sys.executable, "-c", f"from conformance.targets.local import rundirs; "
                            f"from pathlib import Path; rundirs.claim(Path({str(gone)!r}))"], check=True)
    assert ended.returncode == 0
    unowned = tmp_path / "run-unowned"  # no owner file: cannot be proven abandoned
    unowned.mkdir()
    other = tmp_path / "kind-meshconf"
    other.mkdir()
    assert rundirs.sweep(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kind-meshconf", "run-live", "run-unowned"]


@pytest.mark.parametrize(("args", "message"), [
    (["--consistency-timeout", "-3"], "argument --consistency-timeout: -3 is not a number of seconds greater than 0"),
    (["--consistency-timeout", "0"], "argument --consistency-timeout: 0 is not a number of seconds greater than 0"),
    (["--results", "/proc/x"], "cannot write results under /proc/x"),
    (["--report", "/proc/x/report.yaml"], "cannot write results under /proc/x"),
    (["--ingress-port", "99999"], "argument --ingress-port: 99999 is not a TCP port (1-65535)"),
    (["--ingress-https-port", "0"], "argument --ingress-https-port: 0 is not a TCP port (1-65535)"),
    (["-n", "0"], "argument -n/--workers: 0 is not an integer of at least 1"),
    (["--target", "local", "--cluster-name", "other"], "--cluster-name does not apply to target local"),
    (["--target", "local", "--istio-version", "1.27.0"], "--istio-version does not apply to target local"),
    (["--target", "local", "--yes"], "--yes does not apply to target local"),
    (["--target", "kind", "--local-mutant", "swap-subsets"], "--local-mutant does not apply to target kind"),
    (["--target", "kind", "--context", "c"], "--context does not apply to target kind"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    done = meshconf(["run", *args], cwd=tmp_path, env={"MESHCONF_TIMEOUT_CONSISTENCY": "30"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_timeout_from_the_environment_is_range_checked(tmp_path: Path) -> None:
    done = meshconf(["run", "--target", "local"], cwd=tmp_path, env={"MESHCONF_TIMEOUT_ROLLOUT": "-1"})
    assert done.returncode == 2
    assert done.stderr.strip() == "meshconf: error: MESHCONF_TIMEOUT_ROLLOUT='-1' must be greater than 0"
    assert list(tmp_path.iterdir()) == []
