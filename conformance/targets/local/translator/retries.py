"""Envoy retry policies as istiod sets them on routes (istio/istio, tag 1.28.0).

Outbound routes (a VirtualService's, an HTTPRoute's, a service's default route)
get Istio's default policy unless a VirtualService sets `retries`:
pilot/pkg/networking/core/route/retry/retry.go (DefaultPolicy, ConvertPolicy)
and route/route.go (applyHTTPRouteDestination, BuildDefaultHTTPOutboundRoute).
Inbound routes get a fixed policy: route/route.go BuildDefaultHTTPInboundRoute.
"""

import copy
from typing import Any

from conformance.targets.base import Doc
from conformance.targets.local.istio_values import is_http_status
from conformance.targets.local.translator.durations import envoy_duration
from conformance.targets.local.translator.mutants import NO_RETRIES

# retry.go: 2 retries on connection-level failures; retriable-status-codes is listed, but
# with no codes, so no HTTP status (503 included) is retried.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIES = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = "5"  # a uint64: protobuf JSON writes it as a string
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    },
}
# retry.go buildPreviousPrioritiesConfig, for retryRemoteLocalities.
PREVIOUS_PRIORITIES = {
    "name": "envoy.retry_priorities.previous_priorities",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
        "PreviousPrioritiesConfig",
        "update_frequency": 2,
    },
}


def default_retry_policy() -> dict[str, Any]:
    """retry.go DefaultPolicy: what every outbound route gets when no VirtualService says otherwise."""
    return {
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": DEFAULT_RETRIES,
        "retry_host_predicate": [copy.deepcopy(PREVIOUS_HOSTS)],
        "host_selection_retry_max_attempts": HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    }


def inbound_retry_policy() -> dict[str, Any]:
    """route.go BuildDefaultHTTPInboundRoute: a request reset before it reached the app was never
    processed, so it is retried (twice) whatever its method."""
    return {"retry_on": "reset-before-request", "num_retries": DEFAULT_RETRIES}


def route_retry_policy(retries: Doc | None, where: str,
                       mutants: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """retry.go ConvertPolicy: a VirtualService's `retries` over the default; None disables retries.
    Under the NO_RETRIES mutant `retries` is ignored: the default policy stays.

    istio_subset.py has checked the values as Istio's validation does.
    """
    policy = default_retry_policy()
    if retries is None or NO_RETRIES in mutants:
        return policy
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return None
    policy["num_retries"] = attempts
    if retries.get("retryOn"):
        retry_on, codes = split_retry_on(str(retries["retryOn"]))
        if codes and "retriable-status-codes" not in retry_on:
            retry_on += ",retriable-status-codes"
        policy["retry_on"] = retry_on
        if codes:
            policy["retriable_status_codes"] = codes
    if retries.get("perTryTimeout") is not None:
        policy["per_try_timeout"] = envoy_duration(str(retries["perTryTimeout"]), f"{where}.perTryTimeout")
    if retries.get("retryRemoteLocalities") is True:
        policy["retry_priority"] = copy.deepcopy(PREVIOUS_PRIORITIES)
    return policy


def split_retry_on(retry_on: str) -> tuple[str, list[int]]:
    """retry.go parseRetryOn: HTTP status codes apart from the Envoy retry conditions."""
    conditions, codes = [], []
    for part in (p.strip() for p in retry_on.split(",")):
        if not part:
            continue
        if is_http_status(part):
            codes.append(int(part))
        else:
            conditions.append(part)
    return ",".join(conditions), codes
