"""Admission webhooks from MutatingWebhookConfiguration / ValidatingWebhookConfiguration documents
(admissionregistration.k8s.io/v1), and which requests each selects.

A webhook is called for a request when one of its rules matches the operation and resource, its
namespaceSelector matches the namespace's labels and its objectSelector the object's labels
(kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/generic/
webhook.go ShouldCallHook). Fields this module does not implement are refused, never ignored.
"""

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource

API_VERSION = "admissionregistration.k8s.io/v1"
MUTATING = "mutating"
VALIDATING = "validating"
CONFIGURATION_KINDS = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}

FAIL = "Fail"
IGNORE = "Ignore"
# The API's defaults (kubernetes/kubernetes pkg/apis/admissionregistration/v1/defaults.go).
DEFAULT_TIMEOUT_SECONDS = 10
DEFAULT_SERVICE_PORT = 443
# The API server's validation bounds timeoutSeconds (pkg/apis/admissionregistration/validation).
TIMEOUT_RANGE = range(1, 31)

OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
ALL = "*"
# admission.k8s.io/v1 is the only AdmissionReview version `admit` speaks.
REVIEW_VERSION = "v1"
# The sideEffects classes the v1 API accepts (None or NoneOnDryRun; Some and Unknown were v1beta1's).
SIDE_EFFECTS = frozenset({"None", "NoneOnDryRun"})

_WEBHOOK_FIELDS = frozenset({
    "name", "clientConfig", "rules", "failurePolicy", "matchPolicy", "namespaceSelector", "objectSelector",
    "sideEffects", "timeoutSeconds", "admissionReviewVersions", "reinvocationPolicy", "matchConditions",
})
_CLIENT_CONFIG_FIELDS = frozenset({"url", "service", "caBundle"})
_SERVICE_FIELDS = frozenset({"namespace", "name", "path", "port"})
_RULE_FIELDS = frozenset({"operations", "apiGroups", "apiVersions", "resources", "scope"})
_SELECTOR_FIELDS = frozenset({"matchLabels", "matchExpressions"})
_EXPRESSION_FIELDS = frozenset({"key", "operator", "values"})
_SET_OPERATORS = frozenset({"In", "NotIn"})
_EXISTENCE_OPERATORS = frozenset({"Exists", "DoesNotExist"})


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry of a Kubernetes LabelSelector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        # NotIn and DoesNotExist hold for a missing key (k8s.io/apimachinery pkg/labels/selector.go).
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes LabelSelector: every matchLabels pair and every requirement must hold.
    An empty (or absent) selector matches everything, as the API server reads a webhook's."""

    match_labels: Mapping[str, str]
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(requirement.matches(labels) for requirement in self.match_expressions)


EVERYTHING = LabelSelector({})


@dataclass(frozen=True)
class Rule:
    """A RuleWithOperations; "*" is a wildcard in each list. Resources name whole resources
    ("pods", "*"), not subresources."""

    operations: frozenset[str]
    api_groups: frozenset[str]
    api_versions: frozenset[str]
    resources: frozenset[str]

    def matches(self, operation: str, group: str, version: str, resource: str) -> bool:
        return (
            _within(self.operations, operation)
            and _within(self.api_groups, group)
            and _within(self.api_versions, version)
            and _within(self.resources, resource)
        )


@dataclass(frozen=True)
class ServiceRef:
    """clientConfig.service: the webhook's in-cluster Service; resolving it to an address is the
    caller's (the mesh's), as the API server's service resolver."""

    namespace: str
    name: str
    path: str | None
    port: int = DEFAULT_SERVICE_PORT

    @property
    def dns_name(self) -> str:
        """The name the API server checks the serving certificate against (kubernetes/kubernetes
        staging/src/k8s.io/apiserver/pkg/util/webhook/client.go: <name>.<namespace>.svc)."""
        return f"{self.name}.{self.namespace}.svc"


@dataclass(frozen=True)
class Webhook:
    name: str
    kind: str  # MUTATING or VALIDATING
    configuration: str  # the name of the configuration document that holds it
    url: str | None
    service: ServiceRef | None
    ca_bundle: str | None  # base64 PEM; None when the manifest leaves it for the installer to fill
    rules: tuple[Rule, ...]
    namespace_selector: LabelSelector
    object_selector: LabelSelector
    failure_policy: str = FAIL
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS

    def matches(
        self,
        operation: str,
        group: str,
        version: str,
        resource: str,
        namespace_labels: Mapping[str, str],
        object_labels: Mapping[str, str],
    ) -> bool:
        """Whether the API server calls this webhook for the request."""
        return (
            any(rule.matches(operation, group, version, resource) for rule in self.rules)
            and self.namespace_selector.matches(namespace_labels)
            and self.object_selector.matches(object_labels)
        )

    def with_ca_bundle(self, pem: str) -> "Webhook":
        """This webhook trusting `pem`, as istiod patches its root into its own webhooks
        (istio/istio pkg/webhooks/webhookpatch.go)."""
        return replace(self, ca_bundle=base64.b64encode(pem.encode()).decode())

    def ca_pem(self) -> str | None:
        """caBundle decoded, or None when it is absent."""
        if not self.ca_bundle:
            return None
        return base64.b64decode(self.ca_bundle).decode()


def webhooks_of(doc: Mapping[str, Any]) -> list[Webhook]:
    """The webhooks of one configuration document, in its order."""
    kind = CONFIGURATION_KINDS.get(doc.get("kind", ""))
    if kind is None or doc.get("apiVersion") != API_VERSION:
        raise UnsupportedResource(
            f"{doc.get('apiVersion')} {doc.get('kind')}: not a webhook configuration "
            f"({API_VERSION} {' or '.join(CONFIGURATION_KINDS)})"
        )
    configuration = doc.get("metadata", {}).get("name", "")
    where = f"{doc['kind']} {configuration}"
    webhooks = [_webhook(hook, kind, configuration, where) for hook in doc.get("webhooks") or ()]
    names = [hook.name for hook in webhooks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ManifestError(f"{where}: webhook names must be unique, repeated: {', '.join(duplicates)}")
    return webhooks


def configurations(docs: Sequence[Mapping[str, Any]]) -> list[Webhook]:
    """The webhooks of every configuration among `docs`, other kinds skipped."""
    return [hook for doc in docs if doc.get("kind") in CONFIGURATION_KINDS for hook in webhooks_of(doc)]


def _webhook(raw: Mapping[str, Any], kind: str, configuration: str, where: str) -> Webhook:
    name = raw.get("name")
    if not name:
        raise ManifestError(f"{where}: a webhook has no name")
    where = f"{where} webhook {name}"
    _refuse_unknown(raw, _WEBHOOK_FIELDS, where)
    if raw.get("matchConditions"):
        raise UnsupportedResource(f"{where}: matchConditions (CEL) are not implemented by the local mesh")
    reinvocation = raw.get("reinvocationPolicy", "Never")
    if kind == VALIDATING and "reinvocationPolicy" in raw:
        raise ManifestError(f"{where}: reinvocationPolicy is a mutating webhook's field")
    if reinvocation != "Never":
        raise UnsupportedResource(f"{where}: reinvocationPolicy {reinvocation!r} is not implemented (only Never)")
    # Every request here names the resource's one version, so Exact and Equivalent agree.
    if raw.get("matchPolicy", "Equivalent") not in ("Exact", "Equivalent"):
        raise ManifestError(f"{where}: matchPolicy must be Exact or Equivalent, not {raw['matchPolicy']!r}")
    versions = raw.get("admissionReviewVersions") or []
    if REVIEW_VERSION not in versions:
        raise UnsupportedResource(f"{where}: admissionReviewVersions {versions} lack {REVIEW_VERSION!r}, the only "
                                  "AdmissionReview version the local mesh sends")
    if raw.get("sideEffects") not in SIDE_EFFECTS:
        raise ManifestError(f"{where}: sideEffects must be one of {sorted(SIDE_EFFECTS)}, not {raw.get('sideEffects')!r}")
    failure_policy = raw.get("failurePolicy", FAIL)
    if failure_policy not in (FAIL, IGNORE):
        raise ManifestError(f"{where}: failurePolicy must be {FAIL} or {IGNORE}, not {failure_policy!r}")
    timeout = raw.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
    if not isinstance(timeout, int) or timeout not in TIMEOUT_RANGE:
        raise ManifestError(f"{where}: timeoutSeconds must be 1-30, not {timeout!r}")
    url, service, ca_bundle = _client_config(raw.get("clientConfig") or {}, where)
    rules = tuple(_rule(rule, f"{where} rules[{n}]") for n, rule in enumerate(raw.get("rules") or ()))
    return Webhook(
        name=name,
        kind=kind,
        configuration=configuration,
        url=url,
        service=service,
        ca_bundle=ca_bundle,
        rules=rules,
        namespace_selector=_selector(raw.get("namespaceSelector"), f"{where} namespaceSelector"),
        object_selector=_selector(raw.get("objectSelector"), f"{where} objectSelector"),
        failure_policy=failure_policy,
        timeout_seconds=timeout,
    )


def _client_config(raw: Mapping[str, Any], where: str) -> tuple[str | None, ServiceRef | None, str | None]:
    _refuse_unknown(raw, _CLIENT_CONFIG_FIELDS, f"{where} clientConfig")
    url, service = raw.get("url"), raw.get("service")
    if (url is None) == (service is None):
        raise ManifestError(f"{where}: clientConfig needs exactly one of url and service")
    if url is not None and not url.startswith("https://"):
        raise ManifestError(f"{where}: clientConfig.url must be https://, not {url!r}")
    ref = None
    if service is not None:
        _refuse_unknown(service, _SERVICE_FIELDS, f"{where} clientConfig.service")
        if not service.get("namespace") or not service.get("name"):
            raise ManifestError(f"{where}: clientConfig.service needs a namespace and a name")
        ref = ServiceRef(service["namespace"], service["name"], service.get("path"),
                         service.get("port", DEFAULT_SERVICE_PORT))
    ca_bundle = raw.get("caBundle") or None
    if ca_bundle is not None:
        try:
            base64.b64decode(ca_bundle, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ManifestError(f"{where}: clientConfig.caBundle is not base64 ({error})") from None
    return url, ref, ca_bundle


def _rule(raw: Mapping[str, Any], where: str) -> Rule:
    _refuse_unknown(raw, _RULE_FIELDS, where)
    # Scope narrows a rule to namespaced or cluster-wide resources; only the default "*" is implemented.
    if raw.get("scope", ALL) != ALL:
        raise UnsupportedResource(f"{where}: scope {raw['scope']!r} is not implemented (only \"*\")")
    operations = _strings(raw, "operations", where)
    unknown = operations - OPERATIONS - {ALL}
    if unknown:
        raise ManifestError(f"{where}: unknown operations {sorted(unknown)}")
    resources = _strings(raw, "resources", where)
    subresources = sorted(resource for resource in resources if "/" in resource)
    if subresources:
        raise UnsupportedResource(f"{where}: subresources {subresources} are not implemented")
    return Rule(operations, _strings(raw, "apiGroups", where), _strings(raw, "apiVersions", where), resources)


def _selector(raw: Mapping[str, Any] | None, where: str) -> LabelSelector:
    if raw is None:
        return EVERYTHING
    _refuse_unknown(raw, _SELECTOR_FIELDS, where)
    expressions = tuple(_requirement(expr, f"{where} matchExpressions[{n}]")
                        for n, expr in enumerate(raw.get("matchExpressions") or ()))
    return LabelSelector(dict(raw.get("matchLabels") or {}), expressions)


def _requirement(raw: Mapping[str, Any], where: str) -> Requirement:
    _refuse_unknown(raw, _EXPRESSION_FIELDS, where)
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values") or []
    if not key:
        raise ManifestError(f"{where}: no key")
    # The API server's LabelSelector validation (k8s.io/apimachinery pkg/apis/meta/v1/validation).
    if operator in _SET_OPERATORS:
        if not values:
            raise ManifestError(f"{where}: operator {operator} needs values")
    elif operator in _EXISTENCE_OPERATORS:
        if values:
            raise ManifestError(f"{where}: operator {operator} takes no values")
    else:
        raise ManifestError(f"{where}: operator must be one of In, NotIn, Exists, DoesNotExist, not {operator!r}")
    return Requirement(key, operator, frozenset(str(value) for value in values))


def _strings(raw: Mapping[str, Any], field: str, where: str) -> frozenset[str]:
    values = raw.get(field)
    if not values:
        raise ManifestError(f"{where}: {field} must not be empty")
    return frozenset(values)


def _within(allowed: frozenset[str], value: str) -> bool:
    return ALL in allowed or value in allowed


def _refuse_unknown(raw: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UnsupportedResource(f"{where}: fields {unknown} are not implemented by the local mesh")
