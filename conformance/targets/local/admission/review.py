"""Admitting an object as the Kubernetes API server does: AdmissionReview v1 over HTTPS to each
selected webhook, mutating webhooks first, in order, each JSONPatch applied before the next call,
then the validating webhooks on the result.

Failures and refusals carry the API server's messages (kubernetes/kubernetes
staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go,
validating/dispatcher.go, errors/statuserror.go, pkg/util/webhook/error.go):
- a call that fails (connection, TLS, timeout, HTTP status, an invalid response, an undecodable
  patch) is an `ErrCallingWebhook`: with failurePolicy Fail the request fails with
  `Internal error occurred: failed calling webhook "<name>": <reason>`; with Ignore the webhook
  is skipped and the object goes on unchanged by it;
- a denial (allowed: false) fails the request whatever the failurePolicy:
  `admission webhook "<name>" denied the request: <message>`;
- a patch that does not apply to the object is an internal error, not a call failure.
"""

import base64
import copy
import json
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonpatch

from conformance.errors import ConformanceError
from conformance.webhooks import MUTATING, VALIDATING, IGNORE, Webhook

REVIEW_API_VERSION = "admission.k8s.io/v1"
REVIEW_KIND = "AdmissionReview"
JSON_PATCH = "JSONPatch"
# The API server labels every namespace with its own name (Kubernetes 1.21+,
# NamespaceDefaultLabelName), so selectors can pick namespaces by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# (group, version, resource) and (group, version, kind), as AdmissionReview's request names them.
GroupVersionResource = tuple[str, str, str]
GroupVersionKind = tuple[str, str, str]
# A webhook with clientConfig.service -> the https URL that reaches it (service path included).
Resolver = Callable[[Webhook], str]


class AdmissionRefused(ConformanceError):
    """The API server refused the object: a webhook denied it, or could not be called under
    failurePolicy Fail, or the object failed its CRD's schema. The message is the API server's."""


class _CallFailed(Exception):
    """A webhook call that failed: failurePolicy decides (the API server's ErrCallingWebhook)."""


def admit(
    webhooks: Iterable[Webhook],
    obj: Mapping[str, Any],
    *,
    operation: str,
    namespace: str,
    namespace_labels: Mapping[str, str],
    resource: GroupVersionResource,
    kind: GroupVersionKind,
    resolve: Resolver,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The object as admitted (patched by the mutating webhooks), or AdmissionRefused. With
    `dry_run` the webhooks are told the request is a dry run (request.dryRun).

    `resolve` maps a webhook with a service reference to its https URL; a webhook with a url is
    called at that url. A webhook without caBundle is checked against this machine's roots, as
    the API server checks it against its own.
    """
    current = copy.deepcopy(dict(obj))
    labels = {**namespace_labels, NAMESPACE_NAME_LABEL: namespace}
    # The API server orders configurations by name, then webhooks as each configuration lists
    # them (staging/src/k8s.io/apiserver/pkg/admission/configuration/mutating_webhook_manager.go).
    ordered = sorted(webhooks, key=lambda hook: hook.configuration)
    for phase in (MUTATING, VALIDATING):
        for hook in ordered:
            if hook.kind != phase:
                continue
            object_labels = current.get("metadata", {}).get("labels") or {}
            if not hook.matches(operation, resource[0], resource[1], resource[2], labels, object_labels):
                continue
            review = _review(current, operation, namespace, resource, kind, dry_run)
            try:
                response = _call(hook, review, resolve)
                if not response.get("allowed"):
                    # A denial stands whatever the failurePolicy.
                    raise AdmissionRefused(_denied(hook, (response.get("status") or {}).get("message")))
                if phase == MUTATING:
                    current = _patched(current, response)
            except _CallFailed as failure:
                if hook.failure_policy == IGNORE:
                    continue
                raise AdmissionRefused(
                    f'Internal error occurred: failed calling webhook "{hook.name}": {failure}'
                ) from None
    return current


def received_request(review: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request of an AdmissionReview a webhook server was sent; ValueError if it holds no object."""
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("object"), Mapping):
        raise ValueError("AdmissionReview without request.object")
    return request


def answer(request: Mapping[str, Any], allowed: bool, **fields: Any) -> dict[str, Any]:
    """A webhook server's AdmissionReview answering `request` (its uid echoed, as the API server requires)."""
    response = {"uid": request.get("uid", ""), "allowed": allowed, **fields}
    return {"apiVersion": REVIEW_API_VERSION, "kind": REVIEW_KIND, "response": response}


def _review(
    obj: Mapping[str, Any], operation: str, namespace: str, resource: GroupVersionResource, kind: GroupVersionKind,
    dry_run: bool,
) -> dict[str, Any]:
    group_version_kind = {"group": kind[0], "version": kind[1], "kind": kind[2]}
    group_version_resource = {"group": resource[0], "version": resource[1], "resource": resource[2]}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": group_version_kind,
        "resource": group_version_resource,
        "requestKind": group_version_kind,
        "requestResource": group_version_resource,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "meshconf"},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
    }
    name = obj.get("metadata", {}).get("name")
    if name:
        request["name"] = name
    return {"apiVersion": REVIEW_API_VERSION, "kind": REVIEW_KIND, "request": request}


def _call(hook: Webhook, review: Mapping[str, Any], resolve: Resolver) -> dict[str, Any]:
    """The webhook's verified `response`, or _CallFailed with the API server's reason."""
    try:
        url = hook.url if hook.url is not None else resolve(hook)
    except ConformanceError as unresolved:  # the API server's service resolver failing: a call failure
        raise _CallFailed(str(unresolved)) from None
    # A service's certificate is checked against <name>.<namespace>.svc whatever address the
    # service resolves to (staging/src/k8s.io/apiserver/pkg/util/webhook/client.go).
    server_name = hook.service.dns_name if hook.service is not None else urlsplit(url).hostname
    try:
        with httpx.Client(verify=_trust(hook.ca_pem()), timeout=hook.timeout_seconds) as client:
            reply = client.post(url, json=review, extensions={"sni_hostname": server_name})
            reply.raise_for_status()
            body = reply.json()
    except (httpx.HTTPError, ssl.SSLError, ValueError) as error:
        raise _CallFailed(f'failed to call webhook: Post "{url}": {error}') from None
    try:
        return _verified(body, review["request"]["uid"], mutating=hook.kind == MUTATING)
    except ValueError as error:
        raise _CallFailed(f"received invalid webhook response: {error}") from None


def _trust(pem: str | None) -> ssl.SSLContext:
    if pem is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as error:
        raise _CallFailed(f"could not get REST client: caBundle holds no usable certificate ({error})") from None


def _verified(body: Any, uid: str, mutating: bool) -> dict[str, Any]:
    """The response of an AdmissionReview reply to request `uid` (staging/src/k8s.io/apiserver/
    pkg/admission/plugin/webhook/request/admissionreview.go VerifyAdmissionResponse)."""
    if not isinstance(body, dict) or body.get("apiVersion") != REVIEW_API_VERSION or body.get("kind") != REVIEW_KIND:
        got = f"{body.get('apiVersion')}, Kind={body.get('kind')}" if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"expected webhook response of {REVIEW_API_VERSION}, Kind={REVIEW_KIND}, got {got}")
    response = body.get("response")
    if not isinstance(response, dict):
        raise ValueError("webhook response was absent")
    if response.get("uid") != uid:
        raise ValueError(f'expected response.uid="{uid}", got "{response.get("uid")}"')
    if response.get("patch") and not mutating:
        raise ValueError("validating webhook may not return response.patch")
    if response.get("patch") and response.get("patchType") is None:
        raise ValueError("webhook returned response.patch but not response.patchType")
    return response


def _patched(obj: dict[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` with the allowing response's JSONPatch applied."""
    if not response.get("patch"):
        return obj
    if response.get("patchType") != JSON_PATCH:
        raise _CallFailed(f"unsupported patch type {response.get('patchType')!r}")
    try:
        patch = jsonpatch.JsonPatch(json.loads(base64.b64decode(response["patch"])))
    except (ValueError, TypeError, jsonpatch.JsonPatchException) as error:
        raise _CallFailed(f"received undecodable patch in webhook response: {error}") from None
    try:
        return patch.apply(obj)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        # Not a call failure: failurePolicy Ignore does not cover it (mutating/dispatcher.go).
        raise AdmissionRefused(f"Internal error occurred: {error}") from None


def _denied(hook: Webhook, message: str | None) -> str:
    """The API server's words for a denial (staging/src/k8s.io/apiserver/pkg/admission/plugin/
    webhook/errors/statuserror.go ToStatusErr)."""
    if not message:
        return f'admission webhook "{hook.name}" denied the request without explanation'
    return f'admission webhook "{hook.name}" denied the request: {message}'

