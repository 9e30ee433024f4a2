"""The GitHub Actions template (ci/github/meshconf.yml) cannot be run here: these tests check it
against GitHub's workflow schema (SchemaStore's, vendored by check-jsonschema) and against
meshconf itself: its matrix, its kind, its command lines and the files it uploads. Its baseline
and gate steps run for real in bash, with a fake gh (tests/fakes/ci/gh) and meshconf's real gate."""

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import cli
from conformance.mesh_upgrade import LATEST_PATCHES
from conformance.report import render
from conformance.settings import RunSettings
from conformance.targets import istio_support, kind
from tests.ci_builders import (GITHUB_WORKFLOW as WORKFLOW, PASSING, REGRESSED, Workspace, meshconf_commands,
                               report_text, schema_check)
from tests.fakes.engine.commands import load

ROW = {"istio": "1.28.10", "kubernetes": "1.34", "install-method": "istioctl"}
# What GitHub puts in the expressions the baseline and gate steps read, for a pull request's run.
CONTEXT = {"github.token": "t0ken", "github.repository": "owner/repo", "github.event.repository.default_branch": "main"}
WORKFLOW_REF = "owner/repo/.github/workflows/meshconf.yml@refs/pull/7/merge"


def job() -> dict[str, Any]:
    [only] = yaml.safe_load(WORKFLOW.read_text())["jobs"].values()
    return dict(only)


def steps() -> list[dict[str, Any]]:
    return list(job()["steps"])


def matrix() -> list[dict[str, str]]:
    return list(job()["strategy"]["matrix"]["include"])


def step_using(action: str, name: str | None = None) -> dict[str, Any]:
    return next(s for s in steps() if str(s.get("uses", "")).startswith(action + "@") and name in (None, s.get("name")))


def step_named(name: str) -> dict[str, Any]:
    return next(s for s in steps() if s.get("name") == name)


def with_entry(text: str, entry: dict[str, str]) -> str:
    """`text` with ${{ env.<job env> }} and ${{ matrix.<key> }} replaced (an unknown key fails)."""
    text = re.sub(r"\$\{\{ env\.(\w+) \}\}", lambda m: str(job()["env"][m.group(1)]), text)
    return re.sub(r"\$\{\{ matrix\.([\w-]+) \}\}", lambda m: entry[m.group(1)], text)


def entry_id(entry: dict[str, str]) -> str:
    return "-".join(f"{key}-{value}" for key, value in entry.items())


def test_workflow_is_a_valid_github_workflow() -> None:
    done = schema_check(WORKFLOW, "vendor.github-workflows")
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_names_what_is_wrong_in_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    done = schema_check(broken, "vendor.github-workflows")
    assert done.returncode == 1
    assert "runs-on" in done.stdout + done.stderr


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
    # One artifact per row and kind: the names tell every row apart, and the results from the HTML.
    names = [with_entry(s["with"]["name"], e) for e in rows for s in steps()
             if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert len(set(names)) == len(names) == 2 * len(rows)


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


def run_args(entry: dict[str, str]) -> Any:
    [argv] = meshconf_commands(with_entry(step_named("Run the conformance suites")["run"], entry))
    return cli.parser().parse_args(argv)  # an unknown flag, or an install method it does not know, exits here


def report_args() -> Any:
    [argv] = meshconf_commands(step_named("Render the Allure report")["run"])
    return cli.parser().parse_args(argv)


@pytest.mark.parametrize("entry", matrix(), ids=entry_id)
def test_run_step_is_a_meshconf_command_and_the_upload_takes_what_it_writes(entry: dict[str, str]) -> None:
    args = run_args(entry)
    assert (args.command, args.target, args.istio_version, args.kubernetes_version, args.install_method) == \
        ("run", "kind", entry["istio"], entry["kubernetes"], entry["install-method"])

    results = Path(args.results)
    written = {results / "report.yaml", results / "junit.xml", results / "allure",
               RunSettings(report=results / "report.yaml").debug_dir.relative_to(Path.cwd()),
               Path(report_args().history)}
    upload = step_using("actions/upload-artifact", "Upload results")
    assert upload["if"] == "always()"  # a failed run's results are the ones that matter
    assert {Path(p) for p in upload["with"]["path"].split()} == written


def test_report_step_renders_what_the_run_wrote_and_the_html_is_uploaded() -> None:
    results, report = Path(run_args(ROW).results), report_args()
    assert (report.command, Path(report.results), report.output) == ("report", results, None)
    # The history it extends is in the results, so the next run's baseline carries it on.
    assert Path(report.history).parent == results
    html = step_using("actions/upload-artifact", "Upload the Allure report")
    assert Path(html["with"]["path"]) == results / render.DEFAULT_OUTPUT


def test_gate_step_compares_the_runs_report_with_the_fetched_baseline() -> None:
    results = Path(run_args(ROW).results)
    [gate_argv] = meshconf_commands(step_named("Gate on the baseline")["run"])
    gate = cli.parser().parse_args(gate_argv)
    assert (gate.command, gate.baseline, Path(gate.report), gate.format) == \
        ("gate", "$BASELINE", results / "report.yaml", "markdown")
    # The baseline is the file the fetch step names, from the artifact the upload step names.
    assert step_named("Gate on the baseline")["env"]["BASELINE"] == "${{ steps.baseline.outputs.report }}"
    assert step_named("Fetch the baseline")["id"] == "baseline"
    assert '--name "$RESULTS_ARTIFACT"' in step_named("Fetch the baseline")["run"]
    assert step_using("actions/upload-artifact", "Upload results")["with"]["name"] == "${{ env.RESULTS_ARTIFACT }}"


def test_the_steps_after_the_run_run_after_a_failed_run_too_in_order() -> None:
    for name in ("Fetch the baseline", "Render the Allure report", "Upload the Allure report", "Gate on the baseline"):
        assert "!cancelled()" in step_named(name)["if"], name
    assert step_named("Render the Allure report")["continue-on-error"] is True
    order = [s.get("name") for s in steps()]
    assert order.index("Run the conformance suites") < order.index("Fetch the baseline") < \
        order.index("Render the Allure report") < order.index("Upload results") < order.index("Gate on the baseline")


def test_the_token_may_read_actions_and_contents_only() -> None:
    assert job()["permissions"] == {"actions": "read", "contents": "read"}


def test_meshconf_is_installed_with_pip_not_from_a_checkout() -> None:
    install = next(s["run"] for s in steps() if "pip install" in str(s.get("run", "")))
    assert install.endswith('pip install "$MESHCONF_PACKAGE"') and "-e" not in install.split()
    assert job()["env"]["MESHCONF_PACKAGE"].startswith("mesh-conformance")
    assert not any(s.get("with", {}).get("submodules") for s in steps())


def test_the_matrix_runs_the_patch_meshupgrade_knows_for_each_minor() -> None:
    assert {istio_support.minor(e["istio"]): e["istio"] for e in matrix()} == LATEST_PATCHES


# -- the baseline and gate steps, run in bash ---------------------------------------------------


def step_env(step: dict[str, Any], steps: dict[str, str]) -> dict[str, str]:
    """A step's env as GitHub fills it in for ROW: the job's env, then the step's, `steps` giving
    the baseline step's outputs and outcome ("outputs.report", "outcome"); an expression this test
    does not know fails here."""
    context = {**CONTEXT, **{f"steps.baseline.{k}": v for k, v in steps.items()}}
    env = {name: with_entry(str(value), ROW) for name, value in job()["env"].items()}
    for name, value in step.get("env", {}).items():
        expression = re.fullmatch(r"\$\{\{ ([\w.-]+) \}\}", value)
        if expression is None:
            env[name] = value
        elif expression.group(1).startswith("steps.baseline.outputs."):
            env[name] = context.get(expression.group(1), "")  # an output the step did not set is empty
        else:
            env[name] = context[expression.group(1)]
    return env


@dataclass
class Steps:
    fetch: subprocess.CompletedProcess[str]  # the baseline step
    gate: int  # the gate step's exit code
    summary: str  # the job summary


def run_baseline_and_gate(workspace: Workspace, runs: list[dict[str, Any]],
                          failures: dict[str, Any] | None = None) -> Steps:
    """The two steps in order, as the runner runs them: `bash -e`, the first's GITHUB_OUTPUT and
    outcome carried to the second's env; `failures` makes the fake gh fail (tests/fakes/ci/gh)."""
    output, summary = workspace.root / "github_output", workspace.root / "step_summary"
    output.touch()
    summary.touch()
    runner = {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKFLOW_REF": WORKFLOW_REF,
              "MESHCONF_FAKE_GH": json.dumps({"runs": runs, "failures": failures or {}})}
    for name in ("Fetch the baseline", "Gate on the baseline"):
        assert "${{" not in step_named(name)["run"], "expressions go through env, never into the script"
    fetch_step = step_named("Fetch the baseline")
    fetch = workspace.bash(fetch_step["run"], {**step_env(fetch_step, {}), **runner})
    outputs = {f"outputs.{k}": v for k, v in (line.split("=", 1) for line in output.read_text().splitlines())}
    outcome = "success" if fetch.returncode == 0 else "failure"
    gate_step = step_named("Gate on the baseline")
    gate = workspace.bash(gate_step["run"], {**step_env(gate_step, {**outputs, "outcome": outcome}), **runner})
    return Steps(fetch, gate.returncode, summary.read_text())


def artifact_name() -> str:
    return with_entry(job()["env"]["RESULTS_ARTIFACT"], ROW)


def push_run(run_id: int, report: str | None, conclusion: str = "success", event: str = "push",
             branch: str = "main") -> dict[str, Any]:
    artifacts = {artifact_name(): {"files": {"report.yaml": report}}} if report else {}
    return {"databaseId": run_id, "workflow": "meshconf.yml", "headBranch": branch, "event": event,
            "status": "completed", "conclusion": conclusion, "artifacts": artifacts}


def test_a_first_run_without_a_baseline_passes_with_a_note(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    steps = run_baseline_and_gate(workspace, [push_run(5, None, conclusion="failure")])
    assert steps.fetch.returncode == 0 and steps.gate == 0, steps
    assert f"**{artifact_name()}**" in steps.summary and "No baseline" in steps.summary
    assert workspace.calls("meshconf") == []
    [listed] = workspace.calls("gh")
    assert listed[:2] == ["run", "list"]
    assert {"--workflow", "meshconf.yml", "--branch", "main", "--event", "push", "--status", "success"} <= set(listed)


def test_a_regression_against_the_last_successful_push_fails_the_gate(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    passing, regressed = report_text(PASSING, tmp_path / "old"), report_text(REGRESSED, tmp_path / "other")
    # Newer runs that are not baselines: a failed push, and a fork's pull request from its own main.
    runs = [push_run(13, regressed, conclusion="failure"), push_run(12, regressed, event="pull_request"),
            push_run(11, passing)]
    steps = run_baseline_and_gate(workspace, runs)
    assert steps.gate == 1, steps
    assert "Baseline: run 11 on main." in steps.summary and "WeightedSplit" in steps.summary
    [gate] = workspace.calls("meshconf")
    assert gate == ["gate", "--baseline", "baseline/report.yaml", "results/report.yaml", "--format", "markdown"]
    _, artifacts, download = workspace.calls("gh")
    assert artifacts[:4] == ["api", "--method", "GET", "repos/owner/repo/actions/runs/11/artifacts"]
    assert download == ["run", "download", "11", "--name", artifact_name(), "--dir", "baseline"]


def test_the_summary_has_one_heading_the_gates_and_the_row_in_bold(tmp_path: Path) -> None:
    # The gate's markdown opens with its own "### meshconf gate: FAIL": the step's line naming the
    # row is bold text, not a second heading of the same level.
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    steps = run_baseline_and_gate(workspace, [push_run(11, report_text(PASSING, tmp_path / "old"))])
    assert steps.gate == 1, steps
    lines = steps.summary.splitlines()
    assert [line for line in lines if line.startswith("#")] == ["### meshconf gate: FAIL"]
    assert lines[0] == f"**{artifact_name()}**"


def test_passing_against_passing_passes_the_gate_with_its_markdown(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    steps = run_baseline_and_gate(workspace, [push_run(11, report_text(PASSING, tmp_path / "old"))])
    assert steps.gate == 0, steps
    assert "Baseline: run 11 on main." in steps.summary and "WeightedSplit" in steps.summary


def test_a_baseline_run_without_this_rows_artifact_is_no_baseline(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    other_row = {"databaseId": 11, "workflow": "meshconf.yml", "headBranch": "main", "event": "push",
                 "status": "completed", "conclusion": "success",
                 "artifacts": {"meshconf-istio-1.30.3-k8s-1.36-helm": {"files": {"report.yaml": "x"}}}}
    steps = run_baseline_and_gate(workspace, [other_row])
    assert steps.fetch.returncode == 0 and steps.gate == 0 and "No baseline" in steps.summary
    assert f"run 11 on main has no artifact {artifact_name()}: no baseline" in steps.fetch.stdout
    assert workspace.calls("meshconf") == []
    assert [argv[:2] for argv in workspace.calls("gh")] == [["run", "list"], ["api", "--method"]]  # nothing downloaded


def test_an_expired_artifact_is_no_baseline(tmp_path: Path) -> None:
    # GitHub lists an artifact past its retention with "expired": true; it cannot be downloaded.
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    run = push_run(11, report_text(PASSING, tmp_path / "old"))
    run["artifacts"][artifact_name()]["expired"] = True
    steps = run_baseline_and_gate(workspace, [run])
    assert steps.fetch.returncode == 0 and steps.gate == 0 and "No baseline" in steps.summary
    assert "download" not in [argv[1] for argv in workspace.calls("gh")]


# gh's words for each failure (tests/fakes/ci/gh): an HTTP answer, or none (the network).
SERVER_ERROR = {"status": 500, "message": "Server Error"}
FORBIDDEN = {"status": 403, "message": "Resource not accessible by integration"}
NETWORK = {"error": "dial tcp: lookup api.github.com: no such host"}


@pytest.mark.parametrize(("failing", "failure", "named", "gh_said"), [
    ("list", SERVER_ERROR, "listing the runs of meshconf.yml on main failed", "failed to get runs: HTTP 500"),
    ("api", SERVER_ERROR, "listing the artifacts of run 11 failed", "gh: Server Error (HTTP 500)"),
    ("api", FORBIDDEN, "listing the artifacts of run 11 failed", "(HTTP 403)"),
    ("api", NETWORK, "listing the artifacts of run 11 failed", "no such host"),
    ("download", SERVER_ERROR, "downloading the artifact {artifact} of run 11 failed",
     "error fetching artifacts: HTTP 500: Server Error"),
    ("download", NETWORK, "downloading the artifact {artifact} of run 11 failed", "no such host"),
], ids=["list-500", "artifacts-500", "artifacts-403", "artifacts-network", "download-500", "download-network"])
def test_a_baseline_that_cannot_be_read_fails_the_step_naming_it_and_is_not_no_baseline(
        tmp_path: Path, failing: str, failure: dict[str, Any], named: str, gh_said: str) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)  # a regression the gate must not wave through as "no baseline"
    steps = run_baseline_and_gate(workspace, [push_run(11, report_text(PASSING, tmp_path / "old"))],
                                  failures={failing: failure})
    assert steps.fetch.returncode == 1, steps.fetch
    assert named.format(artifact=artifact_name()) in steps.fetch.stdout
    assert gh_said in steps.fetch.stderr
    assert steps.gate == 1 and "could not be fetched" in steps.summary and "No baseline" not in steps.summary
    assert workspace.calls("meshconf") == []


def test_the_fake_gh_refuses_what_gh_api_refuses(tmp_path: Path) -> None:
    # gh api has no --repo; its -f fields make a POST unless --method is given, which GitHub's
    # artifact list does not serve. The template's call passes both checks (the tests above).
    workspace = Workspace(tmp_path)
    env = {"GH_TOKEN": "t0ken", "GH_REPO": "owner/repo", "MESHCONF_FAKE_GH": json.dumps({"runs": [push_run(11, "x")]})}
    refused = workspace.bash("gh api --repo owner/repo repos/owner/repo/actions/runs/11/artifacts", env)
    assert refused.returncode == 1 and "unknown flag: --repo" in refused.stderr
    posted = workspace.bash("gh api repos/owner/repo/actions/runs/11/artifacts -f name=x", env)
    assert posted.returncode == 1 and "gh: Not Found (HTTP 404)" in posted.stderr
    listed = workspace.bash("gh api --method GET repos/owner/repo/actions/runs/11/artifacts -f name=x", env)
    assert listed.returncode == 0 and json.loads(listed.stdout)["artifacts"] == []


def test_a_run_that_wrote_no_report_is_not_gated(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    steps = run_baseline_and_gate(workspace, [push_run(11, report_text(PASSING, tmp_path / "old"))])
    assert steps.gate == 0 and "wrote no report.yaml" in steps.summary
    assert workspace.calls("meshconf") == []


def test_the_report_carries_the_baselines_history_on(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    (tmp_path / "baseline" / "history").mkdir(parents=True)
    (tmp_path / "baseline" / "history" / "history.jsonl").write_text('{"uuid": "main-run-11"}\n')
    done = workspace.bash(step_named("Render the Allure report")["run"], {})
    assert done.returncode == 0, done.stderr
    assert workspace.calls("meshconf") == [["report", "results", "--history", "results/history"]]
    assert (tmp_path / "results" / "history" / "history.jsonl").read_text() == '{"uuid": "main-run-11"}\n'
