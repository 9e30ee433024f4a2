"""A second Istio control plane revision beside meshconf's own mesh, for RevisionInjection.

Its install and removal command lines (built like the mesh's, by targets/istio.py's IstioInstall),
and when it is ready to inject. Upstream: istio.io "Canary Upgrades"
(https://istio.io/latest/docs/setup/upgrade/canary/).
"""

import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from conformance.names import ISTIO_NAMESPACE, istiod_name
from conformance.targets.istio import IstioInstall, Runner, run_command
from conformance.targets.kube_views import rollout_gap

# The feature that needs a second control plane revision, which only a mesh meshconf installed gets.
REVISION_FEATURE = "RevisionInjection"
# The istioctl profile of that revision: the default profile without its ingress gateway, i.e. base
# and istiod (istio/istio manifests/profiles/minimal.yaml). A revision installed beside an existing
# default one leaves the default's injector and validator alone (operator/pkg/webhook/webhook.go
# detectIfTagWebhookIsNeeded; istio.io docs/setup/upgrade/canary).
REVISION_PROFILE = "minimal"
# The demo profile's requests for istiod and each injected proxy (istio/istio manifests/charts/
# istio-control/istio-discovery/files/profile-demo.yaml), as istiod chart values. Without them the
# chart's defaults apply (values.yaml: pilot 500m/2048Mi, a proxy 100m/128Mi), and a second istiod
# may not fit on a 2-CPU kind node beside the demo mesh. The rest of the demo profile (access logs,
# tracing, no autoscaling) is not what the revision is for, so the chart's `profile=demo` is not used.
REVISION_REQUESTS = {
    "pilot.resources.requests.cpu": "10m",
    "pilot.resources.requests.memory": "100Mi",
    "global.proxy.resources.requests.cpu": "10m",
    "global.proxy.resources.requests.memory": "40Mi",
}
# istioctl sets chart values under IstioOperator's spec.values (istio.io docs/setup/install/istioctl).
ISTIOCTL_VALUES = "values."


def not_ours(context: str | None) -> str:
    """Why a mesh meshconf did not install gets no second revision, and how to change that."""
    where = f"context {context!r}" if context else "this cluster"
    return (f"meshconf did not install Istio on {where}, and installs a second control plane revision only beside "
            "a mesh it installed; pass --install-mesh --yes on a cluster without Istio to let meshconf install "
            "(and later remove) both")


@dataclass(frozen=True)
class Revision:
    """Revision `name` of istiod, installed beside `mesh` (meshconf's installation) as it was installed.

    The *_argvs methods are pure: they are what `--plan` prints."""

    mesh: IstioInstall
    name: str

    def install_argvs(self) -> list[list[str]]:
        """istioctl: the minimal profile with --revision. Helm: only the istiod chart as release
        istiod-<name> with revision=<name>; never the base chart, whose defaultRevision would move
        the default validator to the new revision (manifests/charts/base/templates/
        defaultrevision-validatingwebhookconfiguration.yaml). Without a profile the istiod chart's
        values are its defaults, as the minimal profile's are. Either way with REVISION_REQUESTS,
        which the mesh's own values override."""
        mesh = self.mesh
        if mesh.method == "istioctl":
            requests = {ISTIOCTL_VALUES + key: value for key, value in REVISION_REQUESTS.items()}
            revision = replace(mesh, revision=self.name, profile=REVISION_PROFILE,
                               values={**requests, **mesh.values})
            return [revision.install_argv()]
        sets = ["--set", f"revision={self.name}"]
        for key, value in {**REVISION_REQUESTS, **mesh.values}.items():
            sets += ["--set", f"{key}={value}"]
        return [mesh.helm_upgrade(istiod_name(self.name), "istiod", sets)]

    def uninstall_argvs(self) -> list[list[str]]:
        """Removes this revision only: `istioctl uninstall --revision`, or its Helm release."""
        mesh = self.mesh
        if mesh.method == "istioctl":
            return [replace(mesh, revision=self.name, profile=REVISION_PROFILE).uninstall_argv()]
        return [[mesh.helm, "uninstall", istiod_name(self.name), "--namespace", ISTIO_NAMESPACE, *mesh.helm_cluster()]]

    def plan(self) -> list[str]:
        return [shlex.join(argv) for argv in (*self.install_argvs(), *self.uninstall_argvs())]

    def install(self, runner: Runner = run_command) -> list[subprocess.CompletedProcess[str]]:
        """Install the revision; the caller uninstalls it in a finally."""
        return self.mesh.run_in_order(self.install_argvs(), runner)

    def uninstall(self, runner: Runner = run_command) -> list[subprocess.CompletedProcess[str]]:
        return self.mesh.run_every(self.uninstall_argvs(), runner)


def injector_configuration(revision: str) -> str:
    """The MutatingWebhookConfiguration of a revision's injector, installed in istio-system (istio/istio
    manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml)."""
    return f"istio-sidecar-injector-{revision}"


def revision_gap(revision: str, istiod: Mapping[str, Any] | None, injector: Mapping[str, Any] | None) -> str | None:
    """What revision `revision` still lacks to inject, or None: its istiod Deployment rolled out, and
    its injector webhooks trusting istiod's CA, which istiod patches in once it runs (istio/istio
    pkg/webhooks/webhookpatch.go); until then the API server cannot call them."""
    if istiod is None:
        return f"Deployment {istiod_name(revision)} does not exist in {ISTIO_NAMESPACE}"
    gap = rollout_gap(istiod)
    if gap:
        return f"Deployment {gap}"
    if injector is None:
        return f"MutatingWebhookConfiguration {injector_configuration(revision)} does not exist"
    unpatched = [w.get("name", "?") for w in injector.get("webhooks") or []
                 if not (w.get("clientConfig") or {}).get("caBundle")]
    if unpatched or not injector.get("webhooks"):
        return (f"MutatingWebhookConfiguration {injector_configuration(revision)}: no caBundle in "
                f"{', '.join(unpatched) or 'any webhook'} yet ({istiod_name(revision)} patches it in)")
    return None
