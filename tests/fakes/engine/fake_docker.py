"""The fake `docker`: a healthy engine answering `docker info`."""

from .calls import Handler, Spec, State, ToolAnswer
from .commands import Parsed

SERVER_VERSION = "28.3.0"


def info(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    if call.value("format") == "{{.ServerVersion}}":
        return ToolAnswer(stdout=f"{SERVER_VERSION}\n")
    return ToolAnswer(stdout=f"Server:\n Server Version: {SERVER_VERSION}\n")


HANDLERS: dict[str, Handler] = {"info": info}
