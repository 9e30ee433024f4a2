"""The API server's 422 Invalid: the field errors of an object it refuses, and how it words them.

kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/validation/field/errors.go (one
error: `<field>: <detail>`, e.g. `spec.host: Required value`) and staging/src/k8s.io/apimachinery/
pkg/api/errors/errors.go NewInvalid (the Status message:
`<Kind>.<group> "<name>" is invalid: <error>`, or `[<error>, <error>]` for several).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

# field.ErrorType's causes as the Status reports them (details.causes[].reason).
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
# A NewInvalid message, wherever a client puts it in its own error text.
INVALID_MESSAGE = re.compile(r'\b[A-Z][A-Za-z0-9]*(\.[a-z0-9.-]+)? "[^"]*" is invalid: ')


@dataclass(frozen=True)
class FieldError:
    reason: str  # REQUIRED, INVALID or NOT_SUPPORTED
    field: str  # the JSON path: spec.http[0].route
    message: str  # the detail: "Required value", "Invalid value: ..."

    def line(self) -> str:
        return f"{self.field}: {self.message}"


def invalid_message(kind: str, group: str, name: str, errors: Sequence[FieldError]) -> str:
    """The message of the 422 Status refusing object `name` of `kind` in API group `group`."""
    lines = list(dict.fromkeys(e.line() for e in errors))  # an aggregate drops repeated messages
    qualified = f"{kind}.{group}" if group else kind
    if not lines:
        return f'{qualified} "{name}" is invalid'
    joined = lines[0] if len(lines) == 1 else f"[{', '.join(lines)}]"
    return f'{qualified} "{name}" is invalid: {joined}'


def is_invalid(text: str) -> bool:
    """Whether an error's text carries an API server's 422 Invalid message."""
    return INVALID_MESSAGE.search(text) is not None
