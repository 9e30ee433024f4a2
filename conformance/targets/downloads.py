"""What every release download shares: a lock on the cache, retries on transport errors only,
and one wording for a missing or unreachable file."""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import tenacity

from conformance.errors import ConformanceError, TargetUnavailable

ATTEMPTS = 4


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Parallel runs (xdist workers, two CLIs) share the cache: one downloads, the rest wait and reuse."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def retrying() -> tenacity.Retrying:
    # Only transport errors (reset, timeout, DNS) heal by trying again; an HTTP
    # status is an answer and is reported as it is.
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(httpx.TransportError),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )


def get_text(client: httpx.Client, url: str, what: str, mirror_hint: str) -> str:
    """The body at url; `what` names the thing in a 404 ("Istio version"), `mirror_hint` how to use a mirror."""
    try:
        for attempt in retrying():
            with attempt:
                response = client.get(url)
    except httpx.TransportError as exc:
        raise unreachable(url, exc, mirror_hint) from None
    check_status(response, url, what)
    return response.text


def check_status(response: httpx.Response, url: str, what: str) -> None:
    if response.status_code == 404:
        raise ConformanceError(f"not found: {url} (is the {what} right?)")
    if response.status_code >= 400:
        raise TargetUnavailable(f"download failed: {url} answered HTTP {response.status_code}")


def unreachable(url: str, exc: Exception, mirror_hint: str) -> TargetUnavailable:
    return TargetUnavailable(
        f"cannot download {url} after {ATTEMPTS} attempts: {str(exc) or type(exc).__name__} "
        f"(check the network, or {mirror_hint})"
    )
