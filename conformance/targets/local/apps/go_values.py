"""Go's parsing of numbers and durations, and its error texts, as the Go apps the local apps stand
in for apply them (go-httpbin, http-echo): Go's strconv.ParseFloat, ParseInt and time.ParseDuration
and Duration.String, reimplemented for the inputs an HTTP query or a flag can carry.

Standard library only, as every app module (see apps/__init__.py).
"""

import math
import re

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NANOS_PER_SECOND = 10**9

_DECIMAL = re.compile(r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?")
_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9][0-9_]*")
_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE)
_BASE_PREFIX = re.compile(r"[+-]?0[xXoObB]")
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}


class GoError(ValueError):
    """A parse error, worded as Go's (its str() is Go's err.Error())."""


class GoRangeError(GoError):
    """A well-formed number out of range (Go's strconv.ErrRange)."""


def go_quote(text: str) -> str:
    """Go's strconv.Quote, for the texts a NumError names: printable characters kept."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _syntax_error(function: str, text: str) -> GoError:
    return GoError(f"strconv.{function}: parsing {go_quote(text)}: invalid syntax")


def _range_error(function: str, text: str) -> GoError:
    return GoRangeError(f"strconv.{function}: parsing {go_quote(text)}: value out of range")


def _underscores_ok(text: str) -> bool:
    """Go's strconv underscoreOK: an underscore only between digits, or after a base prefix."""
    body = text[1:] if text[:1] in ("+", "-") else text
    hexadecimal = body[:2].lower() == "0x"
    saw, start = ("0", 2) if body[:2].lower() in ("0x", "0o", "0b") else ("^", 0)
    for char in body[start:]:
        if char.isdigit() or (hexadecimal and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): decimal or hexadecimal (with a p exponent) literals, with
    underscores between digits, inf, infinity and nan; an overflow is a range error."""
    if _SPECIAL.fullmatch(text):
        return float(text.lower().replace("infinity", "inf"))
    hexadecimal = _HEX.fullmatch(text) is not None
    if not (hexadecimal or _DECIMAL.fullmatch(text)) or ("_" in text and not _underscores_ok(text)):
        raise _syntax_error("ParseFloat", text)
    plain = text.replace("_", "")
    try:
        value = float.fromhex(plain) if hexadecimal else float(plain)
    except OverflowError:
        value = math.inf
    if math.isinf(value):
        raise _range_error("ParseFloat", text)
    return value


def parse_int(text: str, base: int = 10, function: str = "ParseInt") -> int:
    """strconv.ParseInt(text, base, 64) for base 10, or base 0 (a 0x, 0o, 0b or 0 prefix picks the
    base; underscores allowed between digits); out of int64, a range error."""
    sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if base == 0:
        if "_" in text and not _underscores_ok(text):
            raise _syntax_error(function, text)
        digits = digits.replace("_", "")
        if _BASE_PREFIX.match(text):
            base, digits = {"x": 16, "o": 8, "b": 2}[digits[1].lower()], digits[2:]
        elif digits.startswith("0") and len(digits) > 1:
            base, digits = 8, digits[1:]
        else:
            base = 10
    alphabet = "0123456789abcdef"[:base]
    if not digits or any(char.lower() not in alphabet for char in digits):
        raise _syntax_error(function, text)
    value = int(digits, base) * (-1 if sign == "-" else 1)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _range_error(function, text)
    return value


def parse_duration(text: str) -> int:
    """time.ParseDuration in nanoseconds: `[-+]` then number-and-unit parts ("1h2m", "1.5s",
    "300ms"), or a bare 0. Its error is not Go's word for word (Go names a missing or unknown
    unit): the apps here only fall back on another parse when it fails."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    invalid = GoError(f"time: invalid duration {go_quote(text)}")
    if not body:
        raise invalid
    nanos, position = 0, 0
    while position < len(body):
        part = _DURATION_PART.match(body, position)
        if part is None or not (part.group(1) or part.group(2)):
            raise invalid
        whole, fraction, unit = part.group(1) or "0", part.group(2) or "", _DURATION_UNITS[part.group(3)]
        nanos += int(whole) * unit + (int(fraction) * unit // 10 ** len(fraction) if fraction else 0)
        position = part.end()
    if nanos > INT64_MAX:
        raise invalid
    return -nanos if text.startswith("-") else nanos


def wrap_int64(value: int) -> int:
    """Go's int64 arithmetic wraps around on overflow."""
    return (value - INT64_MIN) % 2**64 + INT64_MIN


def float_to_int64(value: float) -> int:
    """Go's int64(f) on amd64: truncation; NaN, infinities and values beyond int64 give the minimum
    int64 (the CPU's "integer indefinite"; Go leaves the conversion to the platform)."""
    if not math.isfinite(value) or not INT64_MIN <= math.trunc(value) <= INT64_MAX:
        return INT64_MIN
    return math.trunc(value)


def _decimal(value: int, scale: int) -> str:
    whole, fraction = divmod(value, scale)
    digits = str(fraction).rjust(len(str(scale)) - 1, "0").rstrip("0") if scale > 1 else ""
    return f"{whole}.{digits}" if digits else str(whole)


def duration_string(nanos: int) -> str:
    """time.Duration.String: "1h0m0s", "1m30s", "10s", "1.5s", "250ms", "1.2µs", "0s"."""
    if nanos == 0:
        return "0s"
    sign, size = ("-" if nanos < 0 else ""), abs(nanos)
    if size < NANOS_PER_SECOND:
        for limit, unit, scale in ((10**3, "ns", 1), (10**6, "µs", 10**3), (10**9, "ms", 10**6)):
            if size < limit:
                return sign + _decimal(size, scale) + unit
    hours, rest = divmod(size, 3600 * NANOS_PER_SECOND)
    minutes, rest = divmod(rest, 60 * NANOS_PER_SECOND)
    text = _decimal(rest, NANOS_PER_SECOND) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text
