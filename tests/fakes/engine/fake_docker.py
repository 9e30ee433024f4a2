"""The fake `docker`: a healthy engine answering `docker info`."""

from .calls import Handler, Spec, State, ToolAnswer
from .commands import Parsed, load

# The engine's version is the one the flag data was read at (docker/cli and the engine are
# released together, with one version number): what a real `docker info` would print beside it.
SERVER_VERSION = str(load("docker")["provenance"]["tag"]).removeprefix("v")


def info(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    if call.value("format") == "{{.ServerVersion}}":
        return ToolAnswer(stdout=f"{SERVER_VERSION}\n")
    return ToolAnswer(stdout=f"Server:\n Server Version: {SERVER_VERSION}\n")


HANDLERS: dict[str, Handler] = {"info": info}
