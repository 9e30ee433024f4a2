"""Fake CLI tools for contract tests: real executables on PATH that log and answer.

The fixtures come through tests/conftest.py's pytest_plugins; a test module asks for them by name:

    from tests.fakes import FakeTools

    @pytest.mark.parametrize("scenario", [{"docker": {"info": {"exit": 1}}}])
    def test_x(fake_tools: FakeTools) -> None:
        ...
        assert fake_tools.calls("docker") == [["docker", "info", ...]]

`scenario` defaults to {} (every tool healthy, no clusters); parametrizing it, or calling
fake_tools.set_scenario(), changes what the tools answer. See engine/__init__.py for the format.
"""

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(__file__).resolve().parent / "bin"


@dataclass
class FakeTools:
    bin_dir: Path  # the whole PATH while the fixture is active
    log: Path
    scenario_path: Path
    state_path: Path

    @classmethod
    def install(cls, root: Path, scenario: dict[str, Any]) -> "FakeTools":
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True)
        for tool in sorted(BIN.iterdir()):
            (bin_dir / tool.name).symlink_to(tool)
        # The fakes' `#!/usr/bin/env python3` must resolve with nothing else on PATH.
        (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
        fake = cls(bin_dir, root / "calls.jsonl", root / "scenario.json", root / "state.json")
        fake.log.touch()
        fake.set_scenario(scenario)
        return fake

    def env(self) -> dict[str, str]:
        return {
            "PATH": str(self.bin_dir),
            "MESHCONF_FAKE_LOG": str(self.log),
            "MESHCONF_FAKE_SCENARIO": str(self.scenario_path),
            "MESHCONF_FAKE_STATE": str(self.state_path),
        }

    def set_scenario(self, scenario: dict[str, Any]) -> None:
        """What the tools answer from now on; a "state" key also resets the shared state."""
        self.scenario_path.write_text(json.dumps(scenario, indent=1))
        if "state" in scenario or not self.state_path.exists():
            self.state_path.write_text(json.dumps(scenario.get("state", {}), indent=1))

    def remove(self, tool: str) -> None:
        """Make a tool not installed."""
        (self.bin_dir / tool).unlink()

    def all_calls(self) -> list[list[str]]:
        """Every call of every fake, in order, as argv lists starting with the tool name."""
        return [json.loads(line)["argv"] for line in self.log.read_text().splitlines() if line]

    def calls(self, tool: str) -> list[list[str]]:
        return [argv for argv in self.all_calls() if argv[0] == tool]

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())


@pytest.fixture
def scenario() -> dict[str, Any]:
    return {}


@pytest.fixture
def fake_tools(
    tmp_path: Path, scenario: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeTools]:
    """Only the fakes are on PATH, so no real docker or kind can be reached by mistake."""
    fake = FakeTools.install(tmp_path / "fake-tools", scenario)
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    # Nothing under test may touch the real ~/.kube or $KUBECONFIG.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    yield fake
