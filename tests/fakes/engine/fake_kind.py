"""The fake `kind`: clusters are names in the shared state; kubeconfigs point at the fake API.

Behaviour read in kubernetes-sigs/kind v0.32.0: pkg/cmd/kind/... (one file per subcommand,
see flags/kind.json), the default name "kind" (pkg/cluster/constants), `kind delete cluster`
being idempotent, and a failed create removing its nodes unless --retain was given.
"""

import json
import os
from pathlib import Path

from .calls import Handler, Spec, State, ToolAnswer
from .commands import Parsed

VERSION = "kind v0.32.0 go1.24.2 linux/amd64\n"
DEFAULT_NAME = "kind"


def _clusters(state: State) -> list[str]:
    return state.setdefault("kind_clusters", [])


def _name(call: Parsed) -> str:
    return call.value("name") or os.environ.get("KIND_CLUSTER_NAME") or DEFAULT_NAME


def version(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    return ToolAnswer(stdout=VERSION)


def get_clusters(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    names = sorted(_clusters(state))
    if not names:
        return ToolAnswer(stderr="No kind clusters found.\n")  # kind logs this; stdout stays empty
    return ToolAnswer(stdout="".join(f"{n}\n" for n in names))


def create_cluster(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    name = _name(call)
    clusters = _clusters(state)
    if name in clusters:
        return ToolAnswer(1, stderr=f'ERROR: failed to create cluster: node(s) already exist for a cluster '
                               f'with the name "{name}"\n')
    config = call.value("config")
    if config and not Path(config).is_file():
        return ToolAnswer(1, stderr=f"ERROR: failed to create cluster: open {config}: no such file or directory\n")
    failing = spec.get("exit", 0) != 0
    # The real kind removes a failed cluster's nodes itself unless --retain was given.
    if not failing or call.has("retain"):
        clusters.append(name)
    kubeconfig = call.value("kubeconfig")
    if not failing and kubeconfig:
        _write_kubeconfig(Path(kubeconfig), name, state)
    image = call.value("image", "kindest/node")
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


def delete_cluster(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    name = _name(call)
    clusters = _clusters(state)
    if name in clusters:  # a missing name is not an error: kind delete is like rm -f
        clusters.remove(name)
    return ToolAnswer(stderr=f'Deleting cluster "{name}" ...\n')


def export_kubeconfig(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    name = _name(call)
    if name not in _clusters(state):
        return ToolAnswer(1, stderr=f'ERROR: failed to export kubeconfig: unknown cluster "{name}"\n')
    # Without --kubeconfig the real kind edits $KUBECONFIG or ~/.kube/config: a fake never does.
    kubeconfig = call.value("kubeconfig")
    if not kubeconfig:
        return ToolAnswer(1, stderr="fake kind: refusing to export a kubeconfig without --kubeconfig\n")
    _write_kubeconfig(Path(kubeconfig), name, state)
    return ToolAnswer(stderr=f'Set kubectl context to "kind-{name}"\n')


def export_logs(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    name = _name(call)
    if name not in _clusters(state):
        return ToolAnswer(1, stderr=f'ERROR: unknown cluster "{name}"\n')
    # Without a directory the real kind makes a temporary one.
    directory = Path(call.args[0]) if call.args else Path(os.environ.get("TMPDIR", "/tmp")) / "kind-logs"
    node = directory / f"{name}-control-plane"
    node.mkdir(parents=True, exist_ok=True)
    # state "kubelet_log": what the node's kubelet logged (default: one line).
    (node / "kubelet.log").write_text(state.get("kubelet_log", "fake kubelet log\n"))
    (directory / "kind-version.txt").write_text(VERSION)
    return ToolAnswer(stdout=f"{directory}\n", stderr=f'Exporting logs for cluster "{name}" to:\n')


HANDLERS: dict[str, Handler] = {
    "version": version,
    "get clusters": get_clusters,
    "create cluster": create_cluster,
    "delete cluster": delete_cluster,
    "export logs": export_logs,
    "export kubeconfig": export_kubeconfig,
}
