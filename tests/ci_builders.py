"""Helpers for the tests of the CI templates (ci/): schema checks, the meshconf command lines in
their shell steps, and a workspace where those steps run for real in bash, with meshconf's real
`gate` (tests/fakes/ci/meshconf), a fake `gh` (tests/fakes/ci/gh), the contract tests' fake `kind`
(tests/fakes/bin/kind, its clusters in a state file) and the real curl against a local stand-in
for GitLab's job artifacts API."""

import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conformance.report.results import Outcome
from tests.builders import REPO
from tests.report_builders import report, write

GITHUB_WORKFLOW = REPO / "ci" / "github" / "meshconf.yml"
GITLAB_CI = REPO / "ci" / "gitlab" / ".gitlab-ci.yml"
FAKES = REPO / "tests" / "fakes" / "ci"
FAKE_KIND = REPO / "tests" / "fakes" / "bin" / "kind"
# The meshconf installed with the harness: the fake hands `gate` to it.
MESHCONF = Path(sys.executable).parent / "meshconf"
# Where both templates install meshconf and run it from.
PROGRAM = ".venv/bin/meshconf"
# Reports a gate compares: every feature passing, and WeightedSplit failing.
PASSING = {"WeightedSplit": Outcome.PASSED, "HeaderMatchRouting": Outcome.PASSED}
REGRESSED = {"WeightedSplit": Outcome.FAILED, "HeaderMatchRouting": Outcome.PASSED}
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "(", ")"}
# GitLab's 404 bodies on GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path:
# no successful pipeline on the ref with the job's artifacts (Project#latest_successful_build_for_ref!
# raises RecordNotFound, answered in lib/api/api.rb), no such file in them (Workhorse's
# http.NotFound in workhorse/internal/artifacts/entry.go), and a project the token may not see
# (lib/api/helpers.rb not_found!('Project')).
NO_JOB = '{"message":"404 Not found"}'
NO_FILE = "404 page not found\n"
NO_PROJECT = '{"message":"404 Project Not Found"}'


def schema_check(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with one of its vendored schemas (vendor.github-workflows, vendor.gitlab-ci)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=120)


def meshconf_commands(script: str, variables: Mapping[str, str] | None = None) -> list[list[str]]:
    """Each meshconf command line in a shell script, as argv after the program: continuation lines
    joined, cut at the first shell operator (`> gate.md`, `|| status=$?`), each word that is
    exactly `$NAME` replaced from `variables` (an unknown one stays as it is)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        if PROGRAM not in words:
            continue
        argv = []
        for word in words[words.index(PROGRAM) + 1:]:
            if word in SHELL_OPERATORS:
                break
            argv.append((variables or {}).get(word[1:], word) if word.startswith("$") else word)
        commands.append(argv)
    return commands


@dataclass
class Workspace:
    """A job's working directory: results/report.yaml as a run wrote it, .venv/bin/meshconf as the
    stand-in, fakes first on PATH; `bash` runs a step's script there and every call is logged."""

    root: Path
    log: Path = field(init=False)
    kind_log: Path = field(init=False)  # the fake kind's, {"tool": "kind", "argv": ["kind", ...]}
    kind_state: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "calls.jsonl"
        self.log.touch()
        self.kind_log = self.root / "kind-calls.jsonl"
        self.kind_log.touch()
        self.kind_state = self.root / "kind-state.json"
        self.kind_state.write_text("{}")
        tools = self.root / "tools"
        tools.mkdir()
        (tools / "gh").symlink_to(FAKES / "gh")
        (tools / "kind").symlink_to(FAKE_KIND)
        (self.root / ".venv" / "bin").mkdir(parents=True)
        (self.root / PROGRAM).symlink_to(FAKES / "meshconf")
        (self.root / "results").mkdir()

    def write_new_report(self, outcomes: Mapping[str, Outcome]) -> Path:
        return write(self.root / "results" / "report.yaml", report(outcomes))

    def set_kind_clusters(self, names: list[str]) -> None:
        """Clusters on the Docker host before the job, as the fake kind sees them."""
        self.kind_state.write_text(json.dumps({"kind_clusters": names}))

    def kind_clusters(self) -> list[str]:
        return list(json.loads(self.kind_state.read_text()).get("kind_clusters", []))

    def bash(self, script: str, env: Mapping[str, str], options: str = "-e") -> subprocess.CompletedProcess[str]:
        """The script as the runner runs it: `bash -e` (GitHub's default), `-eo pipefail` (GitLab's)."""
        environment = {"PATH": f"{self.root / 'tools'}:{os.environ['PATH']}", "HOME": str(self.root),
                       "MESHCONF_CI_LOG": str(self.log), "MESHCONF_REAL": str(MESHCONF),
                       "MESHCONF_FAKE_LOG": str(self.kind_log), "MESHCONF_FAKE_STATE": str(self.kind_state), **env}
        return subprocess.run(["bash", "--noprofile", "--norc", *options.split(), "-c", script], cwd=self.root,
                              env=environment, capture_output=True, text=True, timeout=120)

    def calls(self, tool: str) -> list[list[str]]:
        """Each call's arguments after the program's name."""
        if tool == "kind":
            return [entry["argv"][1:] for entry in map(json.loads, self.kind_log.read_text().splitlines())]
        lines = self.log.read_text().splitlines()
        return [entry["argv"] for entry in map(json.loads, lines) if entry["tool"] == tool]


def report_text(outcomes: Mapping[str, Outcome], directory: Path) -> str:
    """A report as `meshconf run` writes it, made in `directory`, as text (a baseline's content)."""
    directory.mkdir(parents=True, exist_ok=True)
    return write(directory / "report.yaml", report(outcomes)).read_text()


@dataclass
class ArtifactsApi:
    """GitLab's `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=name`
    (lib/api/ci/job_artifacts.rb): 200 with the file when `files` has (ref, job, path) and the
    request carries `token` as JOB-TOKEN (or PRIVATE-TOKEN), 401 without it; 404 with GitLab's
    body for another project (NO_PROJECT), a (ref, job) without files (NO_JOB) or a missing file
    (NO_FILE). `override`, when set, is every request's (status, body) instead."""

    token: str
    files: dict[tuple[str, str, str], str]
    override: tuple[int, str] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def artifacts_api(api: ArtifactsApi, project: str = "42") -> Iterator[ArtifactsApi]:
    prefix = f"/api/v4/projects/{project}/jobs/artifacts/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            api.requests.append({"path": parts.path, "query": query,
                                 "JOB-TOKEN": self.headers.get("JOB-TOKEN"),
                                 "PRIVATE-TOKEN": self.headers.get("PRIVATE-TOKEN")})
            if api.override is not None:
                return self.answer(*api.override)
            if api.token not in (self.headers.get("JOB-TOKEN"), self.headers.get("PRIVATE-TOKEN")):
                return self.answer(401, '{"message":"401 Unauthorized"}')
            if not parts.path.startswith(prefix):
                return self.answer(404, NO_PROJECT)
            ref, _, artifact_path = parts.path.removeprefix(prefix).partition("/raw/")
            job = query.get("job", [""])[0]
            if not any((ref, job) == (r, j) for r, j, _ in api.files):
                return self.answer(404, NO_JOB)
            body = api.files.get((ref, job, artifact_path))
            if body is None:
                return self.answer(404, NO_FILE)
            self.answer(200, body)

        def answer(self, code: int, body: str) -> None:
            self.send_response(code)
            json_body = body.startswith("{")
            self.send_header("Content-Type", "application/json" if json_body else "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}/api/v4"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
