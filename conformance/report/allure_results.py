"""What a run adds to its Allure results beside the test results: where it ran, who ran it, how
to sort failures, and how Allure 3 draws the tree.

Written once, by the process that writes the conformance report (the pytest-xdist controller or
a serial run), after the tests: the target's facts are known by then. The file formats are Allure
2's (allure-framework/allure2: environment.properties read as Java properties, executor.json
allure-plugin-api/.../entity/ExecutorInfo.java, categories.json .../category/Category.java),
which Allure 3 reads too (allure-framework/allure3 packages/reader/src/allure2/index.ts); the
tree and the categories Allure 3 takes from its config file instead (below).
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.features import PROFILES
from conformance.report import failure_kinds
from conformance.report.results import ResultBook

ENVIRONMENT_FILE = "environment.properties"
EXECUTOR_FILE = "executor.json"
CATEGORIES_FILE = "categories.json"
# Allure 3's configuration, static JSON (allurereport.org/docs/v3/configure: allurerc.json among
# the names it looks for). It lives in the results directory, where Allure 2 ignores it and
# Allure 3's readers take no file of that name for a result; pass it with --config.
CONFIG_FILE = "allurerc.json"
REPORT_NAME = "meshconf conformance"
# Allure 3's tree, profile > feature: the awesome plugin's groupBy option lists the labels
# each level groups by (allure3 packages/plugin-awesome/README.md, "groupBy"; without it the
# tree follows the test framework's titlePath: suites > test_traffic.py).
TREE_LABELS = ("parentSuite", "suite")


def environment(book: ResultBook) -> dict[str, str]:
    """The run's facts, named as in the conformance report; a fact not known is left out."""
    facts = book.facts
    values: dict[str, str | None] = {
        "target": facts.target if facts else book.target,
        "mode": facts.mode if facts else None,
        "mesh": facts.mesh if facts else None,
        "meshVersion": facts.mesh_version if facts else None,
        "envoyVersion": facts.envoy_version if facts else None,
        # The local reference mesh has no Kubernetes: its facts say None.
        "kubernetesVersion": (facts.kubernetes_version or "none") if facts else None,
        "context": facts.context if facts else None,
        "runId": book.run_id,
        "profiles": ", ".join(p for p in PROFILES if any(f.profile == p for f in book.selected)),
        "harness": f"meshconf {__version__}",
    }
    return {k: v for k, v in values.items() if v}


def properties(values: Mapping[str, str]) -> str:
    """Java properties text (java.util.Properties.load): ISO 8859-1, so anything else escaped."""
    return "".join(f"{key}={_escape(value)}\n" for key, value in values.items())


def _escape(value: str) -> str:
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif ord(char) > 0x7E or ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def executor(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Who ran it, from the CI's own variables; None outside GitHub Actions and GitLab CI.

    GitHub: docs.github.com/en/actions/reference/variables-reference (GITHUB_*); GitLab:
    docs.gitlab.com/ci/variables/predefined_variables (CI_*).
    """
    if env.get("GITHUB_ACTIONS") == "true":
        repository = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env.get('GITHUB_REPOSITORY', '')}"
        number = env.get("GITHUB_RUN_NUMBER", "")
        return _present({
            "name": "GitHub Actions", "type": "github", "url": repository,
            "buildOrder": int(number) if number.isdigit() else None,
            "buildName": f"{env.get('GITHUB_WORKFLOW', 'workflow')} #{number}" if number else env.get("GITHUB_WORKFLOW"),
            "buildUrl": f"{repository}/actions/runs/{env['GITHUB_RUN_ID']}" if env.get("GITHUB_RUN_ID") else None,
            "reportName": REPORT_NAME,
        })
    if env.get("GITLAB_CI") == "true":
        pipeline = env.get("CI_PIPELINE_ID", "")
        return _present({
            "name": "GitLab CI", "type": "gitlab", "url": env.get("CI_PIPELINE_URL"),
            "buildOrder": int(pipeline) if pipeline.isdigit() else None,
            "buildName": f"{env.get('CI_JOB_NAME', 'job')} (pipeline #{pipeline})" if pipeline else env.get("CI_JOB_NAME"),
            "buildUrl": env.get("CI_JOB_URL"),
            "reportName": REPORT_NAME,
        })
    return None


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


def allure3_config(history: Path | None = None) -> dict[str, Any]:
    """Allure 3's configuration: the name, the categories and the profile > feature tree; with
    `history`, the JSON-lines file it reads earlier runs from and appends this one to
    (historyPath: allurereport.org/docs/v3/configure, "History options")."""
    config: dict[str, Any] = {
        "name": REPORT_NAME,
        "categories": failure_kinds.categories(),
        # singleFile: the data inside index.html, so that the HTML opens from disk (a CI artifact):
        # otherwise the page fetches its data, which a file:// page cannot (plugin-awesome's
        # AwesomePluginOptions.singleFile, allure 3.18.0).
        "plugins": {"awesome": {"options": {"reportName": REPORT_NAME, "groupBy": list(TREE_LABELS),
                                            "singleFile": True}}},
    }
    if history is not None:
        config["historyPath"] = str(history)
    return config


def write(directory: Path, book: ResultBook, env: Mapping[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ENVIRONMENT_FILE).write_text(properties(environment(book)), encoding="latin-1")
    (directory / CATEGORIES_FILE).write_text(json.dumps(failure_kinds.categories(), indent=2) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(allure3_config(), indent=2) + "\n")
    ci = executor(env)
    if ci is not None:
        (directory / EXECUTOR_FILE).write_text(json.dumps(ci, indent=2) + "\n")
