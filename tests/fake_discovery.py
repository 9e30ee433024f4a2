"""What the fake Kubernetes API (tests/fakeapi.py) serves: discovery documents and resource paths.

The built-in kinds are those meshconf reads and writes; the kinds of applied CRDs come from
tests/fake_crds.py. Shapes as kube-apiserver serves them (APIVersions, APIGroupList,
APIResourceList; /api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]] and the same under
/apis/<group>/<version>).
"""

from dataclasses import dataclass
from typing import Any

from tests.fake_crds import CRD_GV, Resource


def _builtin(group_version: str, *entries: tuple[str, str, bool]) -> list[Resource]:
    group, _, version = group_version.rpartition("/")
    return [Resource(group, version, plural, kind, namespaced) for plural, kind, namespaced in entries]


# The built-in kinds meshconf reads and writes: its own, Istio's samples/addons (RBAC) and the
# Gateway API standard install (its ValidatingAdmissionPolicy).
BUILTIN: list[Resource] = [
    *_builtin("v1", ("namespaces", "Namespace", False), ("pods", "Pod", True), ("events", "Event", True),
              ("services", "Service", True), ("configmaps", "ConfigMap", True),
              ("serviceaccounts", "ServiceAccount", True), ("secrets", "Secret", True),
              ("endpoints", "Endpoints", True)),
    *_builtin("apps/v1", ("deployments", "Deployment", True)),
    *_builtin("networking.k8s.io/v1", ("ingresses", "Ingress", True), ("ingressclasses", "IngressClass", False)),
    *_builtin(CRD_GV, ("customresourcedefinitions", "CustomResourceDefinition", False)),
    *_builtin("admissionregistration.k8s.io/v1",
              ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
              ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
              ("validatingadmissionpolicies", "ValidatingAdmissionPolicy", False),
              ("validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False)),
    *_builtin("rbac.authorization.k8s.io/v1", ("clusterroles", "ClusterRole", False),
              ("clusterrolebindings", "ClusterRoleBinding", False), ("roles", "Role", True),
              ("rolebindings", "RoleBinding", True)),
]
SUBRESOURCES = {"pods": ("log", "exec", "portforward", "status"), "namespaces": ("status", "finalize")}


@dataclass(frozen=True)
class Route:
    """A resource path, split: /apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<sub>]]."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None = None

    @property
    def collection(self) -> str:
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        prefix = f"/apis/{self.resource.group_version}" if self.resource.group else "/api/v1"
        return f"{prefix}{where}/{self.resource.plural}"

    @property
    def object_path(self) -> str:
        return f"{self.collection}/{self.name}"


def discovery(path: str, served: list[Resource]) -> dict[str, Any] | None:
    """The discovery document at path (/version, /api, /apis, a group version), or None."""
    if path in ("/version", "/version/"):  # the client asks with a trailing slash
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.1"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": _groups(served)}
    parts = path.strip("/").split("/")
    if path == "/api/v1" or (parts[0] == "apis" and len(parts) == 3):
        group_version = "v1" if path == "/api/v1" else f"{parts[1]}/{parts[2]}"
        resources = [r for r in served if r.group_version == group_version]
        if not resources:
            return None
        listed = [r.discovery() for r in resources]
        listed += [{"name": f"{r.plural}/{sub}", "kind": r.kind, "namespaced": r.namespaced, "verbs": ["get"]}
                   for r in resources for sub in SUBRESOURCES.get(r.plural, ())]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": listed}
    return None


def _groups(served: list[Resource]) -> list[dict[str, Any]]:
    versions: dict[str, list[str]] = {}
    for resource in served:
        if resource.group and resource.version not in versions.setdefault(resource.group, []):
            versions[resource.group].append(resource.version)
    return [{"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in listed],
             "preferredVersion": {"groupVersion": f"{group}/{listed[0]}", "version": listed[0]}}
            for group, listed in versions.items()]


def builtin_resource(group_version: str, plural: str) -> Resource:
    return next(r for r in BUILTIN if r.group_version == group_version and r.plural == plural)


def route(path: str, served: list[Resource]) -> Route | None:
    """The resource path's parts, or None when no served resource is there (the server's 404)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    by_plural = {r.plural: r for r in served if r.group_version == group_version}
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in by_plural and by_plural[rest[2]].namespaced:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in by_plural or len(rest) > 3:
        return None
    resource = by_plural[rest[0]]
    if resource.namespaced and namespace is None and len(rest) > 1:
        return None  # a namespaced object is only reached through its namespace
    subresource = rest[2] if len(rest) == 3 else None
    if subresource is not None and subresource not in SUBRESOURCES.get(resource.plural, ()):
        return None
    return Route(resource, namespace, rest[1] if len(rest) > 1 else None, subresource)
