"""Istio's validation webhook as istiod serves it: POST /validate, AdmissionReview v1 in and out,
a denial naming what is wrong (istio/istio pkg/webhooks/validation/server/server.go): the
message is "configuration is invalid: " and the validation errors.

The rules are Istio's (istio/istio pkg/config/validation/validation.go and virtualservice.go,
tag 1.26.0), those the ValidationWebhook feature exercises; anything else passes here. Where a
rule has a text, the message is Istio's.
"""

from collections.abc import Mapping
from typing import Any

import re2

from conformance.targets.local.admission.review import answer, received_request
from conformance.targets.local.translator.mutants import VALIDATION_OFF

VALIDATE_PATH = "/validate"
INVALID = "configuration is invalid: "
# Istio checks a pattern with Go's regexp, whose syntax is RE2's (no lookaround, no backreference);
# google-re2 parses it as Envoy will. Errors are returned, not logged.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def review_response(review: Mapping[str, Any], mutants: frozenset[str] = frozenset()) -> dict[str, Any]:
    request = received_request(review)
    errors = [] if VALIDATION_OFF in mutants else validation_errors(request["object"])
    if not errors:
        return answer(request, True)
    return answer(request, False, status={"code": 400, "reason": "BadRequest", "message": INVALID + "\n".join(errors)})


def validation_errors(doc: Mapping[str, Any]) -> list[str]:
    """Istio's validation errors of an Istio networking document (none: it is valid)."""
    spec = doc.get("spec") or {}
    check = {"VirtualService": _virtual_service, "DestinationRule": _destination_rule, "Gateway": _gateway}
    return check.get(doc.get("kind", ""), lambda _: [])(spec)


def _virtual_service(spec: Mapping[str, Any]) -> list[str]:
    if not any(spec.get(kind) for kind in ("http", "tcp", "tls")):
        return ["http, tcp or tls must be provided in virtual service"]
    errors = []
    for route in spec.get("http") or []:
        if route.get("route") and route.get("redirect"):
            errors.append("HTTP route cannot contain both route and redirect")
        errors += _weights(route.get("route") or [])
        for match in route.get("match") or []:
            errors += _regexes(match)
    return errors


def _weights(destinations: list[Mapping[str, Any]]) -> list[str]:
    """validateHTTPRouteDestinations: no negative weight; with several destinations, not all 0."""
    weights = [int(d.get("weight") or 0) for d in destinations]
    errors = [f"weight {w} < 0" for w in weights if w < 0]
    if len(destinations) > 1 and sum(weights) == 0:
        errors.append("total destination weight = 0")
    return errors


def _regexes(match: Mapping[str, Any]) -> list[str]:
    """validateStringMatchRegexp for the uri and each header of a match, which Istio words as
    "uri" and "headers" (virtualservice.go validateHTTPRouteMatchRequest); other fields' regexes
    are not checked here."""
    fields = [("uri", match.get("uri"))] + [("headers", value) for value in (match.get("headers") or {}).values()]
    errors = []
    for name, value in fields:
        pattern = (value or {}).get("regex") if isinstance(value, Mapping) else None
        if pattern is None:
            continue
        problem = _regexp_error(pattern)
        if problem is not None:
            errors.append(f'"{name}": error parsing regexp: {problem}; Istio uses RE2 style regex-based match '
                          "(https://github.com/google/re2/wiki/Syntax)")
    return errors


def _regexp_error(pattern: str) -> str | None:
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    return None


def _destination_rule(spec: Mapping[str, Any]) -> list[str]:
    names = [subset.get("name") for subset in spec.get("subsets") or []]
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    return [f"duplicate subset names: {name}" for name in duplicates]


def _gateway(spec: Mapping[str, Any]) -> list[str]:
    return [] if spec.get("servers") else ["gateway must have at least one server"]
