"""Admission as the API server does it: webhook selection, AdmissionReview over HTTPS to Istio's
injector (and to small test webhooks), JSONPatches, failurePolicy, certificate checks, denials."""

import base64
import json
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conformance.names import PROXY_CONTAINER
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.admission.review import AdmissionRefused
from conformance.webhooks import IGNORE, Webhook, webhooks_of
from conformance.targets.local.xds.secrets import MeshCA
from tests.admission_builders import (
    WebhookServer,
    admit_pod,
    answer_of,
    configuration_doc,
    hook_doc,
    names,
    one_webhook,
    pod_doc,
    resolving_to,
)


# --- (3) admit with the manifest's webhooks and the injector (the policy table: test_injection.py)


def test_admit_leaves_the_given_object_alone(injector: Injector, istio_hooks: list[Webhook]) -> None:
    pod = pod_doc()
    admitted = admit_pod(istio_hooks, pod, resolving_to(injector.address), namespace_labels={"istio-injection": "enabled"})
    assert PROXY_CONTAINER in names(admitted["spec"]["containers"])
    assert names(pod["spec"]["containers"]) == ["httpbin"]


def test_admit_adds_the_namespace_name_label(ca: MeshCA, tmp_path: Path) -> None:
    # Istio's enableNamespacesByDefault webhook selects namespaces by kubernetes.io/metadata.name.
    server = WebhookServer(ca, "hooks.tests.svc", lambda review: (200, answer_of(review, allowed=True)), tmp_path)
    try:
        selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                          "values": ["kube-system"]}]}
        hook = one_webhook(namespaceSelector=selector).with_ca_bundle(ca.root_pem)
        admit_pod([hook], pod_doc(), resolving_to(server.address), namespace="kube-system")
        assert server.seen == []
        admit_pod([hook], pod_doc(), resolving_to(server.address), namespace="apps")
        [review] = server.seen
        assert review["request"]["namespace"] == "apps" and review["request"]["operation"] == "CREATE"
        assert review["request"]["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    finally:
        server.close()


# --- (4) failurePolicy when the injector cannot be called ------------------------------------


@pytest.fixture
def stopped_injector(ca: MeshCA, loopback_ips: list[str]) -> Injector:
    server = Injector(ca, loopback_ips[0])
    server.start()
    server.stop()
    return server


def test_fail_policy_refuses_when_the_injector_is_down(stopped_injector: Injector, istio_hooks: list[Webhook]) -> None:
    resolve = resolving_to(stopped_injector.address)
    with pytest.raises(AdmissionRefused) as refused:
        admit_pod(istio_hooks, pod_doc(), resolve, namespace_labels={"istio-injection": "enabled"})
    message = str(refused.value)
    assert message.startswith('Internal error occurred: failed calling webhook "namespace.sidecar-injector.istio.io": '
                              "failed to call webhook: Post ")
    assert stopped_injector.address[0] in message
    # A pod no webhook selects is admitted without a call.
    pod = pod_doc()
    assert admit_pod(istio_hooks, pod, resolve, namespace_labels={}) == pod


def test_ignore_policy_admits_unchanged_when_the_injector_is_down(
        stopped_injector: Injector, istio_hooks: list[Webhook]) -> None:
    ignoring = [replace(hook, failure_policy=IGNORE) for hook in istio_hooks]
    pod = pod_doc()
    assert admit_pod(ignoring, pod, resolving_to(stopped_injector.address), namespace_labels={"istio-injection": "enabled"}) == pod


def test_timeout_seconds_bounds_a_silent_webhook(ca: MeshCA, loopback_ips: list[str]) -> None:
    # Accepts connections (the kernel's backlog) but never answers the TLS handshake.
    with socket.socket() as silent:
        silent.bind((loopback_ips[1], 0))
        silent.listen(8)
        hook = one_webhook(timeoutSeconds=1).with_ca_bundle(ca.root_pem)
        started = time.monotonic()
        with pytest.raises(AdmissionRefused, match='failed calling webhook "hook.tests.example.com".*timed out'):
            admit_pod([hook], pod_doc(), resolving_to(silent.getsockname()))
        assert 0.9 < time.monotonic() - started < 5
        ignoring = replace(hook, failure_policy=IGNORE)
        assert admit_pod([ignoring], pod_doc(), resolving_to(silent.getsockname())) == pod_doc()


# --- (5) a server certificate that does not chain to caBundle is a call failure --------------


def test_untrusted_certificate_is_a_call_failure(injector: Injector, istio_hooks: list[Webhook]) -> None:
    stranger = MeshCA().root_pem
    untrusting = [hook.with_ca_bundle(stranger) for hook in istio_hooks]
    with pytest.raises(AdmissionRefused) as refused:
        admit_pod(untrusting, pod_doc(), resolving_to(injector.address), namespace_labels={"istio-injection": "enabled"})
    assert 'failed calling webhook "namespace.sidecar-injector.istio.io": failed to call webhook' in str(refused.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    ignoring = [replace(hook, failure_policy=IGNORE) for hook in untrusting]
    pod = pod_doc()
    assert admit_pod(ignoring, pod, resolving_to(injector.address), namespace_labels={"istio-injection": "enabled"}) == pod


def test_certificate_for_another_service_is_a_call_failure(injector: Injector, ca: MeshCA) -> None:
    # The injector's certificate names istiod.istio-system.svc, not hooks.tests.svc.
    hook = one_webhook(namespaceSelector={"matchLabels": {"istio-injection": "enabled"}}).with_ca_bundle(ca.root_pem)
    with pytest.raises(AdmissionRefused, match="CERTIFICATE_VERIFY_FAILED"):
        admit_pod([hook], pod_doc(), resolving_to(injector.address), namespace_labels={"istio-injection": "enabled"})


# --- (6) denials and invalid answers -----------------------------------------------------------


def _deny_forbidden(review: dict[str, Any]) -> tuple[int, Any]:
    if review["request"]["object"]["metadata"]["name"] == "forbidden":
        return 200, answer_of(review, allowed=False, status={"code": 403, "message": "pods named forbidden are not allowed"})
    if review["request"]["object"]["metadata"]["name"] == "mute":
        return 200, answer_of(review, allowed=False)
    return 200, answer_of(review, allowed=True)


def test_validating_denial_has_the_api_servers_words(ca: MeshCA, tmp_path: Path, injector: Injector,
                                                    istio_hooks: list[Webhook]) -> None:
    server = WebhookServer(ca, "hooks.tests.svc", _deny_forbidden, tmp_path)
    try:
        [deny] = webhooks_of(configuration_doc("ValidatingWebhookConfiguration", hook_doc("deny.tests.example.com")))
        # Denials stand even under failurePolicy Ignore.
        deny = replace(deny.with_ca_bundle(ca.root_pem), failure_policy=IGNORE)

        def resolve(hook: Webhook) -> str:
            return (resolving_to(server.address) if hook.service and hook.service.name == "hooks" else resolving_to(injector.address))(hook)

        with pytest.raises(AdmissionRefused) as refused:
            admit_pod([deny], pod_doc("forbidden"), resolve)
        assert str(refused.value) == (
            'admission webhook "deny.tests.example.com" denied the request: pods named forbidden are not allowed')
        with pytest.raises(AdmissionRefused) as mute:
            admit_pod([deny], pod_doc("mute"), resolve)
        assert str(mute.value) == 'admission webhook "deny.tests.example.com" denied the request without explanation'
        # Validation runs after the mutations, on the injected pod, whatever the list's order.
        server.seen.clear()
        admitted = admit_pod([deny, *istio_hooks], pod_doc("allowed"), resolve,
                          namespace_labels={"istio-injection": "enabled"})
        [review] = server.seen
        assert PROXY_CONTAINER in names(review["request"]["object"]["spec"]["containers"])
        assert PROXY_CONTAINER in names(admitted["spec"]["containers"])
    finally:
        server.close()


def test_mutating_denial_stops_admission(ca: MeshCA, tmp_path: Path) -> None:
    server = WebhookServer(ca, "hooks.tests.svc", _deny_forbidden, tmp_path)
    try:
        hook = one_webhook().with_ca_bundle(ca.root_pem)
        with pytest.raises(AdmissionRefused, match='^admission webhook "hook.tests.example.com" denied the request: '):
            admit_pod([hook], pod_doc("forbidden"), resolving_to(server.address))
        assert admit_pod([hook], pod_doc("fine"), resolving_to(server.address)) == pod_doc("fine")
    finally:
        server.close()


@pytest.mark.parametrize(("answer", "reason"), [
    (lambda review: (200, answer_of(review, allowed=True) | {"kind": "Status"}), "received invalid webhook response"),
    (lambda review: (200, {**answer_of(review, allowed=True), "response": {"uid": "other", "allowed": True}}),
     'received invalid webhook response: expected response.uid="[0-9a-f-]+", got "other"'),
    (lambda review: (500, {"message": "boom"}), "failed to call webhook"),
    (lambda review: (200, answer_of(review, allowed=True, patchType="JSONPatch", patch="bm90IGpzb24=")),
     "received undecodable patch"),
    (lambda review: (200, answer_of(review, allowed=True, patchType="JSONMergePatch", patch="e30=")),
     "unsupported patch type 'JSONMergePatch'"),
])
def test_invalid_answers_are_call_failures(ca: MeshCA, tmp_path: Path,
                                           answer: Callable[[dict[str, Any]], tuple[int, Any]], reason: str) -> None:
    server = WebhookServer(ca, "hooks.tests.svc", answer, tmp_path)
    try:
        hook = one_webhook().with_ca_bundle(ca.root_pem)
        with pytest.raises(AdmissionRefused, match=f'failed calling webhook "hook.tests.example.com": {reason}'):
            admit_pod([hook], pod_doc(), resolving_to(server.address))
        assert admit_pod([replace(hook, failure_policy=IGNORE)], pod_doc(), resolving_to(server.address)) == pod_doc()
    finally:
        server.close()


def test_patch_that_does_not_apply_is_an_internal_error_even_under_ignore(ca: MeshCA, tmp_path: Path) -> None:
    bad = base64.b64encode(json.dumps([{"op": "remove", "path": "/spec/nothing"}]).encode()).decode()
    server = WebhookServer(ca, "hooks.tests.svc",
                          lambda review: (200, answer_of(review, allowed=True, patchType="JSONPatch", patch=bad)), tmp_path)
    try:
        hook = replace(one_webhook().with_ca_bundle(ca.root_pem), failure_policy=IGNORE)
        with pytest.raises(AdmissionRefused, match="^Internal error occurred: ") as refused:
            admit_pod([hook], pod_doc(), resolving_to(server.address))
        assert "failed calling webhook" not in str(refused.value)
    finally:
        server.close()
