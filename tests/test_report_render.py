"""`meshconf report`: Allure 3 through npx when Node is here (a strict fake npx stands in for it),
the exact command when it is not; history carried in DIR/history.jsonl."""

import json
import shlex
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.report import allure_results, render
from tests import fake_npx


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A run's results directory as `meshconf run` leaves it: one test result and the run's extras."""
    allure_dir = tmp_path / "results" / "allure"
    allure_dir.mkdir(parents=True)
    (allure_dir / "0-result.json").write_text(json.dumps({"name": "WeightedSplit: 80/20", "status": "passed"}))
    (allure_dir / allure_results.CONFIG_FILE).write_text(json.dumps(allure_results.allure3_config()))
    return tmp_path / "results"


@pytest.fixture
def npx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake npx alone on PATH; its calls are logged here."""
    fake_npx.install(tmp_path / "bin")
    log = tmp_path / "npx-calls.jsonl"
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("FAKE_NPX_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_report_renders_with_pinned_allure3_and_carries_history(results: Path, npx: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    history = tmp_path / "history"
    assert main(["report", "results", "--history", str(history)]) == 0
    assert main(["report", "results", "--history", str(history)]) == 0
    config = Path("results") / allure_results.CONFIG_FILE
    assert calls(npx) == [["--yes", "allure@3.18.0", "generate", "--config", str(config),
                           "--output", str(Path("results") / "allure-report"), str(Path("results") / "allure")]] * 2
    written = json.loads(config.read_text())
    assert written["historyPath"] == str((history / "history.jsonl").resolve())
    assert written["plugins"]["awesome"]["options"]["groupBy"] == ["parentSuite", "suite"]
    assert (results / "allure-report" / "index.html").is_file()
    # Each rendering appended its run to the one history file the next one reads.
    assert len((history / "history.jsonl").read_text().splitlines()) == 2


def test_report_output_option_and_no_history(results: Path, npx: Path, tmp_path: Path) -> None:
    out = tmp_path / "html"
    assert main(["report", str(results), "--output", str(out)]) == 0
    assert (out / "index.html").is_file()
    assert "historyPath" not in json.loads((results / allure_results.CONFIG_FILE).read_text())


def test_without_node_it_prints_the_exact_command_and_succeeds(results: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["report", str(results), "--history", str(tmp_path / "h")]) == 0
    out, err = capsys.readouterr()
    expected = render.command(results / allure_results.CONFIG_FILE, results / "allure-report", results / "allure")
    assert out.strip() == shlex.join(expected)
    assert out.startswith("npx --yes allure@3.18.0 generate --config ")
    assert "no npx on PATH" in err
    # The command it printed works as printed: its config (with the history file) is written.
    assert json.loads((results / allure_results.CONFIG_FILE).read_text())["historyPath"].endswith("h/history.jsonl")
    assert not (results / "allure-report").exists()


def test_a_failed_rendering_is_exit_1_and_no_results_is_bad_input(results: Path, npx: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NPX_OFFLINE", "1")
    assert main(["report", str(results)]) == 1
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert len(calls(npx)) == 1


@pytest.mark.parametrize(("argv", "refusal"), [
    (["--yes", "allure@3.18.0", "generate", "--history-path", "h.jsonl", "r"], 'Unsupported option name ("--history-path")'),
    (["--yes", "allure@3.18.0", "generate", "--open=yes", "r"], 'Invalid option name ("--open=yes")'),
    (["--yes", "allure@3.18.0", "generate", "--config"], "Not enough arguments to option --config"),
    (["--yes", "allure@3.18.0", "render", "r"], "Command not found"),
    (["--yes", "allure", "generate", "r"], "allure@3.18.0 only"),
    (["--registry", "x", "allure@3.18.0", "generate", "r"], "--yes only"),
])
def test_the_fake_npx_refuses_what_allure3_refuses(argv: list[str], refusal: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert fake_npx.main(argv) == 1
    assert refusal in capsys.readouterr().err


def test_the_fake_refuses_a_config_field_allure3_does_not_know(results: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = results / "bad.json"
    config.write_text(json.dumps({"name": "x", "groupBy": ["suite"]}))
    argv = ["--yes", "allure@3.18.0", "generate", "--config", str(config), "-o", str(results / "o"),
            str(results / "allure")]
    assert fake_npx.main(argv) == 1
    assert "unsupported fields: groupBy" in capsys.readouterr().err
    config.write_text(json.dumps(allure_results.allure3_config()))
    assert fake_npx.main(argv) == 0
