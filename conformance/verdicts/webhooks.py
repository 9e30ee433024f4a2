"""Istio's admission webhook configurations, decided as installed: every Istio webhook trusts a CA
(caBundle), fails closed (failurePolicy Fail) and selects what Istio's documented injection policy
says; and a pod in a namespace Istio ignores is not injected even when its webhook is called."""

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from conformance.errors import ConformanceError
from conformance.tables import render_table
from conformance.waiting import Verdict
from conformance.webhooks import FAIL, MUTATING, Webhook, configurations

# Istio's webhook names (istio/istio manifests/charts/istio-control/istio-discovery/templates/
# mutatingwebhook.yaml: <prefix>.sidecar-injector.istio.io; validatingwebhookconfiguration.yaml
# and manifests/charts/base/templates/defaultrevision-validatingwebhookconfiguration.yaml:
# rev.validation.istio.io, validation.istio.io).
INJECTOR_SUFFIX = "sidecar-injector.istio.io"
VALIDATOR_SUFFIX = "validation.istio.io"
POD_CREATE = ("CREATE", "", "v1", "pods")
VIRTUALSERVICE_WRITES = (("CREATE", "networking.istio.io", "v1", "virtualservices"),
                         ("UPDATE", "networking.istio.io", "v1", "virtualservices"))


@dataclass(frozen=True)
class SelectorCase:
    """Labels of a namespace and a pod, and whether Istio's policy sends the pod to an injector."""

    namespace_labels: Mapping[str, str]
    pod_labels: Mapping[str, str]
    called: bool

    @property
    def name(self) -> str:
        def show(labels: Mapping[str, str]) -> str:
            return ",".join(f"{k}={v}" for k, v in labels.items()) or "no label"
        return f"namespace {show(self.namespace_labels)}; pod {show(self.pod_labels)}"


Row = tuple[str, str, str, bool]  # what is checked, expected, observed, ok


def istio_webhooks(docs: Sequence[Mapping[str, Any]]) -> list[Webhook]:
    """Istio's webhooks among every configuration (other products' are not read)."""
    ours = [doc for doc in docs if any(str(h.get("name", "")).endswith((INJECTOR_SUFFIX, VALIDATOR_SUFFIX))
                                       for h in doc.get("webhooks") or ())]
    return [h for h in configurations(ours) if h.name.endswith((INJECTOR_SUFFIX, VALIDATOR_SUFFIX))]


def _ca_problem(hook: Webhook, now: datetime.datetime) -> str | None:
    pem = hook.ca_pem()
    if not pem:
        return "no caBundle"
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as error:
        return f"caBundle is not PEM certificates: {error}"
    for cert in certificates:
        try:
            is_ca = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            return f"caBundle holds a certificate that is not a CA ({cert.subject.rfc4514_string()})"
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"caBundle certificate {cert.subject.rfc4514_string()} is not valid now"
    return None


def configuration_rows(hooks: Sequence[Webhook], now: datetime.datetime | None = None) -> list[Row]:
    """Per Istio webhook: its caBundle, failurePolicy and rules."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    rows: list[Row] = []
    for hook in hooks:
        where = f"{hook.configuration}/{hook.name}"
        problem = _ca_problem(hook, now)
        rows.append((f"{where} caBundle", "a valid CA certificate", problem or "a valid CA certificate", problem is None))
        rows.append((f"{where} failurePolicy", FAIL, hook.failure_policy, hook.failure_policy == FAIL))
        wanted = [POD_CREATE] if hook.kind == MUTATING else list(VIRTUALSERVICE_WRITES)
        covered = all(any(rule.matches(*request) for rule in hook.rules) for request in wanted)
        rows.append((f"{where} rules", " and ".join(_request(*r) for r in wanted),
                     "covered" if covered else "not covered", covered))
    return rows


def _request(operation: str, group: str, version: str, resource: str) -> str:
    return f"{operation} {group or 'core'}/{version} {resource}"


def selector_rows(hooks: Sequence[Webhook], cases: Sequence[SelectorCase]) -> list[Row]:
    """Per policy case: the injector webhooks the API server would call; one when the policy
    injects (two would inject twice), none when it does not."""
    injectors = [h for h in hooks if h.kind == MUTATING and h.name.endswith(INJECTOR_SUFFIX)]
    rows: list[Row] = []
    for case in cases:
        called = [h.name for h in injectors if h.matches(*POD_CREATE, case.namespace_labels, case.pod_labels)]
        ok = len(called) == 1 if case.called else not called
        rows.append((case.name, "one injector webhook called" if case.called else "no injector webhook called",
                     ", ".join(called) or "none called", ok))
    return rows


def webhook_verdict(docs: Sequence[Mapping[str, Any]], cases: Sequence[SelectorCase],
                    extra: Sequence[Row] = ()) -> Verdict:
    """Istio's webhooks among `docs` against what Istio installs; `extra` rows (e.g. a pod admitted
    in a namespace Istio ignores) join the table. The message is the table."""
    try:
        hooks = istio_webhooks(docs)
    except ConformanceError as error:
        return Verdict(False, f"Istio's webhook configurations cannot be read: {error}")
    kinds = {h.kind for h in hooks}
    rows = [*configuration_rows(hooks), *selector_rows(hooks, cases), *extra]
    if len(kinds) < 2:
        rows.append(("Istio's webhooks", "an injector and a validator", ", ".join(h.name for h in hooks) or "none",
                     False))
    table = render_table(("check", "expected", "observed", ""),
                         [(c, e, o, "ok" if ok else "WRONG") for c, e, o, ok in rows])
    wrong = sum(not ok for *_, ok in rows)
    if wrong:
        return Verdict(False, f"{wrong} of {len(rows)} webhook checks differ from what Istio installs:\n{table}")
    return Verdict(True, f"all {len(rows)} webhook checks hold ({len(hooks)} Istio webhooks):\n{table}")
