"""Gateway API CRDs on a cluster: Istio does not ship them, so meshconf installs them where it may.

The standard channel of the Gateway API release the chosen Istio builds against
(targets/data/gateway_api.yaml names each one and its source) is installed when the cluster
lacks the HTTPRoute CRD: always on a kind cluster (meshconf owns it), on an existing context only
with --yes. Without them the features that need them are NOT_SUPPORTED, with the reason.
Of the release's objects only those the cluster lacks are applied, and only those are removed at
teardown: a CRD that is there already (of any version) is the cluster's own, and with it every
object of its kind; applying the release over it could downgrade it, and removing it would delete
those objects cluster-wide.

The release asset is downloaded once into the cache (like the Istio release) and checked: every
CRD in it must be a Gateway API standard-channel CRD of the release asked for, and anything else
the admission policy that release ships.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from conformance.errors import ConformanceError
from conformance.names import GATEWAY_API_GROUP
from conformance.settings import GATEWAY_API_RELEASES_ENV, OFFICIAL_GATEWAY_API_RELEASES
from conformance.targets import data_files, downloads, versions
from conformance.targets.base import Doc
from conformance.targets.kube import CRD_API_VERSION, CRD_KIND, Kube

log = logging.getLogger(__name__)

TABLE_FILE = data_files.DATA_DIR / "gateway_api.yaml"
HTTPROUTE_CRD = f"httproutes.{GATEWAY_API_GROUP}"
ASSET = "standard-install.yaml"
# The catalogue features whose manifests hold Gateway API objects.
FEATURES = ("MeshHTTPRouteWeights", "GatewayAPIIngress")
# Annotations every object of a Gateway API release carries (config/crd/standard/*.yaml).
BUNDLE_VERSION = f"{GATEWAY_API_GROUP}/bundle-version"
CHANNEL = f"{GATEWAY_API_GROUP}/channel"
# Besides the CRDs, v1.5's standard install holds a ValidatingAdmissionPolicy and its binding
# (kubernetes-sigs/gateway-api config/crd/standard/gateway.networking.k8s.io_vap_safeupgrades.yaml).
# At tags v1.5.0 and v1.5.1 that file still says bundle-version v1.5.0-dev: the release's
# version bump stamps the CRDs only. So these two may carry the release's minor's dev version.
ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
SAFE_UPGRADES = f"safe-upgrades.{GATEWAY_API_GROUP}"
ALSO_SHIPPED = {("ValidatingAdmissionPolicy", SAFE_UPGRADES), ("ValidatingAdmissionPolicyBinding", SAFE_UPGRADES)}


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
    """What bring-up did about the CRDs: the release's objects it installed (to remove), those the
    cluster had already (its own: used, never changed or removed), or why features lack them."""

    installed: list[Doc] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)  # "<Kind> <name>" of each
    unsupported: dict[str, str] = field(default_factory=dict)  # feature -> reason


def install_url(version: str, base_url: str = OFFICIAL_GATEWAY_API_RELEASES) -> str:
    return f"{base_url.rstrip('/')}/{version}/{ASSET}"


def release_for(istio_version: str, base_url: str = OFFICIAL_GATEWAY_API_RELEASES,
                table: Path = TABLE_FILE) -> Release | None:
    """The Gateway API release of this Istio version, or None when the table has no row for its minor."""
    wanted = _release_core(istio_version)
    if wanted is None:
        return None
    rows = [(_release_core(str(row["istio"])), str(row["gateway_api"])) for row in _rows(table)]
    below = [(istio, gateway) for istio, gateway in rows
             if istio is not None and istio[:2] == wanted[:2] and istio <= wanted]
    return Release(max(below)[1], base_url) if below else None


def _rows(table: Path) -> list[Mapping[str, object]]:
    return data_files.load(table, "istio", "the Gateway API table", "a list of {istio, gateway_api} rows",
                           _is_table)


def _is_table(rows: object) -> bool:
    return isinstance(rows, list) and all(isinstance(r, dict) and {"istio", "gateway_api"} <= set(r) for r in rows)


def _release_core(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a release's version; None for anything else (a minor alone included)."""
    parsed = versions.parse(version)
    return parsed.core if parsed is not None and parsed.patch is not None else None


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
    """The documents of a standard-install.yaml, refused unless it is that release's standard channel:
    Gateway API CRDs stamped with the release's version, and the admission policy the release ships."""
    where = f"{release.url} (or the cached copy)"
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise ConformanceError(f"{where} is not YAML: {' '.join(str(exc).split())}") from None
    for doc in docs:
        _check_document(doc, release, where)
    if not any(doc["kind"] == CRD_KIND and _name(doc) == HTTPROUTE_CRD for doc in docs):
        raise ConformanceError(f"{where} has no {HTTPROUTE_CRD}")
    return docs


def _check_document(doc: object, release: Release, where: str) -> None:
    if not isinstance(doc, dict):
        raise ConformanceError(f"{where} holds a document that is not a Kubernetes object")
    meta = doc.get("metadata") or {}
    kind, name = doc.get("kind"), meta.get("name")
    if (kind, name) in ALSO_SHIPPED and doc.get("apiVersion") == ADMISSION_API_VERSION:
        what, bundles = f"{kind} {name}", _policy_bundles(release)
    elif (kind, doc.get("apiVersion")) == (CRD_KIND, CRD_API_VERSION) and name \
            and (doc.get("spec") or {}).get("group") == GATEWAY_API_GROUP:
        what, bundles = f"CRD {name}", {release.version}
    else:
        raise ConformanceError(f"{where} holds {name or 'a document'} that is not a Gateway API CRD")
    annotations = meta.get("annotations") or {}
    bundle, channel = annotations.get(BUNDLE_VERSION), annotations.get(CHANNEL)
    if bundle not in bundles or channel != "standard":
        raise ConformanceError(
            f"{where} holds {what} of bundle {bundle} channel {channel}, not {release.version} standard")


def _policy_bundles(release: Release) -> set[str]:
    """The bundle versions the release's admission policy may say: the release's, or its minor's dev one."""
    parsed = versions.parse(release.version)
    return {release.version, *([f"v{parsed.minor_line}.0-dev"] if parsed is not None else [])}


def _download(url: str, timeout: float) -> str:
    # GitHub answers release downloads with a redirect to its object store.
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        return downloads.get_text(client, url, "Gateway API version",
                                  f"set ${GATEWAY_API_RELEASES_ENV} to a mirror")


# --- on a cluster -------------------------------------------------------------------------------


def ensure(kube: Kube, release: Release | None, istio_version: str, cache_dir: Path, timeout: float,
           may_install: bool, how_to_allow: str) -> Outcome:
    """Install the release's objects the cluster lacks, when it lacks the HTTPRoute CRD and meshconf
    may change it.

    `how_to_allow` completes the reason given when it may not (e.g. "pass --yes to ...")."""
    present = kube.get(CRD_API_VERSION, CRD_KIND, HTTPROUTE_CRD)
    if present is not None:
        served = [v.get("name") for v in (present.get("spec") or {}).get("versions") or [] if v.get("served")]
        if "v1" in served:
            return Outcome()
        bundle = ((present.get("metadata") or {}).get("annotations") or {}).get(BUNDLE_VERSION, "unknown")
        return _without(f"the cluster's Gateway API CRDs (bundle {bundle}) do not serve "
                        f"{GATEWAY_API_GROUP}/v1 HTTPRoute")
    if release is None:
        return _without(f"the Gateway API CRDs are not installed, and meshconf does not know which Gateway API "
                        f"release Istio {istio_version} builds against (targets/data/gateway_api.yaml)")
    if not may_install:
        return _without(f"the Gateway API CRDs are not installed (Istio does not install them); {how_to_allow} "
                        f"{release.describe()}, or install them yourself: "
                        f"kubectl apply --server-side -f {release.url}")
    docs = fetch(release, cache_dir, timeout)
    there = [doc for doc in docs if kube.get(doc["apiVersion"], doc["kind"], _name(doc)) is not None]
    missing = [doc for doc in docs if doc not in there]
    outcome = Outcome(installed=missing, already_there=[f"{doc['kind']} {_name(doc)}" for doc in there])
    if there:
        log.info("%s: the cluster has %s already; meshconf leaves them as they are",
                 release.describe(), ", ".join(outcome.already_there))
    kube.apply(missing, "default")
    return outcome


def remove(kube: Kube, outcome: Outcome) -> None:
    """Delete what this run installed (objects of its CRDs go with them); nothing else."""
    if outcome.installed:
        kube.delete(outcome.installed, "default")


def _without(reason: str) -> Outcome:
    return Outcome(unsupported={feature: reason for feature in FEATURES})


def _name(doc: Doc) -> str:
    return str((doc.get("metadata") or {}).get("name") or "")
