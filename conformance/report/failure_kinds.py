"""Why a suite test failed, in four kinds, and the Allure categories that sort failures by kind.

allure-pytest reports a test whose exception is an AssertionError (or pytest.fail) as `failed`,
any other exception as `broken`; its message is pytest's `exconly()` of the exception and its
trace pytest's long representation (allure_pytest/listener.py pytest_runtest_makereport). A
status and a message cannot tell a verdict's AssertionError from any other assert, nor a target
that failed to come up from another ConformanceError, so the plugin adds one note to each failing
test's exception naming its kind (Python's exception notes are part of `exconly()`), and each
category matches its note in the message.
"""

import re
import traceback
from enum import Enum
from types import TracebackType
from typing import Any

from conformance.errors import NotConverged, TargetUnavailable

NOTE_PREFIX = "meshconf failure category: "
# A category's regular expression must mean the same to Allure 2 (Java, DOTALL, the whole message:
# allure-framework/allure2 allure-generator/.../category/CategoriesPlugin.java matches()) and to
# Allure 3 (JavaScript RegExp.test, anywhere in the message: allure-framework/allure3
# packages/core-api/src/categories.ts matchObjectMatcher): "[\s\S]*" on both sides does.
ANY = r"[\s\S]*"


class FailureKind(Enum):
    """Each kind: its Allure category's name, and the statuses allure-pytest gives it."""

    VERDICT = ("Mesh behaved wrongly: a verdict failed", ("failed",))
    NOT_CONVERGED = ("Configuration never took effect: not converged in time", ("broken",))
    TARGET = ("Target failed: bring-up or infrastructure", ("broken",))
    # Anything not classified above: the harness's own errors, and errors it did not classify.
    HARNESS = ("Harness or unclassified error: no verdict on the mesh", ("failed", "broken"))

    def __init__(self, category: str, statuses: tuple[str, ...]) -> None:
        self.category = category
        self.statuses = statuses

    @property
    def note(self) -> str:
        return NOTE_PREFIX + self.category


def noted_kind(exc: BaseException) -> FailureKind | None:
    """The kind a note on `exc` already names (a session fixture's error is raised for every test)."""
    notes = getattr(exc, "__notes__", ())
    return next((k for k in FailureKind if k.note in notes), None)


def kind_of(exc: BaseException, tb: TracebackType | None) -> FailureKind:
    noted = noted_kind(exc)
    if noted is not None:
        return noted
    if isinstance(exc, NotConverged):
        return FailureKind.NOT_CONVERGED
    if isinstance(exc, TargetUnavailable):
        return FailureKind.TARGET
    if isinstance(exc, AssertionError) and raised_by_decide(tb):
        return FailureKind.VERDICT
    return FailureKind.HARNESS


def raised_by_decide(tb: TracebackType | None) -> bool:
    """The innermost frame is conformance.checks.decide's: its assert is every verdict's failure."""
    from conformance import checks  # here: it imports the statistics (scipy), which a plugin load need not

    frames = [frame for frame, _ in traceback.walk_tb(tb)]
    return bool(frames) and frames[-1].f_code is checks.decide.__code__


def annotate(exc: BaseException, kind: FailureKind) -> None:
    """Name the kind on the exception, once."""
    if noted_kind(exc) is None:
        exc.add_note(kind.note)


def categories() -> list[dict[str, Any]]:
    """The categories, in Allure 2's categories.json format, which Allure 3's config also reads
    (its compatibility keys: allure3 packages/core-api/src/categories.ts normalizeMatchers)."""
    return [{"name": k.category, "matchedStatuses": list(k.statuses), "messageRegex": ANY + literal(k.note) + ANY}
            for k in FailureKind]


def literal(text: str) -> str:
    """`text` as a regular expression meaning itself in Java, JavaScript and Python alike."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", text)
