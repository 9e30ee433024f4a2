"""Shared helpers of the cluster side's tests: the upstream CRDs the fake Kubernetes API is given,
Gateway API releases, a fake Istio release, and Istio's readiness objects as the fake API sees them."""

import copy
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from conformance import manifests
from conformance.names import GATEWAY_API_GROUP
from conformance.settings import RunSettings
from conformance.targets import gateway_api_crds, istio
from conformance.targets.crd_schema import CRD_DIR, GATEWAY_API_CRD_DIR, ISTIO_CRD_FILE
from conformance.targets.gateway_api_crds import BUNDLE_VERSION, CHANNEL, SAFE_UPGRADES
from tests.fake_http import Answer, status
from tests.fakeapi import FakeApi
from tests.fakes import BIN
from tests.release_server import ReleaseServer, tarball


# The upstream CRDs, as the package ships them (CRD_DIR): Istio's bundle, and Gateway API's
# standard channel; each named by its path under CRD_DIR.
ISTIO_CRDS = (ISTIO_CRD_FILE,)
GATEWAY_API_CRDS = tuple(f"{GATEWAY_API_CRD_DIR}/{p.name}"
                         for p in sorted((CRD_DIR / GATEWAY_API_CRD_DIR).glob("*.yaml")))


@functools.cache
def _upstream_crds(relative: str) -> tuple[dict[str, Any], ...]:
    docs = yaml.load_all((CRD_DIR / relative).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return tuple(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")


def upstream_crd(name: str) -> dict[str, Any]:
    """One upstream CRD by name (e.g. virtualservices.networking.istio.io), a copy to change at will."""
    for relative in (*ISTIO_CRDS, *GATEWAY_API_CRDS):
        for crd in _upstream_crds(relative):
            if crd["metadata"]["name"] == name:
                return copy.deepcopy(crd)
    raise KeyError(f"no upstream CRD {name}")


def install_crds(api: FakeApi, *files: str) -> list[str]:
    """Apply upstream CRD files (ISTIO_CRDS, GATEWAY_API_CRDS) to the fake API, as an installer
    would have before the test; their kinds are served from now on. The CRDs' names."""
    names = []
    for relative in files:
        for crd in _upstream_crds(relative):
            api.install_crd(crd)
            names.append(crd["metadata"]["name"])
    return names


def gateway_api_release(version: str, channel: str = "standard",
                        extra: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> bytes:
    """A Gateway API release's standard-install.yaml, concatenated as kubernetes-sigs/gateway-api
    hack/build-install-yaml.sh does (config/crd/standard/gateway*.yaml in file order, each after a
    comment naming it), from the upstream standard CRDs stamped with `version` and `channel`, and
    `extra` files (file name stem -> documents) that CRD_DIR does not hold."""
    files = {Path(relative).stem: _stamped((CRD_DIR / relative).read_text(), version, channel)
             for relative in GATEWAY_API_CRDS}
    for stem, docs in (extra or {}).items():
        files[stem] = "\n---\n\n".join(yaml.safe_dump(dict(doc), sort_keys=False) for doc in docs)
    parts = ["#\n# Gateway API Standard channel install\n#\n"]
    for stem in sorted(files):
        parts.append(f"---\n#\n# config/crd/standard/gateway.networking.k8s.io_{stem}.yaml\n#\n{files[stem]}")
    return "".join(parts).encode()


def _stamped(crd_text: str, version: str, channel: str) -> str:
    """An upstream CRD file as a release ships it: the version bump rewrites its bundle-version."""
    return (crd_text.replace(f"{BUNDLE_VERSION}: v0.0.0-dev", f"{BUNDLE_VERSION}: {version}")
            .replace(f"{CHANNEL}: standard", f"{CHANNEL}: {channel}"))


# kubernetes-sigs/gateway-api at tag v1.5.1, config/crd/standard/: beside the five CRDs of
# CRD_DIR, BackendTLSPolicy, ListenerSet and TLSRoute (served as v1), and
# gateway.networking.k8s.io_vap_safeupgrades.yaml, a ValidatingAdmissionPolicy and its binding
# that still say bundle-version v1.5.0-dev (the release's version bump stamped only the CRDs).
V1_5_1 = "v1.5.1"
V1_5_1_MORE_CRDS = (("BackendTLSPolicy", "backendtlspolicies"), ("ListenerSet", "listenersets"),
                    ("TLSRoute", "tlsroutes"))
V1_5_1_POLICY_BUNDLE = "v1.5.0-dev"


def gateway_api_v1_5_1() -> bytes:
    """A standard-install.yaml shaped as v1.5.1's: its eight CRDs in file order (the three that
    CRD_DIR lacks with a schema that keeps every field), then the admission policy."""
    extra: dict[str, list[dict[str, Any]]] = {
        plural: [stand_in_crd(kind, plural, V1_5_1)] for kind, plural in V1_5_1_MORE_CRDS}
    extra["vap_safeupgrades"] = safe_upgrades_policy(V1_5_1_POLICY_BUNDLE)
    return gateway_api_release(V1_5_1, extra=extra)


def stand_in_crd(kind: str, plural: str, version: str) -> dict[str, Any]:
    """A namespaced standard-channel Gateway API CRD serving v1, its schema keeping every field."""
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GATEWAY_API_GROUP}",
                     "annotations": {BUNDLE_VERSION: version, CHANNEL: "standard"}},
        "spec": {"group": GATEWAY_API_GROUP, "scope": "Namespaced",
                 "names": {"categories": ["gateway-api"], "kind": kind, "listKind": f"{kind}List",
                           "plural": plural, "singular": kind.lower()},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema,
                               "subresources": {"status": {}}}]},
    }


def safe_upgrades_policy(bundle: str) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy of v1.5's standard install and its binding, with upstream's
    names, annotations and match rules; the CEL checks are a stand-in (the fake API runs none)."""
    annotations = {BUNDLE_VERSION: bundle, CHANNEL: "standard"}
    crds = {"apiGroups": ["apiextensions.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"]}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"annotations": annotations, "name": SAFE_UPGRADES},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{**crds, "resources": ["*"]}]},
                  "validations": [{"expression": f"object.spec.group != '{GATEWAY_API_GROUP}' || true",
                                   "message": "a stand-in for the release's checks", "reason": "Invalid"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"annotations": annotations, "name": SAFE_UPGRADES},
         "spec": {"policyName": SAFE_UPGRADES, "validationActions": ["Deny"],
                  "matchResources": {"resourceRules": [{**crds, "resources": ["customresourcedefinitions"]}]}}},
    ]


# The Gateway API release the default Istio builds against, and where a release server keeps it.
_DEFAULT_RELEASE = gateway_api_crds.release_for(RunSettings().istio_version)
GATEWAY_API = _DEFAULT_RELEASE.version if _DEFAULT_RELEASE else "none"
GATEWAY_API_ASSET = f"/releases/{GATEWAY_API}/standard-install.yaml"


def publish_gateway_api(release_server: ReleaseServer, version: str, content: bytes | None = None) -> str:
    """Serve a Gateway API release at <base>/<version>/standard-install.yaml; the base URL."""
    release_server.files[f"/releases/{version}/standard-install.yaml"] = content or gateway_api_release(version)
    return release_server.url


# ---------------------------------------------------------------------------------------------
# A fake Istio release, and Istio's readiness objects as the fake API sees them

ISTIO_VERSION = RunSettings().istio_version
INVALID_VS = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/meshconf-readiness-invalid"
READINESS_GATEWAY = "/apis/networking.istio.io/v1/namespaces/istio-system/gateways/meshconf-readiness"
DENIED = ('admission webhook "validation.istio.io" denied the request: '
          "configuration is invalid: HTTP route cannot contain both route and redirect")
PROMETHEUS_YML = (Path(__file__).parent / "data" / "prometheus.yml").read_text()
_READ = [{"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]}]


def _addon_meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": name}
    return {"name": name, "labels": labels, **({"namespace": "istio-system"} if namespaced else {})}


def _addon(name: str, config_key: str, config: str, port: int, rules: list[dict[str, Any]],
           role: bool = False) -> str:
    """The documents of an Istio samples/addons manifest, abridged, in upstream's order."""
    selector = {"app.kubernetes.io/name": name}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _addon_meta(name)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _addon_meta(name), "data": {config_key: config}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _addon_meta(name, False),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _addon_meta(name, False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "istio-system"}]},
    ]
    if role:  # kiali's namespaced Role for the control plane
        docs += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _addon_meta(f"{name}-controlplane"),
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _addon_meta(f"{name}-controlplane"),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-controlplane"},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "istio-system"}]},
        ]
    docs += [
        {"apiVersion": "v1", "kind": "Service", "metadata": _addon_meta(name),
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _addon_meta(name),
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": selector, "annotations": {"sidecar.istio.io/inject": "false"}},
                               "spec": {"serviceAccountName": name,
                                        "containers": [{"name": name, "image": f"example.invalid/{name}:1",
                                                        "ports": [{"containerPort": port}]}]}}}},
    ]
    return "".join(f"---\n# Source: {name}/templates/{d['kind'].lower()}.yaml\n{yaml.safe_dump(d, sort_keys=False)}"
                   for d in docs)


def fake_release(version: str = ISTIO_VERSION) -> bytes:
    """An Istio release archive: the fake istioctl launcher (pointing at tests/fakes) and the addons."""
    launcher = (BIN / "istioctl").read_text()
    relative = "str(Path(__file__).resolve().parent.parent)"
    assert relative in launcher  # the copy must still find tests/fakes/engine/ from the cache
    top = f"istio-{version}"
    return tarball({
        f"{top}/bin/istioctl": launcher.replace(relative, repr(str(BIN.parent))).encode(),
        f"{top}/samples/addons/prometheus.yaml": _addon("prometheus", "prometheus.yml", PROMETHEUS_YML, 9090,
                                                        _READ + [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
                                                        ).encode(),
        f"{top}/samples/addons/kiali.yaml": _addon("kiali", "config.yaml", "server:\n  port: 20001\n", 20001,
                                                   _READ, role=True).encode(),
        f"{top}/manifest.yaml": b"version: " + version.encode() + b"\n",
    })


def istio_deployment(name: str, available: int) -> dict[str, Any]:
    """A one-replica Deployment in istio-system, as the API server lists it with `available` replicas."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "istio-system", "generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": available}}


def accept_once_then_deny(api: FakeApi) -> None:
    """Istio's validating webhook right after install: not patched yet, then live."""
    [invalid] = manifests.load(istio.INVALID_VIRTUALSERVICE)

    def accept() -> Answer:
        api.objects[INVALID_VS] = {**invalid, "metadata": {**invalid["metadata"], "namespace": "default"}}
        return 200, api.objects[INVALID_VS]

    api.script("PATCH", INVALID_VS, accept, (400, status(400, "BadRequest", DENIED)))
