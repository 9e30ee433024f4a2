"""The GitLab CI template (ci/gitlab/.gitlab-ci.yml) cannot be run here: these tests check it
against GitLab's CI schema (vendored by check-jsonschema) and against meshconf: the same matrix as
the GitHub template, its kind and Helm, its command lines and the files it keeps. Its script runs
for real in bash as GitLab's runner runs it (`set -eo pipefail`, one shell), with the real curl
against a local stand-in for the job artifacts API, the contract tests' fake kind and meshconf's
real gate; so does its after_script, in a shell of its own."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import cli
from conformance.report import render
from conformance.settings import RunSettings
from conformance.targets import kind, provision
from tests.ci_builders import (GITHUB_WORKFLOW, GITLAB_CI, NO_JOB, NO_PROJECT, PASSING, REGRESSED, ArtifactsApi,
                               Workspace, artifacts_api, meshconf_commands, report_text, schema_check)
from tests.fakes.engine.commands import load

# A matrix job's name is the job's, then its values (gitlab-org/gitlab lib/gitlab/ci/config/normalizer/matrix_strategy.rb).
JOB_NAME = "conformance: [1.28.10, 1.34, istioctl]"
ROW = {"ISTIO": "1.28.10", "KUBERNETES": "1.34", "INSTALL_METHOD": "istioctl"}
TOKEN = "job-t0ken"


def config() -> dict[str, Any]:
    return dict(yaml.safe_load(GITLAB_CI.read_text()))


def job() -> dict[str, Any]:
    return dict(config()["conformance"])


def item(containing: str) -> str:
    """The one script item that contains `containing`."""
    [found] = [line for line in job()["script"] if containing in line]
    return found


def test_template_is_valid_gitlab_ci() -> None:
    done = schema_check(GITLAB_CI, "vendor.gitlab-ci")
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_names_what_is_wrong_in_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text(GITLAB_CI.read_text().replace("    when: always", "    when: sometimes"))
    done = schema_check(broken, "vendor.gitlab-ci")
    assert done.returncode == 1
    assert "$.conformance.artifacts.when: 'sometimes' is not one of" in done.stdout + done.stderr


def test_the_matrix_is_the_github_templates() -> None:
    github = yaml.safe_load(GITHUB_WORKFLOW.read_text())["jobs"]["conformance"]["strategy"]["matrix"]["include"]
    gitlab = job()["parallel"]["matrix"]
    assert [(r["ISTIO"], r["KUBERNETES"], r["INSTALL_METHOD"]) for r in gitlab] == \
        [(r["istio"], r["kubernetes"], r["install-method"]) for r in github]
    assert ROW in gitlab


def test_kind_and_helm_are_the_releases_meshconf_is_checked_against() -> None:
    variables = config()["variables"]
    assert variables["KIND_VERSION"] == kind.KIND_VERSION
    assert variables["HELM_VERSION"] == load("helm")["provenance"]["tag"]
    tools = job()["before_script"][0]
    assert "/releases/download/$KIND_VERSION/kind-linux-amd64" in tools and "sha256sum --check" in tools
    assert "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz" in tools


def run_args(tmp_path: Path, concurrent_id: str = "0") -> Any:
    """The `meshconf run` command line the script runs in job slot `concurrent_id` (no baseline),
    parsed by meshconf: an unknown flag, a port that is not one, or an install method it does not
    know exits here."""
    workspace = Workspace(tmp_path)
    with artifacts_api(ArtifactsApi(TOKEN, {})) as api:
        status, log = run_script(workspace, api, CI_CONCURRENT_ID=concurrent_id)
    assert status == 0, log
    [argv] = [argv for argv in workspace.calls("meshconf") if argv[0] == "run"]
    return cli.parser().parse_args(argv)


def test_commands_are_meshconf_commands_on_what_the_run_wrote(tmp_path: Path) -> None:
    run = run_args(tmp_path)
    assert (run.command, run.target, run.istio_version, run.kubernetes_version, run.install_method) == \
        ("run", "kind", ROW["ISTIO"], ROW["KUBERNETES"], ROW["INSTALL_METHOD"])
    results = Path(run.results)
    [doctor] = [cli.parser().parse_args(argv) for line in job()["before_script"] for argv in meshconf_commands(line)]
    assert doctor.command == "doctor"
    [report_argv] = meshconf_commands(item("meshconf report"))
    report = cli.parser().parse_args(report_argv)
    assert (report.command, Path(report.results), Path(report.history).parent) == ("report", results, results)
    [gate_argv] = meshconf_commands(item("meshconf gate"))
    gate = cli.parser().parse_args(gate_argv)
    assert (gate.command, gate.baseline, Path(gate.report), gate.format) == \
        ("gate", "baseline/report.yaml", results / "report.yaml", "markdown")


def test_the_artifacts_keep_what_the_run_the_report_and_the_gate_wrote(tmp_path: Path) -> None:
    run, artifacts = run_args(tmp_path), job()["artifacts"]
    results = Path(run.results)
    [report_argv] = meshconf_commands(item("meshconf report"))
    written = {results / "report.yaml", results / "junit.xml", results / "allure", results / "gate.md",
               results / render.DEFAULT_OUTPUT, Path(cli.parser().parse_args(report_argv).history),
               RunSettings(report=results / "report.yaml").debug_dir.relative_to(Path.cwd())}
    assert {Path(p) for p in artifacts["paths"]} == written
    assert artifacts["when"] == "always"  # a failed run's results are the ones that matter
    assert artifacts["reports"]["junit"] == str(results / "junit.xml")
    # expose_as shows only paths without variables, directories ending in /.
    assert all("$" not in p and (p.endswith("/") or "." in Path(p).name) for p in artifacts["paths"])


# -- the script, run in bash -------------------------------------------------------------------


def run_script(workspace: Workspace, api: ArtifactsApi, run_exit: int = 0, **env: str) -> tuple[int, str]:
    """The job's script items in one `bash -eo pipefail`, as GitLab's runner runs them."""
    variables = {**config()["variables"], **job().get("variables", {}), **ROW,
                 "CI_JOB_NAME": JOB_NAME, "CI_JOB_TOKEN": TOKEN, "CI_API_V4_URL": api.url, "CI_PROJECT_ID": "42",
                 "CI_DEFAULT_BRANCH": "main", "CI_CONCURRENT_ID": "0", "MESHCONF_CI_RUN_EXIT": str(run_exit), **env}
    done = workspace.bash("\n".join(job()["script"]), variables, options="-eo pipefail")
    return done.returncode, done.stdout + done.stderr


def baseline(tmp_path: Path, outcomes: Any, history: str | None = None) -> dict[tuple[str, str, str], str]:
    files = {("main", JOB_NAME, "results/report.yaml"): report_text(outcomes, tmp_path / "old")}
    if history is not None:
        files[("main", JOB_NAME, "results/history/history.jsonl")] = history
    return files


def test_a_first_run_without_a_baseline_passes_with_a_note(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    with artifacts_api(ArtifactsApi(TOKEN, {})) as api:
        status, log = run_script(workspace, api)
    assert status == 0, log
    assert "No baseline" in (tmp_path / "results" / "gate.md").read_text()
    assert [argv[0] for argv in workspace.calls("meshconf")] == ["run", "report"]
    # Asked for this job's report on the default branch, the job's name as the API's `job`.
    [asked] = api.requests
    assert asked["path"] == "/api/v4/projects/42/jobs/artifacts/main/raw/results/report.yaml"
    assert asked["query"] == {"job": [JOB_NAME]} and asked["JOB-TOKEN"] == TOKEN


def test_a_regression_against_the_default_branch_fails_the_job(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    with artifacts_api(ArtifactsApi(TOKEN, baseline(tmp_path, PASSING, '{"uuid": "main"}\n'))) as api:
        status, log = run_script(workspace, api)
    assert status == 1, log
    assert "WeightedSplit" in log and "WeightedSplit" in (tmp_path / "results" / "gate.md").read_text()
    gate = workspace.calls("meshconf")[-1]
    assert gate == ["gate", "--baseline", "baseline/report.yaml", "results/report.yaml", "--format", "markdown"]
    # The report went on from the baseline's history.
    assert (tmp_path / "results" / "history" / "history.jsonl").read_text() == '{"uuid": "main"}\n'


def test_passing_against_passing_passes_and_a_failed_run_still_fails_the_job(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    with artifacts_api(ArtifactsApi(TOKEN, baseline(tmp_path, PASSING))) as api:
        passed, log = run_script(workspace, api)
        assert passed == 0, log
        assert "WeightedSplit" in log  # the gate's markdown, in the job log
        failed_run, log = run_script(workspace, api, run_exit=1)
    assert failed_run == 1, log
    assert [argv[0] for argv in workspace.calls("meshconf")].count("gate") == 2  # gated after a failed run too


def test_a_baseline_without_allure_history_is_still_the_baseline(tmp_path: Path) -> None:
    # The job's artifacts hold no history/history.jsonl: Workhorse's 404 "404 page not found".
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    with artifacts_api(ArtifactsApi(TOKEN, baseline(tmp_path, PASSING))) as api:
        status, log = run_script(workspace, api)
    assert status == 1, log  # compared with the baseline: WeightedSplit regressed
    assert "the baseline has no Allure history" in log
    assert workspace.calls("meshconf")[-1][:3] == ["gate", "--baseline", "baseline/report.yaml"]


def test_a_refused_token_fails_the_job_naming_the_status(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    with artifacts_api(ArtifactsApi("another-token", baseline(tmp_path, PASSING))) as api:
        status, log = run_script(workspace, api)
    assert status == 1 and 'answered HTTP 401: {"message":"401 Unauthorized"}' in log
    assert "gate" not in [argv[0] for argv in workspace.calls("meshconf")]


@pytest.mark.parametrize(("code", "body"), [
    (404, NO_PROJECT),  # also GitLab's answer to a token it does not accept on a private project
    (403, '{"message":"403 Forbidden"}'),
    (500, '{"message":"500 Internal Server Error"}'),
    (502, "<html><body>502 Bad Gateway</body></html>"),
], ids=["404-project-not-found", "403", "500", "502-html"])
def test_any_answer_but_no_such_job_or_file_fails_the_job_naming_status_and_body(
        tmp_path: Path, code: int, body: str) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)  # a regression the gate must not wave through as "no baseline"
    with artifacts_api(ArtifactsApi(TOKEN, baseline(tmp_path, PASSING), override=(code, body))) as api:
        status, log = run_script(workspace, api)
    assert status == 1, log
    assert f"fetching the baseline's report.yaml from main answered HTTP {code}: {body}" in log
    assert "No baseline" not in log and not (tmp_path / "baseline" / "report.yaml").exists()
    assert "gate" not in [argv[0] for argv in workspace.calls("meshconf")]


def test_no_such_job_in_gitlabs_words_is_no_baseline(tmp_path: Path) -> None:
    # The stand-in's own answer when the branch has no such job (the first test) is NO_JOB; here
    # the override proves the template reads the body, not only the status.
    workspace = Workspace(tmp_path)
    workspace.write_new_report(REGRESSED)
    with artifacts_api(ArtifactsApi(TOKEN, {}, override=(404, NO_JOB))) as api:
        status, log = run_script(workspace, api)
    assert status == 0, log
    assert "no baseline" in log and "No baseline" in (tmp_path / "results" / "gate.md").read_text()


def test_an_unreachable_api_fails_the_job_naming_the_fetch(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    with artifacts_api(ArtifactsApi(TOKEN, {})) as api:
        pass  # closed: nothing listens on its port any more
    status, log = run_script(workspace, api)
    assert status == 1, log
    assert "fetching the baseline's report.yaml from main failed (curl's error above)" in log
    assert "gate" not in [argv[0] for argv in workspace.calls("meshconf")]


def test_a_project_access_token_is_sent_as_private_token_when_set(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.write_new_report(PASSING)
    with artifacts_api(ArtifactsApi("project-t0ken", baseline(tmp_path, PASSING))) as api:
        status, log = run_script(workspace, api, MESHCONF_BASELINE_TOKEN="project-t0ken")
    assert status == 0, log
    assert {r["PRIVATE-TOKEN"] for r in api.requests} == {"project-t0ken"}
    assert {r["JOB-TOKEN"] for r in api.requests} == {None}


@pytest.mark.parametrize("run_exit", [0, 1])
def test_a_run_that_wrote_no_report_is_not_gated_and_keeps_its_verdict(tmp_path: Path, run_exit: int) -> None:
    workspace = Workspace(tmp_path)
    with artifacts_api(ArtifactsApi(TOKEN, baseline(tmp_path, PASSING))) as api:
        status, log = run_script(workspace, api, run_exit=run_exit)
    assert status == run_exit and "wrote no report.yaml" in log
    assert [argv[0] for argv in workspace.calls("meshconf")] == ["run"]


# -- one kind cluster and one pair of host ports per concurrent job ------------------------------


def test_each_job_slot_has_its_own_cluster_and_host_ports(tmp_path: Path) -> None:
    clusters = {}
    for slot in ("0", "3"):
        args = run_args(tmp_path / slot, concurrent_id=slot)
        clusters[slot] = provision.kind_cluster(cli.settings_from(args, "kind"))  # refuses equal HTTP/HTTPS ports
    first, other = clusters["0"], clusters["3"]
    assert (first.name, other.name) == ("meshconf-0", "meshconf-3")
    assert len({first.http_port, first.https_port, other.http_port, other.https_port}) == 4
    # Slot 0 keeps meshconf's defaults.
    assert (first.http_port, first.https_port) == (RunSettings().ingress_port, RunSettings().ingress_https_port)


def kubeconfig_of_slot(tmp_path: Path, slot: str) -> str:
    """The kubeconfig meshconf keeps for the cluster of the script's run in `slot`, relative to the
    job's directory (where after_script runs too)."""
    cluster = provision.kind_cluster(cli.settings_from(run_args(tmp_path / "run", concurrent_id=slot), "kind"))
    return str(cluster.kubeconfig.relative_to(Path.cwd()))


def test_a_cluster_left_in_the_slot_is_deleted_before_the_run_and_no_other(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "job")
    workspace.write_new_report(PASSING)
    workspace.set_kind_clusters(["meshconf-1", "meshconf-3"])  # slot 1 busy; slot 3's last job timed out
    with artifacts_api(ArtifactsApi(TOKEN, {})) as api:
        status, log = run_script(workspace, api, CI_CONCURRENT_ID="3")
    assert status == 0, log
    assert workspace.kind_clusters() == ["meshconf-1"]
    assert workspace.calls("kind") == [["delete", "cluster", "--name", "meshconf-3",
                                        "--kubeconfig", kubeconfig_of_slot(tmp_path, "3")]]


def after_script(workspace: Workspace, slot: str) -> Any:
    return workspace.bash("\n".join(job()["after_script"]), {"CI_CONCURRENT_ID": slot}, options="-eo pipefail")


def test_after_script_deletes_the_slots_cluster_and_no_other(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "job")
    tools = workspace.root / ".tools" / "bin"  # where before_script installs kind
    tools.mkdir(parents=True)
    (tools / "kind").symlink_to(workspace.root / "tools" / "kind")
    workspace.set_kind_clusters(["meshconf-1", "meshconf-3"])
    done = after_script(workspace, "3")
    assert done.returncode == 0, done.stderr
    assert workspace.kind_clusters() == ["meshconf-1"]
    assert workspace.calls("kind") == [["delete", "cluster", "--name", "meshconf-3",
                                        "--kubeconfig", kubeconfig_of_slot(tmp_path, "3")]]


def test_after_script_without_kind_installed_does_nothing(tmp_path: Path) -> None:
    # A job cancelled before before_script installed kind has no cluster to delete.
    workspace = Workspace(tmp_path)
    workspace.set_kind_clusters(["meshconf-3"])
    done = after_script(workspace, "3")
    assert done.returncode == 0, done.stderr
    assert workspace.calls("kind") == [] and workspace.kind_clusters() == ["meshconf-3"]


def minutes(duration: str) -> int:
    """A GitLab duration of hours and minutes ("1h", "50m", "1h 10m") in minutes."""
    parts = re.findall(r"(\d+)\s*([hm])", duration)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == duration.replace(" ", ""), duration
    return sum(int(n) * (60 if unit == "h" else 1) for n, unit in parts)


def test_after_script_has_its_time_before_the_job_times_out() -> None:
    # The script's own timeout ends it first and after_script runs within the job's timeout
    # (docs.gitlab.com ci/runners/configure_runners, "Set script and after_script timeouts").
    variables = job()["variables"]
    script, after = minutes(variables["RUNNER_SCRIPT_TIMEOUT"]), minutes(variables["RUNNER_AFTER_SCRIPT_TIMEOUT"])
    assert script + after < minutes(job()["timeout"])
