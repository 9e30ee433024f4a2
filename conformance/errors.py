"""One exception hierarchy: every error meant for a user derives from ConformanceError.

The CLI prints such errors as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from collections.abc import Callable


class ConformanceError(Exception):
    """An error the user can act on; its message says what is wrong."""


class ManifestError(ConformanceError):
    """A manifest is missing, malformed, or uses something the target cannot apply."""


class UnsupportedResource(ManifestError):
    """A kind, field or image outside what a target implements."""


class TargetUnavailable(ConformanceError):
    """The chosen target cannot be used on this machine (or is not built yet)."""


class NotConverged(ConformanceError):
    """Configuration did not take effect within the consistency timeout."""


def cleanup_after(failure: BaseException, what: str, cleanup: Callable[[], object]) -> None:
    """Run cleanup after `failure`; its own failure is noted on `failure`, which stays the error."""
    try:
        cleanup()
    except ConformanceError as exc:
        failure.add_note(f"and {what} failed too: {exc}")
