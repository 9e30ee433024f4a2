"""hashicorp/http-echo 1.0.0: answers every request with one text and one status code
(github.com/hashicorp/http-echo v1.0.0 main.go, handlers.go; the image's Dockerfile).

Its flags, parsed as Go's flag package parses them (and refused in its words) (`-name=value`, `-name value`, one or two
dashes): -listen (default :5678), -text (default: the image's ECHO_TEXT, "hello-world"),
-status-code (default 200). /health answers 200 {"status":"ok"}; every other path answers the
text and a newline with the status code; every reply names the app in X-App-Name and X-App-Version.

The local mesh decides the address an app listens on: -listen's port must be the container's
port, on every interface. Refused as not implemented (Unsupported): -version and -help (the
container would print and exit) and status codes outside 200-599 (Go's server answers 1xx codes as
interim replies and panics on codes it cannot write). Invalid arguments, which would stop the real
container at start, are refused as such (ValueError), in Go's words.
"""

from collections.abc import Sequence
from typing import NamedTuple

from conformance.targets.local.apps.go_values import GoError, GoRangeError, go_quote, parse_int
from conformance.targets.local.apps.server import App, AppReply, Request

NAME = "http-echo"
VERSION = "1.0.0"
DEFAULT_LISTEN = ":5678"
# The image's environment (Dockerfile ENV ECHO_TEXT): the text when no -text is given.
DEFAULT_TEXT = "hello-world"
FLAGS = ("listen", "text", "status-code")
# Go sniffs the content type of the text it writes (net/http DetectContentType).
TEXT_TYPE = "text/plain; charset=utf-8"
# Go's ParseBool words, for the boolean flag -version.
_GO_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_GO_FALSE = ("0", "f", "F", "false", "FALSE", "False")
# Statuses whose reply Go's server writes without a body (net/http bodyAllowedForStatus).
_NO_BODY = (204, 304)


class Unsupported(ValueError):
    """A valid argument the local http-echo does not implement."""


class EchoOptions(NamedTuple):
    listen: str
    text: str
    status: int

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


def parse_echo_args(args: Sequence[str]) -> EchoOptions:
    """The container's args as http-echo's main reads them; Unsupported or ValueError if refused."""
    values = {"listen": DEFAULT_LISTEN, "text": "", "status-code": "200"}
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if arg == "--":
            break
        if len(arg) < 2 or not arg.startswith("-"):
            position -= 1  # the first non-flag argument ends the flags
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise ValueError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name == "version":
            _version(value if has_value else "true", arg)
            continue
        if name in ("h", "help"):
            raise Unsupported(f"{arg}: http-echo would print its usage and exit")
        if name not in FLAGS:
            raise ValueError(f"flag provided but not defined: -{name}")
        if not has_value:
            if position == len(args):
                raise ValueError(f"flag needs an argument: -{name}")
            value = args[position]
            position += 1
        values[name] = value
    if position < len(args):
        raise ValueError("Too many arguments!")
    return EchoOptions(_listen(values["listen"]), values["text"] or DEFAULT_TEXT, _status(values["status-code"]))


def _version(value: str, arg: str) -> None:
    if value in _GO_TRUE:
        raise Unsupported(f"{arg}: http-echo would print its version and exit")
    if value not in _GO_FALSE:
        raise ValueError(f"invalid boolean value {go_quote(value)} for -version: parse error")


def _status(value: str) -> int:
    try:
        status = parse_int(value, 0)
    except GoRangeError:
        raise ValueError(f"invalid value {go_quote(value)} for flag -status-code: value out of range") from None
    except GoError:
        raise ValueError(f"invalid value {go_quote(value)} for flag -status-code: parse error") from None
    if not 200 <= status <= 599:
        raise Unsupported(f"-status-code={value}: only status codes 200-599 are implemented")
    return status


def _listen(value: str) -> str:
    """Where http-echo listens: on every interface (":PORT", "0.0.0.0:PORT", "[::]:PORT") only."""
    host, colon, port = value.rpartition(":")
    if not colon or host not in ("", "0.0.0.0", "[::]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise Unsupported(f"-listen={value}: only every interface and a port number (e.g. :8080) are implemented")
    return value


def http_echo_app(options: EchoOptions) -> App:
    headers = (("X-App-Name", NAME), ("X-App-Version", VERSION))
    health = AppReply(200, b'{"status":"ok"}\n', TEXT_TYPE, headers)
    body = b"" if options.status in _NO_BODY else (options.text + "\n").encode()
    echo = AppReply(options.status, body, TEXT_TYPE if body else None, headers)

    def app(request: Request) -> AppReply:
        return health if request.path == "/health" else echo

    return app
