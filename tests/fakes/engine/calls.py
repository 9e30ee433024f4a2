"""What every fake tool's handler works with: the parsed call, the shared state, the answer."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .commands import Parsed

State = dict[str, Any]  # shared by all tools of one test (MESHCONF_FAKE_STATE)
Spec = dict[str, Any]  # the scenario's answer for this call, if it has one


@dataclass
class ToolAnswer:
    exit: int = 0
    stdout: str = ""
    stderr: str = ""


# A tool's built-in behaviour for one subcommand; the scenario's spec may still override the answer.
Handler = Callable[[Parsed, State, Spec], ToolAnswer]
