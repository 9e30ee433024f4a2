"""The fake CLI tools' shared engine: check the command line, log the call, answer, keep state.

Runs inside each fake executable (tests/fakes/bin/<tool>), with the standard library only.
Environment (set by the `fake_tools` fixture):
  MESHCONF_FAKE_LOG       one JSON line per call: {"tool": ..., "argv": [tool, args...]}
  MESHCONF_FAKE_SCENARIO  JSON: {"state": {...initial...}, "<tool>": {"<args prefix>": spec}}
  MESHCONF_FAKE_STATE     JSON state shared by all tools of one test (e.g. kind clusters, helm
                          releases; "server": the API server URL kind writes into kubeconfigs)

Every call is first checked as the real tool parses it (flagcheck.py, flag data in ../flags/):
a subcommand or flag the real tool lacks gets the real tool's refusal and exit code, and a
subcommand without flag data fails loudly (exit 97).

An accepted call runs the tool's built-in handler for its subcommand (fake_<tool>.py), which
may change state; the scenario's spec then overrides the answer: {"exit": int, "stdout": str,
"stderr": str, "sleep": seconds}. A spec answers the longest key (space-separated words)
that prefixes the arguments, e.g. "upgrade --install istiod". A handler may read the spec to
act as the real tool would when it fails (e.g. kind keeps the nodes of a failed create when
--retain was given). A call that neither a handler nor the scenario knows fails loudly (exit
97), so a test never passes on an answer nobody wrote.

Adding a tool: copy bin/kind to bin/<tool> changing the name, write flags/<tool>.json from the
tool's source (provenance included), say in refusals.py how it words a refusal, and put its
default behaviour in fake_<tool>.py's HANDLERS.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import fake_docker, fake_helm, fake_kind
from .calls import Handler, ToolAnswer
from .commands import Parsed, Refusal, Unmodelled
from .flagcheck import check

UNKNOWN_EXIT = 97
HANDLERS: dict[str, dict[str, Handler]] = {
    "docker": fake_docker.HANDLERS,
    "helm": fake_helm.HANDLERS,
    "kind": fake_kind.HANDLERS,
}


def _read_json(path: str | None) -> dict[str, Any]:
    if not path or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text() or "{}")


def _match(args: list[str], keys: set[str]) -> str | None:
    """The longest key whose words prefix args."""
    best = None
    for key in keys:
        words = key.split()
        if args[: len(words)] == words and (best is None or len(words) > len(best.split())):
            best = key
    return best


def _log(tool: str, args: list[str]) -> None:
    log = os.environ.get("MESHCONF_FAKE_LOG")
    if log:
        # One write per line with O_APPEND: calls from several processes do not interleave.
        with open(log, "a") as f:
            f.write(json.dumps({"tool": tool, "argv": [tool, *args]}) + "\n")


def _answer(tool: str, args: list[str], call: Parsed) -> ToolAnswer:
    scenario = _read_json(os.environ.get("MESHCONF_FAKE_SCENARIO"))
    state_path = os.environ.get("MESHCONF_FAKE_STATE")
    state = _read_json(state_path)
    specs: dict[str, Any] = scenario.get(tool, {})
    key = _match(args, set(specs))
    spec = specs.get(key, {}) if key else {}
    handler = HANDLERS.get(tool, {}).get(" ".join(call.path))
    if handler is None and key is None:
        return ToolAnswer(UNKNOWN_EXIT, stderr=f"fake {tool}: no behaviour for {args!r}; add it to the scenario "
                                               f"or to HANDLERS in tests/fakes/engine/fake_{tool}.py\n")
    reply = handler(call, state, spec) if handler else ToolAnswer()
    if state_path:
        Path(state_path).write_text(json.dumps(state, indent=1))
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))  # a tool that hangs: the caller's timeout must stop it
    return ToolAnswer(int(spec.get("exit", reply.exit)), spec.get("stdout", reply.stdout),
                      spec.get("stderr", reply.stderr))


def main(tool: str) -> int:
    args = sys.argv[1:]
    _log(tool, args)
    call = check(tool, args)
    if isinstance(call, Refusal):
        reply = ToolAnswer(call.exit, call.stdout, call.stderr)
    elif isinstance(call, Unmodelled):
        reply = ToolAnswer(UNKNOWN_EXIT, stderr=f"fake {tool}: `{' '.join((tool, *call.path))}` has no flag data; "
                                                f"add it to tests/fakes/flags/{tool}.json from {tool}'s source\n")
    else:
        reply = _answer(tool, args, call)
    sys.stdout.write(reply.stdout)
    sys.stderr.write(reply.stderr)
    return reply.exit
