"""The fake tools' commands as their flag data describes them, and what a check of a call finds.

Standard library only: it runs inside each fake executable. The data is flags/<tool>.json.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS_DIR = Path(__file__).resolve().parent.parent / "flags"
TOOLS = ("docker", "helm", "istioctl", "kind")
HELP = {"name": "help", "short": "h", "type": "bool"}


@dataclass
class Parsed:
    """A command line the real tool accepts."""

    tool: str
    path: tuple[str, ...]  # the subcommand's canonical words, e.g. ("create", "cluster")
    args: list[str]  # positional arguments
    flags: dict[str, list[str]] = field(default_factory=dict)  # long name -> values, in order

    def value(self, name: str, default: str | None = None) -> str | None:
        """The last value of a flag (pflag keeps the last one of a scalar flag)."""
        values = self.flags.get(name)
        return values[-1] if values else default

    def has(self, name: str) -> bool:
        return self.value(name) in ("true", "1", "t", "T", "TRUE", "True")


@dataclass
class Refusal:
    """What the real tool prints and exits with for a command line it does not accept."""

    exit: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class Unmodelled:
    """A real subcommand whose flags are not in the flag data yet."""

    path: tuple[str, ...]


@dataclass
class Command:
    tool: str
    path: tuple[str, ...]
    spec: dict[str, Any]
    parent: "Command | None"

    @property
    def modelled(self) -> bool:
        return "args" in self.spec

    def subcommand(self, word: str) -> str | None:
        """The canonical name of the subcommand `word` names (a name or an alias)."""
        names = list(self.spec.get("subcommands", []))
        if self.parent is None and names:
            names.append("help")  # cobra's InitDefaultHelpCmd
        if word in names:
            return word
        for name, aliases in self.spec.get("aliases", {}).items():
            if word in aliases:
                return name
        return None

    def flag_specs(self) -> list[dict[str, Any]]:
        """This command's own flags and every parent's persistent ones."""
        specs = [HELP, *self.spec.get("flags", []), *self.spec.get("persistent", [])]
        parent = self.parent
        while parent is not None:
            specs += parent.spec.get("persistent", [])
            parent = parent.parent
        return specs

    def command_path(self) -> str:
        return " ".join((self.tool, *self.path))

    def use_line(self, flags_in_use_line: bool) -> str:
        use = self.spec.get("use", self.path[-1] if self.path else self.tool)
        line = f"{' '.join((self.tool, *self.path[:-1]))} {use}" if self.path else use
        return line + (" [flags]" if flags_in_use_line and "[flags]" not in line else "")


def load(tool: str) -> dict[str, Any]:
    return json.loads((FLAGS_DIR / f"{tool}.json").read_text())


def command(tool: str, data: dict[str, Any], path: tuple[str, ...]) -> Command:
    node = Command(tool, (), data["commands"][""], None)
    for depth in range(1, len(path) + 1):
        node = Command(tool, path[:depth], data["commands"].get(" ".join(path[:depth]), {}), node)
    return node
