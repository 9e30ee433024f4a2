"""Gateway API CRDs on a cluster: Istio does not ship them, so meshconf installs them where it may.

The standard channel of the Gateway API release the chosen Istio builds against
(targets/data/gateway_api.yaml names each one and its source) is installed when the cluster
lacks the HTTPRoute CRD: always on a kind cluster (meshconf owns it), on an existing context only
with --yes. Without them the features that need them are NOT_SUPPORTED, with the reason. Only CRDs
meshconf installed are removed at teardown.

The release asset is downloaded once into the cache (like the Istio release) and checked: every
CRD in it must be a Gateway API standard-channel CRD of the release asked for.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from conformance.errors import ConformanceError
from conformance.settings import GATEWAY_API_RELEASES_ENV, OFFICIAL_GATEWAY_API_RELEASES
from conformance.targets import downloads
from conformance.targets.base import Doc
from conformance.targets.kube import CRD_API_VERSION, CRD_KIND, Kube

TABLE_FILE = Path(__file__).resolve().parent / "data" / "gateway_api.yaml"
GROUP = "gateway.networking.k8s.io"
HTTPROUTE_CRD = f"httproutes.{GROUP}"
ASSET = "standard-install.yaml"
# The catalogue features whose manifests hold Gateway API objects.
FEATURES = ("MeshHTTPRouteWeights",)
# Annotations every CRD of a Gateway API release carries (config/crd/standard/*.yaml).
BUNDLE_VERSION = f"{GROUP}/bundle-version"
CHANNEL = f"{GROUP}/channel"
# Besides the CRDs, v1.5's standard install holds a ValidatingAdmissionPolicy and its binding
# (config/crd/standard/gateway.networking.k8s.io_vap_safeupgrades.yaml).
ALSO_SHIPPED = {("ValidatingAdmissionPolicy", f"safe-upgrades.{GROUP}"),
                ("ValidatingAdmissionPolicyBinding", f"safe-upgrades.{GROUP}")}
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class Release:
    """Which Gateway API release an Istio version builds against, and where its CRDs are."""

    version: str  # e.g. v1.4.0
    base_url: str = OFFICIAL_GATEWAY_API_RELEASES

    @property
    def url(self) -> str:
        return install_url(self.version, self.base_url)

    def describe(self) -> str:
        return f"Gateway API {self.version} (standard channel, {self.url})"


@dataclass
class Outcome:
    """What bring-up did about the CRDs: those it installed (to remove), or why features lack them."""

    installed: list[Doc] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)  # feature -> reason


def install_url(version: str, base_url: str = OFFICIAL_GATEWAY_API_RELEASES) -> str:
    return f"{base_url.rstrip('/')}/{version}/{ASSET}"


def release_for(istio_version: str, base_url: str = OFFICIAL_GATEWAY_API_RELEASES,
                table: Path = TABLE_FILE) -> Release | None:
    """The Gateway API release of this Istio version, or None when the table has no row for its minor."""
    wanted = _triple(istio_version)
    if wanted is None:
        return None
    rows = [(_triple(str(row["istio"])), str(row["gateway_api"])) for row in _rows(table)]
    below = [(istio, gateway) for istio, gateway in rows
             if istio is not None and istio[:2] == wanted[:2] and istio <= wanted]
    return Release(max(below)[1], base_url) if below else None


def _rows(table: Path) -> list[Mapping[str, object]]:
    try:
        rows = (yaml.safe_load(table.read_text(encoding="utf-8")) or {}).get("istio")
    except (OSError, yaml.YAMLError) as exc:
        raise ConformanceError(f"cannot read the Gateway API table {table}: {' '.join(str(exc).split())}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"istio", "gateway_api"} <= set(r)
                                             for r in rows):
        raise ConformanceError(f"{table}: `istio` must list {{istio, gateway_api}} rows")
    return rows


def _triple(version: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(version.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


# --- download -------------------------------------------------------------------------------------


def fetch(release: Release, cache_dir: Path, timeout: float) -> list[Doc]:
    """The release's standard-channel documents, from the cache or downloaded (and checked) once."""
    folder = Path(cache_dir) / f"gateway-api-{release.version}"
    cached = folder / ASSET
    folder.mkdir(parents=True, exist_ok=True)
    # Parallel runs share the cache: one downloads, the others wait and reuse.
    with downloads.locked(folder / ".lock"):
        if cached.is_file():
            return checked(cached.read_text(encoding="utf-8"), release)
        text = _download(release.url, timeout)
        docs = checked(text, release)
        partial = cached.with_name(f".{ASSET}.part")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, cached)
    return docs


def checked(text: str, release: Release) -> list[Doc]:
    """The documents of a standard-install.yaml, refused unless it is that release's standard channel."""
    where = f"{release.url} (or the cached copy)"
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise ConformanceError(f"{where} is not YAML: {' '.join(str(exc).split())}") from None
    crds = [d for d in docs if isinstance(d, dict) and d.get("kind") == CRD_KIND]
    for doc in docs:
        meta = (doc.get("metadata") or {}) if isinstance(doc, dict) else {}
        if isinstance(doc, dict) and (doc.get("kind"), meta.get("name")) in ALSO_SHIPPED:
            continue
        annotations = meta.get("annotations") or {}
        if doc not in crds or (doc.get("spec") or {}).get("group") != GROUP:
            raise ConformanceError(f"{where} holds {meta.get('name') or 'a document'} that is not a Gateway API CRD")
        if annotations.get(BUNDLE_VERSION) != release.version or annotations.get(CHANNEL) != "standard":
            raise ConformanceError(
                f"{where} holds CRD {meta.get('name')} of bundle {annotations.get(BUNDLE_VERSION)} "
                f"channel {annotations.get(CHANNEL)}, not {release.version} standard"
            )
    if not any((d.get("metadata") or {}).get("name") == HTTPROUTE_CRD for d in crds):
        raise ConformanceError(f"{where} has no {HTTPROUTE_CRD}")
    return docs


def _download(url: str, timeout: float) -> str:
    # GitHub answers release downloads with a redirect to its object store.
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        return downloads.get_text(client, url, "Gateway API version",
                                  f"set ${GATEWAY_API_RELEASES_ENV} to a mirror")


# --- on a cluster -------------------------------------------------------------------------------


def ensure(kube: Kube, release: Release | None, istio_version: str, cache_dir: Path, timeout: float,
           may_install: bool, how_to_allow: str) -> Outcome:
    """Install the release's CRDs when the cluster lacks them and meshconf may change it.

    `how_to_allow` completes the reason given when it may not (e.g. "pass --yes to ...")."""
    present = kube.get(CRD_API_VERSION, CRD_KIND, HTTPROUTE_CRD)
    if present is not None:
        served = [v.get("name") for v in (present.get("spec") or {}).get("versions") or [] if v.get("served")]
        if "v1" in served:
            return Outcome()
        bundle = ((present.get("metadata") or {}).get("annotations") or {}).get(BUNDLE_VERSION, "unknown")
        return _without(f"the cluster's Gateway API CRDs (bundle {bundle}) do not serve {GROUP}/v1 HTTPRoute")
    if release is None:
        return _without(f"the Gateway API CRDs are not installed, and meshconf does not know which Gateway API "
                        f"release Istio {istio_version} builds against (targets/data/gateway_api.yaml)")
    if not may_install:
        return _without(f"the Gateway API CRDs are not installed (Istio does not install them); {how_to_allow} "
                        f"{release.describe()}, or install them yourself: "
                        f"kubectl apply --server-side -f {release.url}")
    docs = fetch(release, cache_dir, timeout)
    kube.apply(docs, "default")
    return Outcome(installed=docs)


def remove(kube: Kube, outcome: Outcome) -> None:
    """Delete the CRDs this run installed (their objects go with them); nothing else."""
    if outcome.installed:
        kube.delete(outcome.installed, "default")


def _without(reason: str) -> Outcome:
    return Outcome(unsupported={feature: reason for feature in FEATURES})
