"""Istio on a cluster: install/uninstall, readiness, addons, debug commands.

No Kubernetes client code lives here (that is targets/kube.py). This module
builds command lines, runs them through an injectable runner, and decides
readiness from callables it is given. The release download is istio_release.py,
the support matrix istio_support.py, a second control plane revision istio_revision.py.
Upstream sources of what it relies on (more are named where used):
- install: istio.io "Install with istioctl" (https://istio.io/latest/docs/setup/install/istioctl/)
  and "Install with Helm" (https://istio.io/latest/docs/setup/install/helm/);
- telemetry: istio/istio samples/addons/prometheus.yaml and samples/addons/kiali.yaml;
  istio.io https://istio.io/latest/docs/ops/integrations/prometheus/ and
  https://istio.io/latest/docs/ops/integrations/kiali/;
- validating webhook: istio.io "Configuration Validation Problems"
  (https://istio.io/latest/docs/ops/common-problems/validation/).
"""

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import yaml

from conformance.errors import ConformanceError, NotConverged
from conformance.names import INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIO_VALIDATION_DENIED
from conformance.settings import Timeouts
from conformance.targets.tools import run_tool
from conformance.waiting import wait_for

# Helm charts base, istiod and gateway (istio.io "Install with Helm").
HELM_REPO = "https://istio-release.storage.googleapis.com/charts"

# What the refusal of an invalid object contains (istio/istio pkg/webhooks/validation/server/server.go).
# Our own known-invalid VirtualService (manifests/), applied by wait_validation_webhook's caller.
INVALID_VIRTUALSERVICE = "istio/readiness/invalid-virtualservice.yaml"
# A Gateway with a listener and no route, and its host: the gateway answers it with Envoy's 404.
READINESS_GATEWAY = "istio/readiness/gateway.yaml"
READINESS_HOST = "readiness.meshconf.test"

# Istio's integration tests lower the addon's 15s scrape interval to 5s for faster
# telemetry checks, and its 10s scrape timeout to 5s with it
# (istio/istio pkg/test/framework/components/prometheus/kube.go): Prometheus refuses a
# config whose global scrape_timeout exceeds scrape_interval.
SCRAPE_INTERVAL = "5s"


# --- running commands -------------------------------------------------------------------------


class Runner(Protocol):
    """Runs one command line; raises ConformanceError on timeout, TargetUnavailable if missing."""

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]: ...


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run argv with output captured; a timeout (tool and children killed) is an error."""
    result = run_tool(argv, timeout, _install_hint(argv[0]))
    if result.timed_out:
        raise ConformanceError(
            f"{_describe(argv)} did not finish within {timeout:g}s: check the cluster's pods and events, "
            "or raise the install timeout"
        )
    return subprocess.CompletedProcess(list(argv), result.returncode, result.stdout, result.stderr)


def _describe(argv: Sequence[str]) -> str:
    """'istioctl install', 'helm upgrade', ...: the tool and its subcommand."""
    words = [Path(argv[0]).name, *(a for a in argv[1:2] if not a.startswith("-"))]
    return " ".join(words)


def _install_hint(program: str) -> str:
    tool = Path(program).name
    if tool == "helm":
        return "install Helm 3 (https://helm.sh/docs/intro/install/) or install Istio with istioctl instead"
    if tool == "istioctl" and os.sep in program:
        return "the Istio release is incomplete: delete its folder from the cache and run again"
    if tool == "istioctl":
        return "let the harness download the Istio release, or put istioctl of that version on PATH"
    return f"install {tool}"


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode == 0:
        return
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    # Error lines name what failed; prefer the last one over trailing progress output.
    errors = [line for line in lines if "error" in line.lower()]
    reason = errors[-1] if errors else last
    raise ConformanceError(f"{_describe(result.args)} failed (exit {result.returncode}): {reason}")


def cluster_flags(kubeconfig: Path, context: str | None) -> list[str]:
    """istioctl's flags for the cluster: always explicit, never the user's default kubeconfig."""
    flags = ["--kubeconfig", str(kubeconfig)]
    return flags + ["--context", context] if context else flags


# --- debug --------------------------------------------------------------------------------------

# What a client proxy's config dump holds, minus `secret`: that one carries workload certificates.
PROXY_CONFIG_KINDS = ("cluster", "listener", "route", "endpoint")


def debug_commands(istioctl: str, kubeconfig: Path, context: str | None,
                   clients: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Debug-bundle file -> istioctl command: every proxy's sync state, and each client
    pod's (name, namespace) proxy configuration."""
    flags = cluster_flags(kubeconfig, context)
    commands = {"istioctl/proxy-status.txt": [istioctl, "proxy-status", *flags]}
    for name, namespace in clients:
        for kind in PROXY_CONFIG_KINDS:
            commands[f"istioctl/{namespace}/{name}/proxy-config-{kind}.json"] = [
                istioctl, "proxy-config", kind, f"{name}.{namespace}", "-o", "json", *flags]
    return commands


def output_of(argv: Sequence[str], timeout: float) -> str:
    """stdout of a command that must succeed; its failure is a ConformanceError naming why."""
    result = run_command(argv, timeout)
    _check(result)
    return result.stdout


# --- install / uninstall ----------------------------------------------------------------------


@dataclass
class IstioInstall:
    """One Istio installation on one cluster, by istioctl or Helm.

    The *_argv(s) methods are pure: they are what `--plan` prints. Every command
    names the kubeconfig (and context) explicitly so the user's default is never used.
    """

    version: str
    kubeconfig: Path
    method: Literal["istioctl", "helm"] = "istioctl"
    profile: str = "demo"
    revision: str | None = None
    # --set key=value: IstioOperator paths for istioctl; istiod chart values for Helm.
    values: dict[str, str] = field(default_factory=dict)
    context: str | None = None
    release_dir: Path | None = None
    timeout: float = Timeouts().install  # each command's budget, in seconds
    helm: str = "helm"
    # Helm only: the gateway chart's `service.type` (default LoadBalancer); kind needs NodePort,
    # the only way its host port reaches the gateway.
    gateway_service_type: str | None = None

    def __post_init__(self) -> None:
        if self.method not in ("istioctl", "helm"):
            raise ConformanceError(f"unknown Istio install method {self.method!r}: use istioctl or helm")

    @property
    def istioctl(self) -> str:
        return str(self.release_dir / "bin" / "istioctl") if self.release_dir else "istioctl"

    @property
    def readiness_timeout(self) -> int:
        # Shorter than our own budget, so istioctl/helm report which component was not
        # ready before we would kill them.
        return max(1, int(self.timeout * 0.8))

    def install_argvs(self) -> list[list[str]]:
        return [self.install_argv()] if self.method == "istioctl" else self.helm_argvs()

    def uninstall_argvs(self) -> list[list[str]]:
        return [self.uninstall_argv()] if self.method == "istioctl" else self.helm_uninstall_argvs()

    def plan(self) -> list[str]:
        """The install commands as shell lines, for `--plan`."""
        return [shlex.join(argv) for argv in self.install_argvs()]

    # istioctl

    def install_argv(self) -> list[str]:
        """`istioctl install --set profile=demo ... -y` (istio.io docs/setup/install/istioctl)."""
        argv = [self.istioctl, "install", *self._istioctl_cluster(), "--set", f"profile={self.profile}"]
        if self.revision:
            argv += ["--revision", self.revision]
        for key, value in self.values.items():
            argv += ["--set", f"{key}={value}"]
        return [*argv, "--readiness-timeout", f"{self.readiness_timeout}s", "-y"]

    def uninstall_argv(self) -> list[str]:
        # --purge would also remove other revisions: with a revision, remove only ours.
        scope = ["--revision", self.revision] if self.revision else ["--purge"]
        return [self.istioctl, "uninstall", *self._istioctl_cluster(), *scope, "-y"]

    def _istioctl_cluster(self) -> list[str]:
        return cluster_flags(self.kubeconfig, self.context)

    # helm

    def helm_argvs(self) -> list[list[str]]:
        """base, istiod, gateway, in that order (CRDs first, the gateway needs istiod's injector).

        The gateway chart is installed without --wait: Helm counts a LoadBalancer Service ready only
        once it has an address (helm/helm pkg/kube/ready.go serviceReady), which no cluster without
        a load-balancer controller (kind, minikube, bare metal) ever gives it. Its Deployment's
        rollout is waited for by the caller instead, as every Deployment in istio-system is."""
        rev = self.revision
        base = ["--set", f"defaultRevision={rev}"] if rev else []  # the default validator -> our istiod
        istiod = ["--set", f"profile={self.profile}"] + (["--set", f"revision={rev}"] if rev else [])
        for key, value in self.values.items():
            istiod += ["--set", f"{key}={value}"]
        gateway = ["--set", f"revision={rev}"] if rev else []
        if self.gateway_service_type:
            gateway += ["--set", f"service.type={self.gateway_service_type}"]
        return [
            self.helm_upgrade("istio-base", "base", base),
            self.helm_upgrade(self._istiod_release, "istiod", istiod),
            # The gateway chart labels its pods `istio: <release name without "istio-">`
            # (manifests/charts/gateway/templates/_helpers.tpl), so releasing it as INGRESS_GATEWAY
            # gives the same `istio: ingressgateway` label and Service name as the istioctl demo
            # profile: one Gateway manifest and one ingress lookup serve both methods.
            self.helm_upgrade(INGRESS_GATEWAY, "gateway", gateway, wait=False),
        ]

    def helm_uninstall_argvs(self) -> list[list[str]]:
        """The releases in reverse order. Namespaces stay: kube code deletes what the run created."""
        releases = [INGRESS_GATEWAY, self._istiod_release, "istio-base"]
        return [
            [self.helm, "uninstall", name, "--namespace", ISTIO_NAMESPACE, *self.helm_cluster()]
            for name in releases
        ]

    @property
    def _istiod_release(self) -> str:
        return f"istiod-{self.revision}" if self.revision else "istiod"

    def helm_upgrade(self, release: str, chart: str, sets: list[str], wait: bool = True) -> list[str]:
        # --repo instead of `helm repo add`: no state in the user's Helm config changes.
        # Without --wait, --timeout still bounds each Kubernetes operation, hooks included
        # (helm/helm cmd/helm/upgrade.go).
        return [
            self.helm, "upgrade", "--install", release, chart,
            "--repo", HELM_REPO, "--version", self.version,
            "--namespace", ISTIO_NAMESPACE, "--create-namespace",
            *self.helm_cluster(), *sets,
            *(["--wait"] if wait else []), "--timeout", f"{self.readiness_timeout}s",
        ]

    def helm_cluster(self) -> list[str]:
        flags = ["--kubeconfig", str(self.kubeconfig)]
        return flags + ["--kube-context", self.context] if self.context else flags

    # running

    def install(self, runner: Runner = run_command) -> list[subprocess.CompletedProcess[str]]:
        """Run the install commands in order; the first failure or timeout raises.

        The caller owns cleanup: call uninstall() in a finally, whatever happened here.
        """
        return self.run_in_order(self.install_argvs(), runner)

    def uninstall(self, runner: Runner = run_command) -> list[subprocess.CompletedProcess[str]]:
        """Run every uninstall command even if one fails (a half install is the usual case)."""
        return self.run_every(self.uninstall_argvs(), runner)

    def run_in_order(self, argvs: list[list[str]], runner: Runner) -> list[subprocess.CompletedProcess[str]]:
        """Run argvs in order, each within this installation's timeout; the first failure raises."""
        results = []
        for argv in argvs:
            result = runner(argv, self.timeout)
            _check(result)
            results.append(result)
        return results

    def run_every(self, argvs: list[list[str]], runner: Runner) -> list[subprocess.CompletedProcess[str]]:
        """Run all argvs, then raise the first failure (a Helm release already gone is none)."""
        results, first_error = [], None
        for argv in argvs:
            try:
                result = runner(argv, self.timeout)
                if not _helm_release_missing(result):
                    _check(result)
                results.append(result)
            except ConformanceError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results


def _helm_release_missing(result: subprocess.CompletedProcess[str]) -> bool:
    # Uninstalling after a failed install: a release that never got created is not an error.
    return Path(result.args[0]).name == "helm" and result.returncode != 0 and "not found" in result.stderr


# --- addons ---------------------------------------------------------------------------------


def addons(release_dir: Path) -> list[dict[str, Any]]:
    """The telemetry addons to apply (istio/istio samples/addons): the release's
    samples/addons/prometheus.yaml with a 5s global scrape interval, then kiali.yaml.

    Only Prometheus's `global` section changes: per-job intervals (the addon's "slow"
    jobs use 5m) stay as upstream wrote them.
    """
    folder = Path(release_dir) / "samples" / "addons"
    prometheus = _addon_docs(folder / "prometheus.yaml", release_dir)
    config_map = next(
        (d for d in prometheus if d.get("kind") == "ConfigMap" and d.get("metadata", {}).get("name") == "prometheus"),
        None,
    )
    text = (config_map or {}).get("data", {}).get("prometheus.yml")
    if not isinstance(text, str):
        raise ConformanceError(
            f"{folder / 'prometheus.yaml'}: no ConfigMap 'prometheus' with data 'prometheus.yml'; has the addon changed?"
        )
    config = yaml.safe_load(text) or {}
    scrape_global = config.setdefault("global", {})
    scrape_global["scrape_interval"] = SCRAPE_INTERVAL
    scrape_global["scrape_timeout"] = SCRAPE_INTERVAL
    config_map["data"]["prometheus.yml"] = yaml.safe_dump(config, sort_keys=False)  # type: ignore[index]
    return prometheus + _addon_docs(folder / "kiali.yaml", release_dir)


def _addon_docs(path: Path, release_dir: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConformanceError(f"addon manifest missing: {path} (is {release_dir} a complete Istio release?)")
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    except OSError as exc:
        raise ConformanceError(f"cannot read the addon {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConformanceError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None


# --- readiness ------------------------------------------------------------------------------


def wait_validation_webhook(
    apply_invalid: Callable[[], None],
    delete_invalid: Callable[[], None],
    timeout: float,
    interval: float = 2.0,
) -> None:
    """Return once Istio's validating webhook refuses a known-invalid VirtualService.

    apply_invalid applies manifests/istio/readiness/invalid-virtualservice.yaml (one
    HTTP route with both route and redirect). On a fresh install the webhook may
    accept everything (failurePolicy Ignore) until istiod patches it, up to about a
    minute (istio/istio pkg/webhooks/validation/controller/controller.go): while it is accepted we delete it again and retry; errors
    other than the webhook's refusal (e.g. the webhook not reachable yet) also retry.
    """

    def pending() -> str | None:
        try:
            apply_invalid()
        except Exception as exc:  # the kube layer's error type is not ours to know
            text = " ".join(str(exc).split())
            return None if ISTIO_VALIDATION_DENIED in text else f"apply failed without the webhook's refusal: {text}"
        delete_invalid()  # it must not stay in the mesh
        return "the invalid VirtualService was accepted (validation not active yet)"

    try:
        wait_for(pending, timeout, interval, "Istio validation webhook")
    except NotConverged as exc:
        hint = f"is istiod running? check `kubectl -n {ISTIO_NAMESPACE} logs deploy/istiod`"
        raise NotConverged(f"{exc}; {hint}") from None


def wait_ingress_answering(url: str, timeout: float, interval: float = 2.0) -> None:
    """Return once the ingress gateway at `url` answers READINESS_HOST with its own 404.

    The caller has applied READINESS_GATEWAY: a listener without a route. A 404 with
    `server: istio-envoy` (Envoy: no route for the host) shows the whole path works, host port
    to gateway pod; anything else (refused, reset, another server) is still waited for.
    """

    def pending() -> str | None:
        try:
            reply = httpx.get(url, headers={"host": READINESS_HOST}, timeout=min(interval * 2, 10.0))
        except httpx.HTTPError as exc:
            return f"no answer from {url}: {type(exc).__name__}: {exc}"
        server = reply.headers.get("server", "")
        if reply.status_code == 404 and server == "istio-envoy":
            return None
        return f"{url} answered {reply.status_code} from server {server!r}, not the gateway's 404 (istio-envoy)"

    try:
        wait_for(pending, timeout, interval, f"ingress gateway answering at {url}")
    except NotConverged as exc:
        hint = (f"check `kubectl -n {ISTIO_NAMESPACE} get svc,pods -l istio=ingressgateway` "
                "and that nothing else holds the host port")
        raise NotConverged(f"{exc}; {hint}") from None
