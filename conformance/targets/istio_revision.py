"""A second Istio control plane revision beside meshconf's own mesh, for RevisionInjection.

Its install and removal command lines (built like the mesh's, by targets/istio.py's IstioInstall),
and when it is ready to inject. Upstream: istio.io "Canary Upgrades"
(https://istio.io/latest/docs/setup/upgrade/canary/).
"""

import shlex
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError, cleanup_after
from conformance.names import DEFAULT_REVISION, ISTIO_NAMESPACE, istiod_name
from conformance.settings import Timeouts
from conformance.targets import istio_release
from conformance.targets.istio import IstioInstall, Runner, run_command
from conformance.targets.kube import Kube
from conformance.targets.kube_views import rollout_gap
from conformance.waiting import wait_for
from conformance.webhooks import API_VERSION as ADMISSION_API_VERSION

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
# The IstioOperator component with Istio's CRDs and the default validator (istio/istio
# manifests/charts/base), as an istioctl --set path.
BASE_COMPONENT = "components.base.enabled"


def not_ours(context: str | None) -> str:
    """Why a mesh meshconf did not install gets no second revision, and how to change that."""
    where = f"context {context!r}" if context else "this cluster"
    return (f"meshconf did not install Istio on {where}, and installs a second control plane revision only beside "
            "a mesh it installed; pass --install-mesh --yes on a cluster without Istio to let meshconf install "
            "(and later remove) both")


@dataclass(frozen=True)
class Revision:
    """Revision `name` of istiod, installed beside `mesh` (meshconf's installation) as it was installed;
    of another Istio release when `version` is given (MeshUpgrade's old one), whose istioctl is in
    `release_dir`.

    The *_argvs methods are pure: they are what `--plan` prints."""

    mesh: IstioInstall
    name: str
    version: str | None = None
    release_dir: Path | None = None

    @property
    def _install(self) -> IstioInstall:
        """The mesh's installation as this revision's release makes it."""
        if self.version is None or self.version == self.mesh.version:
            return self.mesh
        return replace(self.mesh, version=self.version, release_dir=self.release_dir)

    def install_argvs(self) -> list[list[str]]:
        """istioctl: the minimal profile with --revision. Helm: only the istiod chart as release
        istiod-<name> with revision=<name>; never the base chart, whose defaultRevision would move
        the default validator to the new revision (manifests/charts/base/templates/
        defaultrevision-validatingwebhookconfiguration.yaml). Without a profile the istiod chart's
        values are its defaults, as the minimal profile's are. Either way with REVISION_REQUESTS,
        which the mesh's own values override. Of another release, istioctl leaves out the base
        component too: its CRDs would replace the mesh's own, which serve both revisions."""
        mesh = self._install
        if mesh.method == "istioctl":
            requests = {ISTIOCTL_VALUES + key: value for key, value in REVISION_REQUESTS.items()}
            base = {BASE_COMPONENT: "false"} if mesh is not self.mesh else {}
            revision = replace(mesh, revision=self.name, profile=REVISION_PROFILE,
                               values={**requests, **mesh.values, **base})
            return [revision.install_argv()]
        sets = ["--set", f"revision={self.name}"]
        for key, value in {**REVISION_REQUESTS, **mesh.values}.items():
            sets += ["--set", f"{key}={value}"]
        return [mesh.helm_upgrade(istiod_name(self.name), "istiod", sets)]

    def uninstall_argvs(self) -> list[list[str]]:
        """Removes this revision only: `istioctl uninstall --revision`, or its Helm release."""
        mesh = self._install
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


class InstalledRevision:
    """A revision installed for a block. remove() takes it away before the block ends (MeshUpgrade's
    last step, under load); otherwise, or when that failed, the block's end does."""

    def __init__(self, revision: Revision) -> None:
        self.revision = revision
        self.removed = False

    @property
    def name(self) -> str:
        return self.revision.name

    def remove(self) -> None:
        if not self.removed:
            self.revision.uninstall()
            self.removed = True


def beside(mesh: IstioInstall, name: str, version: str | None, cache_dir: Path, releases: str) -> Revision:
    """Revision `name` beside meshconf's mesh, of Istio `version` (None: the mesh's own); istioctl's
    release of another version is downloaded (and cached) here, as the mesh's was."""
    if name == DEFAULT_REVISION or mesh.revision == name:
        raise ConformanceError(f"revision {name!r} is the installed mesh's own: name another")
    if version is None or version == mesh.version or mesh.method != "istioctl":
        return Revision(mesh, name, version)
    release = istio_release.fetch_release(version, cache_dir, base_url=releases, timeout=mesh.timeout)
    return Revision(mesh, name, version, release)


@contextmanager
def installed_revision(kube: Kube, revision: Revision, timeouts: Timeouts) -> Iterator[InstalledRevision]:
    """`revision` installed and ready to inject for the block, and removed after it whatever happens
    (unless remove() already did)."""
    installed = InstalledRevision(revision)
    try:
        revision.install()
        wait_revision(kube, revision.name, timeouts.rollout)
        yield installed
    except BaseException as failure:
        cleanup_after(failure, f"uninstall Istio revision {revision.name}", installed.remove)
        raise
    installed.remove()


def wait_revision(kube: Kube, name: str, timeout: float) -> None:
    def pending() -> str | None:
        return revision_gap(
            name,
            kube.get("apps/v1", "Deployment", istiod_name(name), ISTIO_NAMESPACE),
            kube.get(ADMISSION_API_VERSION, "MutatingWebhookConfiguration", injector_configuration(name)),
        )

    wait_for(pending, timeout, kube.poll_interval, f"Istio revision {name} ready")


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
