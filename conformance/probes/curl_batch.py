"""A batch of requests as ONE exec into a client pod: the shell script, and reading its output.

Used by cluster targets (kubectl exec into the curl pod); the replies are
classified by the same code as on the local target.
"""

from collections.abc import Mapping
from importlib import resources

from conformance.probes.batches import reply_from_dict
from conformance.targets.base import Reply

MARK = "@@meshconf "


def script() -> str:
    return resources.files("conformance.probes").joinpath("curl_batch.sh").read_text()


def command(url: str, count: int, concurrency: int, headers: Mapping[str, str] | None, method: str,
            body: str | None, timeout: float) -> list[str]:
    """argv for the exec: `sh -c SCRIPT` with the batch as positional parameters."""
    argv = ["sh", "-c", script(), "meshconf-batch", str(count), str(max(1, min(concurrency, count))),
            f"{timeout:g}", method, url, body or ""]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    return argv


def parse(output: str) -> list[Reply]:
    """The script's output, in request order; a request curl could not complete has status 0."""
    replies = []
    for chunk in output.split(MARK)[1:]:
        head, _, rest = chunk.partition("\n")
        fields = head.split()
        rc = int(fields[1])
        status = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
        elapsed = float(fields[3]) if len(fields) > 3 else 0.0
        # A date without nanoseconds prints "%N" or "N" literally: no start time, not a wrong one.
        started = fields[4] if len(fields) > 4 and fields[4].replace(".", "", 1).isdigit() else None
        header_text, _, rest = rest.partition("@@body\n")
        body, _, tail = rest.partition("\n@@error ")
        error = tail.partition("\n@@end")[0].strip()
        replies.append(reply_from_dict({
            "status": status if rc == 0 else 0,
            "headers": _headers(header_text),
            "body": body,
            "elapsed": elapsed,
            "started": started,
            "error": None if rc == 0 else f"curl exit {rc}: {error}",
        }))
    return replies


def _headers(text: str) -> dict[str, str]:
    # With redirects off there is one header block; the status line has no colon.
    headers: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("HTTP/"):
            headers[name.strip().lower()] = value.strip()
    return headers
