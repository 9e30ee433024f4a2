"""RunSettings and Timeouts: one object each, resolved from defaults, env and CLI flags."""

import os
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError

TARGETS = ("auto", "kind", "kubeconfig", "local")

# The Istio a cluster run installs unless told: the newest patch of 1.28 (istio/istio tags), the
# release the CI template (ci/github/meshconf.yml) runs for that minor. A minor's .0 is its least
# fixed release, and the first to reach its end of life.
DEFAULT_ISTIO_VERSION = "1.28.10"

# Where Istio release archives are downloaded from: <base>/<version>/istio-<version>-<os>-<arch>.tar.gz
# (conformance.targets.istio_release.release_url). Env MESHCONF_ISTIO_RELEASES points it at a mirror
# that keeps the same layout, with the .sha256 files beside the archives (air-gapped machines).
OFFICIAL_ISTIO_RELEASES = "https://github.com/istio/istio/releases/download"
ISTIO_RELEASES_ENV = "MESHCONF_ISTIO_RELEASES"


def istio_releases_from_env() -> str:
    return os.environ.get(ISTIO_RELEASES_ENV, "").strip() or OFFICIAL_ISTIO_RELEASES


# Where Gateway API's standard-channel CRDs are downloaded from: <base>/<version>/standard-install.yaml
# (conformance.targets.gateway_api_crds.install_url); env MESHCONF_GATEWAY_API_RELEASES points it at
# a mirror with the same layout.
OFFICIAL_GATEWAY_API_RELEASES = "https://github.com/kubernetes-sigs/gateway-api/releases/download"
GATEWAY_API_RELEASES_ENV = "MESHCONF_GATEWAY_API_RELEASES"


def gateway_api_releases_from_env() -> str:
    return os.environ.get(GATEWAY_API_RELEASES_ENV, "").strip() or OFFICIAL_GATEWAY_API_RELEASES


@dataclass(frozen=True)
class Timeouts:
    """Named waits, in seconds. Env MESHCONF_TIMEOUT_<NAME> overrides each default."""

    consistency: float = 30.0  # config applied -> every probe sees it
    required_successes: int = 3  # consecutive probe successes that count as converged
    poll: float = 0.1
    request: float = 10.0
    rollout: float = 60.0  # workloads ready after a change
    # Requests counted in Prometheus: Envoy's flush, the scrape interval (5 s on kind), the query;
    # Istio's telemetry tests wait up to 80 s (pkg/test/framework/telemetry.go TelemetryRetryTimeout).
    metrics: float = 90.0
    metrics_poll: float = 1.0
    install: float = 300.0  # mesh installed
    # A freshly installed mesh ready: its rollouts (a new node pulls istiod's, the gateway's and
    # the addons' images first), the validation webhook, and the ingress answering.
    mesh_ready: float = 600.0
    # The run's first workloads ready (Bookinfo: six images, one of them a JVM, pulled onto fresh
    # nodes): what later rollouts find cached takes this long only once.
    first_deploy: float = 600.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Timeouts":
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            raw = env.get(f"MESHCONF_TIMEOUT_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
            except ValueError:
                raise ConformanceError(
                    f"MESHCONF_TIMEOUT_{f.name.upper()}={raw!r} is not a number"
                ) from None
            if not values[f.name] > 0:
                raise ConformanceError(f"MESHCONF_TIMEOUT_{f.name.upper()}={raw!r} must be greater than 0")
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **values: float | None) -> "Timeouts":
        return replace(self, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class RunSettings:
    target: str = "local"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    worker: str = ""  # the pytest-xdist worker's id (gw0, ...); "" in a serial run and on the controller
    target_reason: str = ""
    profiles: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    mutants: tuple[str, ...] = ()
    context: str | None = None
    report: Path | None = None
    work_dir: Path = field(default_factory=lambda: Path(".meshconf"))
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Cluster targets (kind, kubeconfig)
    istio_version: str = DEFAULT_ISTIO_VERSION
    upgrade_from: str | None = None  # MeshUpgrade's old Istio (None: the previous minor's newest patch)
    istio_releases: str = field(default_factory=istio_releases_from_env)  # release download base URL
    gateway_api_releases: str = field(default_factory=gateway_api_releases_from_env)  # the same for Gateway API
    kubernetes_version: str = "1.34"  # kind node image; supported by the Istio above
    install_method: str = "istioctl"  # or helm
    cluster_name: str = "meshconf"
    ingress_port: int = 8080  # kind: host port on 127.0.0.1 for the ingress gateway's HTTP
    ingress_https_port: int = 8443  # kind: the same for HTTPS
    reuse: bool = False  # kind: run on an existing cluster of that name
    keep: bool = False  # leave what the run created in place
    force: bool = False  # run an Istio/Kubernetes pair outside the support matrix
    install_mesh: bool | None = None  # kubeconfig: install Istio (None: assume it is there)
    yes: bool = False  # kubeconfig: consent to install/remove a mesh on a context we did not create
    ingress_selector: str | None = None  # kubeconfig: the ingress gateway's pod label (None: look for it)
    ingress_namespace: str | None = None  # kubeconfig: the ingress gateway's namespace (None: look for it)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "meshconf")

    @property
    def debug_dir(self) -> Path:
        """Debug bundles go next to the report (CI uploads that folder), else under the work dir."""
        return (self.report.parent if self.report else self.work_dir).resolve() / "debug"

    def to_json(self) -> dict[str, Any]:
        """Plain values (what xdist can send to a worker); from_json() reads them back."""
        values = asdict(self)
        for f in fields(self):
            value = values[f.name]
            if isinstance(value, Path):
                values[f.name] = str(value)
            elif isinstance(value, tuple):
                values[f.name] = list(value)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "RunSettings":
        paths = {"report", "work_dir", "cache_dir"}
        read = {k: (Path(v) if k in paths and v is not None else v) for k, v in values.items()}
        read["timeouts"] = Timeouts(**values["timeouts"])
        for f in fields(cls):
            if isinstance(read.get(f.name), list):
                read[f.name] = tuple(read[f.name])
        return cls(**read)
