"""The fake tools' command-line check: subcommands and flags as the real tools parse them.

Standard library only: it runs inside each fake executable, and tests import it to check
the command lines meshconf builds. The flag sets are data (flags/<tool>.json, with the
upstream source of each command); this module only parses as cobra and pflag do and
answers a refusal in the words and exit code of the real tool:

- cobra's Find (cobra command.go): words that are not flags select the subcommand; the
  flags of the chosen command and the persistent flags of its parents then parse every
  argument. docker instead traverses (TraverseChildren): each level's flags only before
  the next subcommand word.
- pflag (flag.go): `--name value`, `--name=value`, `-n value`, `-nvalue`, combined bool
  shorthands, `--` ends the flags; bool flags take no separate value.
- cobra adds --help/-h to every command (InitDefaultHelpFlag).
"""

import re
from typing import Any

from .commands import Command, Parsed, Refusal, Unmodelled, command, load
from .refusals import DIALECTS, Dialect

BOOL_WORDS = {"1", "0", "t", "f", "T", "F", "true", "false", "TRUE", "FALSE", "True", "False"}
# Go's time.ParseDuration: "0", or a sequence of decimal numbers each with a unit.
GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+)$")
INTEGER_TYPES = {"int", "int32", "int64", "uint", "uint64"}


class FlagError(Exception):
    """pflag's parse error, or cobra's argument check."""


class UnknownCommand(Exception):
    """cobra's Find (or the root's own check) found no such subcommand."""


class Help(Exception):
    """--help or a group command without a subcommand: cobra prints the usage."""


def check(tool: str, argv: list[str]) -> Parsed | Refusal | Unmodelled:
    """Parse argv (without the tool's name) as the real tool would."""
    data = load(tool)
    dialect = DIALECTS[tool]
    try:
        if data.get("traverse"):
            node, flags, args = _traverse(tool, data, argv)
        else:
            node, rest = _find(tool, data, argv)
            if not node.modelled:
                return Unmodelled(node.path)
            flags, args = _parse(node, rest)
        if not node.modelled:
            return Unmodelled(node.path)
        if flags.get("help"):
            raise Help()
        _check_args(node, args, flags, dialect)
    except UnknownCommand as unknown:
        return dialect.unknown_command(str(unknown))
    except ArgsError as error:
        return dialect.args_error(str(error))
    except FlagError as error:
        return dialect.flag_error(node_of(error), str(error), data)
    except Help:
        return Refusal(0, stdout=f"Usage:\n  {node.use_line(data.get('flags_in_use_line', True))}\n")
    except GroupWithoutSubcommand:
        return dialect.group_without_subcommand(node)
    return Parsed(tool, node.path, args, flags)


# -- cobra's command lookup ---------------------------------------------------------------


def _find(tool: str, data: dict[str, Any], argv: list[str]) -> tuple[Command, list[str]]:
    """cobra's Find: descend by the non-flag words, leaving every argument for the parse."""
    node = command(tool, data, ())
    rest = list(argv)
    while True:
        words = _strip_flags(rest, node)
        if not words:
            return node, rest
        name = node.subcommand(words[0])
        if name is None:
            if node.parent is None and node.spec.get("args") == "subcommands":
                raise UnknownCommand(_unknown_command_text(node, words[0], tool))
            return node, rest
        rest.remove(words[0])
        node = command(tool, data, (*node.path, name))


def _traverse(tool: str, data: dict[str, Any], argv: list[str]) -> tuple[Command, dict[str, list[str]], list[str]]:
    """cobra's Traverse: each level parses the flags before the next subcommand word."""
    node = command(tool, data, ())
    flags: dict[str, list[str]] = {}
    pending: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("-") and arg != "-":
            pending.append(arg)
            spec = _lookup(node, arg)
            if spec is not None and "=" not in arg and _takes_value(spec) and index + 1 < len(argv):
                index += 1
                pending.append(argv[index])
            index += 1
            continue
        name = node.subcommand(arg)
        if name is None:
            break
        parsed, _ = _parse(node, pending)
        flags.update(parsed)
        pending = []
        node = command(tool, data, (*node.path, name))
        index += 1
    if node.parent is None and index < len(argv):
        raise UnknownCommand(argv[index])
    parsed, args = _parse(node, pending + argv[index:])
    flags.update(parsed)
    return node, flags, args


def _strip_flags(args: list[str], node: Command) -> list[str]:
    """cobra's stripFlags: the words left once flags (and their values) are removed."""
    words: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--") and "=" not in arg:
            spec = _lookup(node, arg)
            if spec is None or _takes_value(spec):
                index += 1
        elif arg.startswith("-") and not arg.startswith("--") and len(arg) == 2:
            spec = _lookup(node, arg)
            if spec is None or _takes_value(spec):
                index += 1
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def _unknown_command_text(node: Command, word: str, tool: str) -> str:
    suggestions = _suggestions(node, word)
    text = f'unknown command "{word}" for "{tool}"'
    if suggestions:
        text += "\n\nDid you mean this?\n" + "".join(f"\t{s}\n" for s in suggestions)
    return text


def _suggestions(node: Command, typed: str) -> list[str]:
    """cobra's SuggestionsFor: Levenshtein distance of at most 2, or a prefix."""
    found = []
    for name in node.spec.get("subcommands", []):
        if _levenshtein(typed.lower(), name.lower()) <= 2 or name.lower().startswith(typed.lower()):
            found.append(name)
    return found


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


# -- pflag's parse --------------------------------------------------------------------------


class _Located(FlagError):
    def __init__(self, node: Command, message: str) -> None:
        super().__init__(message)
        self.node = node


def node_of(error: FlagError) -> "Command | None":
    return error.node if isinstance(error, _Located) else None


def _lookup(node: Command, arg: str) -> dict[str, Any] | None:
    specs = node.flag_specs()
    if arg.startswith("--"):
        name = arg[2:].split("=", 1)[0]
        return next((s for s in specs if s["name"] == name), None)
    return next((s for s in specs if s.get("short") == arg[1:2]), None)


def _takes_value(spec: dict[str, Any]) -> bool:
    return spec["type"] != "bool" and "optional_value" not in spec


def _parse(node: Command, args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    flags: dict[str, list[str]] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positional += args[index:]
            break
        if arg.startswith("--") and len(arg) > 2:
            index = _long(node, arg, args, index, flags)
        elif arg.startswith("-") and len(arg) > 1:
            index = _shorts(node, arg, args, index, flags)
        else:
            positional.append(arg)
    return flags, positional


def _long(node: Command, arg: str, args: list[str], index: int, flags: dict[str, list[str]]) -> int:
    name, has_value, value = arg[2:].partition("=")
    spec = _lookup(node, arg)
    if spec is None:
        raise _Located(node, f"unknown flag: --{name}")
    if not has_value:
        if not _takes_value(spec):
            value = spec.get("optional_value", "true")
        elif index < len(args):
            value, index = args[index], index + 1
        else:
            raise _Located(node, f"flag needs an argument: {arg}")
    _store(node, spec, value, f"--{name}", flags)
    return index


def _shorts(node: Command, arg: str, args: list[str], index: int, flags: dict[str, list[str]]) -> int:
    letters = arg[1:]
    while letters:
        letter, letters = letters[0], letters[1:]
        spec = _lookup(node, f"-{letter}")
        if spec is None:
            raise _Located(node, f"unknown shorthand flag: '{letter}' in {arg}")
        shown = f"-{letter}, --{spec['name']}"
        if letters.startswith("="):
            value, letters = letters[1:], ""
        elif not _takes_value(spec):
            value = spec.get("optional_value", "true")
        elif letters:
            value, letters = letters, ""
        elif index < len(args):
            value, index = args[index], index + 1
        else:
            raise _Located(node, f"flag needs an argument: '{letter}' in {arg}")
        _store(node, spec, value, shown, flags)
    return index


def _store(node: Command, spec: dict[str, Any], value: str, shown: str, flags: dict[str, list[str]]) -> None:
    problem = _invalid(spec["type"], value)
    if problem:
        raise _Located(node, f'invalid argument "{value}" for "{shown}" flag: {problem}')
    flags.setdefault(spec["name"], []).append(value)


def _invalid(kind: str, value: str) -> str | None:
    """Why pflag's Set refuses value for a flag of this type (Go's parse error), or None."""
    if kind == "bool" and value not in BOOL_WORDS:
        return f'strconv.ParseBool: parsing "{value}": invalid syntax'
    if kind == "duration" and not GO_DURATION.match(value):
        return f'time: invalid duration "{value}"'
    if kind in INTEGER_TYPES and not re.fullmatch(r"[-+]?\d+", value):
        return f'strconv.Parse{"Uint" if kind.startswith("u") else "Int"}: parsing "{value}": invalid syntax'
    if kind == "float32" and not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value):
        return f'strconv.ParseFloat: parsing "{value}": invalid syntax'
    return None


# -- cobra's argument checks --------------------------------------------------------------


class GroupWithoutSubcommand(Exception):
    pass


class ArgsError(_Located):
    """The command's positional-argument check failed."""


def _check_args(node: Command, args: list[str], flags: dict[str, list[str]], dialect: "Dialect") -> None:
    rule = node.spec["args"]
    if rule == "any":
        return
    if rule == "subcommands":
        raise GroupWithoutSubcommand()
    if rule == "none":
        if args:
            raise ArgsError(node, dialect.no_args(node, args[0]))
        return
    if "pod_or_file" in rule:
        if (len(args) == 1) == ("file" in flags):
            raise ArgsError(node, rule["pod_or_file"])
        return
    if "requires_one_of" in rule and not any(name in flags for name in rule["requires_one_of"]):
        raise ArgsError(node, rule["missing_message"])
    message = dialect.count_problem(node, rule, len(args))
    if message:
        raise ArgsError(node, message)
