"""The fake CLI tools' shared engine: log the call, answer from the scenario, keep state.

Runs inside each fake executable (tests/fakes/bin/<tool>), with the standard library only.
Environment (set by the `fake_tools` fixture):
  MESHCONF_FAKE_LOG       one JSON line per call: {"tool": ..., "argv": [tool, args...]}
  MESHCONF_FAKE_SCENARIO  JSON: {"state": {...initial...}, "<tool>": {"<subcommand>": spec}}
  MESHCONF_FAKE_STATE     JSON state shared by all tools of one test (e.g. kind clusters;
                          "server": the API server URL kind writes into kubeconfigs)

A call is answered by the longest subcommand (space-separated words) that prefixes its
arguments, e.g. "create cluster" for `kind create cluster --name x`. The tool's built-in
handler (HANDLERS below) runs first and may change state; the scenario's spec then
overrides the answer: {"exit": int, "stdout": str, "stderr": str, "sleep": seconds}.
A handler may read the spec to act as the real tool would when it fails (e.g. kind
keeps the nodes of a failed create when --retain was given).

Adding a tool: copy tests/fakes/bin/kind to bin/<tool> changing the name; a scenario spec
alone can answer any subcommand, and default behaviour goes in HANDLERS[<tool>].
A call that neither a handler nor the scenario knows fails loudly (exit 97), so a test
never passes on an answer nobody wrote.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

State = dict[str, Any]
Spec = dict[str, Any]


@dataclass
class ToolAnswer:
    exit: int = 0
    stdout: str = ""
    stderr: str = ""


Handler = Callable[[list[str], State, Spec], ToolAnswer]
UNKNOWN_EXIT = 97


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value of `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def positionals(args: list[str], valued: tuple[str, ...]) -> list[str]:
    """The arguments that are neither flags nor the values of the flags in `valued`."""
    words, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in valued:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


# -- kind -------------------------------------------------------------------------------

def _clusters(state: State) -> list[str]:
    return state.setdefault("kind_clusters", [])


def kind_version(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    return ToolAnswer(stdout="kind v0.32.0 go1.24.2 linux/amd64\n")


def kind_get_clusters(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    names = sorted(_clusters(state))
    if not names:
        return ToolAnswer(stderr="No kind clusters found.\n")  # kind logs this; stdout stays empty
    return ToolAnswer(stdout="".join(f"{n}\n" for n in names))


def kind_create_cluster(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    name = flag(args, "--name", "kind") or "kind"
    clusters = _clusters(state)
    if name in clusters:
        return ToolAnswer(1, stderr=f'ERROR: failed to create cluster: node(s) already exist for a cluster '
                               f'with the name "{name}"\n')
    config = flag(args, "--config")
    if config and not Path(config).is_file():
        return ToolAnswer(1, stderr=f"ERROR: failed to create cluster: open {config}: no such file or directory\n")
    failing = spec.get("exit", 0) != 0
    # The real kind removes a failed cluster's nodes itself unless --retain was given.
    if not failing or "--retain" in args:
        clusters.append(name)
    kubeconfig = flag(args, "--kubeconfig")
    if not failing and kubeconfig:
        _write_kubeconfig(Path(kubeconfig), name, state)
    image = flag(args, "--image", "kindest/node")
    return ToolAnswer(stderr=f'Creating cluster "{name}" ...\n ✓ Ensuring node image ({image}) 🖼\n'
                        f' ✓ Preparing nodes 📦\nSet kubectl context to "kind-{name}"\n')


def _write_kubeconfig(path: Path, name: str, state: State) -> None:
    # JSON is YAML; no credentials: nothing may read real secrets from a fake.
    # state["server"] points the cluster at a fake API server (tests/fakeapi.py).
    context = f"kind-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": state.get("server", "https://127.0.0.1:6443")}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "users": [{"name": context, "user": {}}],
    }, indent=1))


def kind_delete_cluster(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    name = flag(args, "--name", "kind") or "kind"
    clusters = _clusters(state)
    if name in clusters:  # a missing name is not an error: kind delete is like rm -f
        clusters.remove(name)
    return ToolAnswer(stderr=f'Deleting cluster "{name}" ...\n')


def kind_export_kubeconfig(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    name = flag(args, "--name", "kind") or "kind"
    if name not in _clusters(state):
        return ToolAnswer(1, stderr=f'ERROR: failed to export kubeconfig: unknown cluster "{name}"\n')
    # Without --kubeconfig the real kind edits $KUBECONFIG or ~/.kube/config: a fake never does.
    kubeconfig = flag(args, "--kubeconfig")
    if not kubeconfig:
        return ToolAnswer(1, stderr="fake kind: refusing to export a kubeconfig without --kubeconfig\n")
    _write_kubeconfig(Path(kubeconfig), name, state)
    return ToolAnswer(stderr=f'Set kubectl context to "kind-{name}"\n')


def kind_export_logs(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    name = flag(args, "--name", "kind") or "kind"
    if name not in _clusters(state):
        return ToolAnswer(1, stderr=f'ERROR: unknown cluster "{name}"\n')
    words = positionals(args[2:], valued=("--name", "-n"))  # after "export logs"
    # Without a directory the real kind makes a temporary one.
    directory = Path(words[0]) if words else Path(os.environ.get("TMPDIR", "/tmp")) / "kind-logs"
    node = directory / f"{name}-control-plane"
    node.mkdir(parents=True, exist_ok=True)
    # state "kubelet_log": what the node's kubelet logged (default: one line).
    (node / "kubelet.log").write_text(state.get("kubelet_log", "fake kubelet log\n"))
    (directory / "kind-version.txt").write_text("kind v0.32.0 go1.24.2 linux/amd64\n")
    return ToolAnswer(stdout=f"{directory}\n", stderr=f'Exporting logs for cluster "{name}" to:\n')


# -- docker -----------------------------------------------------------------------------

def docker_info(args: list[str], state: State, spec: Spec) -> ToolAnswer:
    if flag(args, "--format") == "{{.ServerVersion}}":
        return ToolAnswer(stdout="28.3.0\n")
    return ToolAnswer(stdout="Server:\n Server Version: 28.3.0\n")


HANDLERS: dict[str, dict[str, Handler]] = {
    "kind": {
        "version": kind_version,
        "get clusters": kind_get_clusters,
        "create cluster": kind_create_cluster,
        "delete cluster": kind_delete_cluster,
        "export logs": kind_export_logs,
        "export kubeconfig": kind_export_kubeconfig,
    },
    "docker": {
        "info": docker_info,
    },
}


# -- engine -----------------------------------------------------------------------------

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


def main(tool: str) -> int:
    args = sys.argv[1:]
    log = os.environ.get("MESHCONF_FAKE_LOG")
    if log:
        # One write per line with O_APPEND: calls from several processes do not interleave.
        with open(log, "a") as f:
            f.write(json.dumps({"tool": tool, "argv": [tool, *args]}) + "\n")
    scenario = _read_json(os.environ.get("MESHCONF_FAKE_SCENARIO"))
    state_path = os.environ.get("MESHCONF_FAKE_STATE")
    state = _read_json(state_path)
    specs: dict[str, Spec] = scenario.get(tool, {})
    handlers = HANDLERS.get(tool, {})
    key = _match(args, set(specs) | set(handlers))
    if key is None:
        sys.stderr.write(f"fake {tool}: no behaviour for {args!r}; add it to the scenario "
                         f"or to HANDLERS in tests/fakes/engine.py\n")
        return UNKNOWN_EXIT
    spec = specs.get(key, {})
    reply = handlers[key](args, state, spec) if key in handlers else ToolAnswer()
    if state_path:
        Path(state_path).write_text(json.dumps(state, indent=1))
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))
    reply = ToolAnswer(
        int(spec.get("exit", reply.exit)),
        spec.get("stdout", reply.stdout),
        spec.get("stderr", reply.stderr),
    )
    sys.stdout.write(reply.stdout)
    sys.stderr.write(reply.stderr)
    return reply.exit
