"""Admission webhook configurations: the webhooks a MutatingWebhookConfiguration holds, what
they select (rules, namespace and object selectors), and what the local API server refuses."""

import base64
from typing import Any

import pytest

from conformance import manifests
from conformance.names import DEFAULT_REVISION
from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.admission.injector import webhook_dns_name
from conformance.webhooks import configurations, webhooks_of
from conformance.targets.local.admission.control import INJECTOR_MANIFEST
from conformance.targets.local.xds.secrets import MeshCA
from tests.admission_builders import configuration_doc, hook_doc, one_webhook

WEBHOOK_DNS = webhook_dns_name(DEFAULT_REVISION)  # the default istiod's webhook Service


# --- (1) the webhooks a configuration holds, and what they select ---------------------------


def test_manifest_holds_istios_four_webhooks() -> None:
    hooks = configurations(manifests.load(INJECTOR_MANIFEST))
    assert [h.name for h in hooks] == [
        "rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io",
        "namespace.sidecar-injector.istio.io", "object.sidecar-injector.istio.io",
    ]
    for hook in hooks:
        assert hook.kind == "mutating" and hook.configuration == "istio-sidecar-injector"
        assert hook.service is not None and hook.url is None and hook.ca_bundle is None
        assert (hook.service.namespace, hook.service.name, hook.service.path, hook.service.port) == (
            "istio-system", "istiod", "/inject", 443)
        assert hook.service.dns_name == WEBHOOK_DNS
        assert (hook.failure_policy, hook.timeout_seconds) == ("Fail", 10)
        assert hook.matches("CREATE", "", "v1", "pods", {"istio-injection": "enabled"}, {}) == (
            hook.name == "namespace.sidecar-injector.istio.io")


SELECTOR_CASES = [
    # (selector, labels, matches)
    (None, {}, True),
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchLabels": {"a": "1"}}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "3"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["false"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["false"]}]}, {"a": "true"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["false"]}]}, {"a": "false"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    # Every label and every expression must hold.
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
     {"b": "1"}, True),
    ({"matchLabels": {"b": "1"}, "matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
     {"b": "1", "a": "x"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "In", "values": ["1"]}]},
     {"a": "x", "b": "2"}, False),
]


@pytest.mark.parametrize(("selector", "labels", "expected"), SELECTOR_CASES)
@pytest.mark.parametrize("field", ["namespaceSelector", "objectSelector"])
def test_selector_matching(field: str, selector: dict[str, Any] | None, labels: dict[str, str], expected: bool) -> None:
    hook = one_webhook(**({field: selector} if selector is not None else {}))
    namespace_labels, object_labels = (labels, {}) if field == "namespaceSelector" else ({}, labels)
    assert hook.matches("CREATE", "", "v1", "pods", namespace_labels, object_labels) is expected


@pytest.mark.parametrize(("rule", "request_", "expected"), [
    ({}, ("CREATE", "", "v1", "pods"), True),
    ({}, ("UPDATE", "", "v1", "pods"), False),
    ({}, ("CREATE", "", "v1", "services"), False),
    ({}, ("CREATE", "apps", "v1", "pods"), False),
    ({"operations": ["*"]}, ("DELETE", "", "v1", "pods"), True),
    ({"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}, ("CREATE", "apps", "v1", "deployments"), True),
    ({"operations": ["CREATE", "UPDATE"]}, ("UPDATE", "", "v1", "pods"), True),
])
def test_rule_matching(rule: dict[str, Any], request_: tuple[str, str, str, str], expected: bool) -> None:
    base = {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
    hook = one_webhook(rules=[{**base, **rule}])
    assert hook.matches(*request_, {}, {}) is expected


def test_no_rules_select_nothing() -> None:
    assert not one_webhook(rules=[]).matches("CREATE", "", "v1", "pods", {}, {})


@pytest.mark.parametrize(("fields", "error", "words"), [
    ({"matchConditions": [{"name": "x", "expression": "true"}]}, UnsupportedResource, "matchConditions (CEL)"),
    ({"reinvocationPolicy": "IfNeeded"}, UnsupportedResource, "reinvocationPolicy 'IfNeeded'"),
    ({"color": "blue"}, UnsupportedResource, "fields ['color']"),
    ({"admissionReviewVersions": ["v1beta1"]}, UnsupportedResource, "lack 'v1'"),
    ({"sideEffects": "Some"}, ManifestError, "sideEffects"),
    ({"failurePolicy": "Maybe"}, ManifestError, "failurePolicy"),
    ({"timeoutSeconds": 31}, ManifestError, "timeoutSeconds must be 1-30"),
    ({"clientConfig": {}}, ManifestError, "exactly one of url and service"),
    ({"clientConfig": {"url": "http://hooks.example.com/x"}}, ManifestError, "must be https://"),
    ({"clientConfig": {"url": "https://h/x", "caBundle": "not base64!"}}, ManifestError, "not base64"),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/exec"]}]},
     UnsupportedResource, "subresources ['pods/exec']"),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                 "scope": "Namespaced"}]}, UnsupportedResource, "scope 'Namespaced'"),
    ({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}},
     ManifestError, "operator must be one of"),
    ({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, ManifestError, "needs values"),
    ({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]}},
     ManifestError, "takes no values"),
])
def test_refuses_what_it_does_not_implement(fields: dict[str, Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error) as refused:
        one_webhook(**fields)
    assert words in str(refused.value)
    assert "hook.tests.example.com" in str(refused.value)


def test_refuses_other_kinds_and_validating_reinvocation() -> None:
    with pytest.raises(UnsupportedResource, match="not a webhook configuration"):
        webhooks_of({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}})
    with pytest.raises(ManifestError, match="reinvocationPolicy is a mutating webhook's field"):
        one_webhook("ValidatingWebhookConfiguration", reinvocationPolicy="Never")
    with pytest.raises(ManifestError, match="repeated: a"):
        webhooks_of(configuration_doc("MutatingWebhookConfiguration", hook_doc("a"), hook_doc("a")))
    assert one_webhook("ValidatingWebhookConfiguration").kind == "validating"


def test_ca_bundle_round_trips(ca: MeshCA) -> None:
    hook = one_webhook()
    assert hook.ca_pem() is None
    filled = hook.with_ca_bundle(ca.root_pem)
    assert filled.ca_pem() == ca.root_pem
    assert base64.b64decode(filled.ca_bundle or "").decode() == ca.root_pem


