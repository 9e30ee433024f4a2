"""MeshUpgrade's versions: which Istio a run upgrades from, and the revision that version runs as.

A canary upgrade (istio.io docs/setup/upgrade/canary) runs the old and the new control plane side by
side as revisions, moves a namespace from one to the other by its istio.io/rev label, restarts its
workloads, and removes the old revision. meshconf's mesh is the version under test; the version it
upgrades from is installed beside it as a revision named after that version, as Istio's docs name
revisions (1-27-9 for 1.27.9).
"""

from conformance.errors import ConformanceError
from conformance.targets import data_files, istio_support, versions

UPGRADE_FEATURE = "MeshUpgrade"
# The workloads moved from the old revision to the new one (a Deployment and its Service).
UPGRADE_MANIFEST = "upgrade/httpbin.yaml"
PATCHES_FILE = data_files.DATA_DIR / "istio_patches.yaml"


def _is_patches(rows: object) -> bool:
    return isinstance(rows, dict) and bool(rows) and all(isinstance(v, str) for v in rows.values())


LATEST_PATCHES: dict[str, str] = {
    str(minor): patch for minor, patch in
    data_files.load(PATCHES_FILE, "patches", "Istio's patch releases", "a mapping of Istio minors to versions",
                    _is_patches).items()}


def revision_name(version: str) -> str:
    """The revision an Istio version runs as: its version with dashes (a revision is a DNS label)."""
    return version.replace(".", "-")


def default_upgrade_from(istio_version: str) -> str | None:
    """The newest patch of the minor before `istio_version`'s, or None when meshconf knows none."""
    parsed = versions.parse(istio_version)
    if parsed is None:
        return None
    return LATEST_PATCHES.get(f"{parsed.major}.{parsed.minor - 1}")


def upgrade_from(chosen: str | None, istio_version: str) -> str:
    """The version to upgrade from: `chosen` (--upgrade-from) or the default, checked against the
    version under test; ConformanceError naming the problem otherwise."""
    old = chosen or default_upgrade_from(istio_version)
    if old is None:
        raise ConformanceError(f"meshconf knows no Istio release before {istio_version} to upgrade from: "
                               "name one with --upgrade-from VERSION")
    problem = upgrade_problem(old, istio_version)
    if problem:
        raise ConformanceError(problem)
    return old


def upgrade_problem(old: str, new: str) -> str | None:
    """Why `old` cannot be upgraded to `new` here, or None: it must be a release (MAJOR.MINOR.PATCH)
    older than `new`, of a minor meshconf supports (istio_patches.yaml)."""
    parsed, target = versions.parse(old), versions.parse(new)
    if parsed is None or parsed.patch is None:
        return f"--upgrade-from {old!r} is not an Istio release like 1.27.9"
    if target is not None and parsed.core >= target.core:
        return f"--upgrade-from {old} is not older than the Istio under test, {new}"
    if parsed.minor_line not in LATEST_PATCHES:
        return (f"--upgrade-from {old}: Istio {parsed.minor_line} is not a minor meshconf supports "
                f"({', '.join(LATEST_PATCHES)})")
    return None


def upgrade_gap(chosen: str | None, istio_version: str, kubernetes_version: str | None, force: bool) -> str | None:
    """Why MeshUpgrade cannot run on a cluster of `kubernetes_version` with Istio `istio_version`, or
    None: no version to upgrade from, or one Istio does not support on that Kubernetes (allowed with
    --force, as the mesh's own version is)."""
    try:
        old = upgrade_from(chosen, istio_version)
        if kubernetes_version:
            istio_support.check_support(old, kubernetes_version, force)
    except ConformanceError as exc:
        return f"Istio to upgrade from: {exc}"
    return None
