"""Istio's support matrix: which Kubernetes minors each Istio minor supports, and the check of a pair.

The matrix is data (targets/data/istio_support.yaml), taken from istio/istio.io
data/compatibility/supportStatus.yml; that file names its source.
"""

from pathlib import Path

from conformance.errors import ConformanceError
from conformance.targets import data_files, versions

MATRIX_FILE = data_files.DATA_DIR / "istio_support.yaml"


def minor(version: str) -> str:
    """'1.28.2' -> '1.28'; 'v1.33.1' and '1.33' -> '1.33'."""
    parsed = versions.parse(version)
    if parsed is None:
        raise ConformanceError(f"{version!r} is not a version like 1.28.2")
    return parsed.minor_line


def load_matrix(path: Path = MATRIX_FILE) -> dict[str, tuple[str, ...]]:
    """Istio minor -> the Kubernetes minors it supports, oldest first, as the data file holds them."""
    rows = data_files.load(path, "istio", "Istio's support matrix",
                           "a mapping of Istio minors to lists of Kubernetes minors", _is_matrix)
    return {str(istio): tuple(str(kube) for kube in kubes) for istio, kubes in rows.items()}


def _is_matrix(rows: object) -> bool:
    return isinstance(rows, dict) and bool(rows) and all(isinstance(kubes, list) for kubes in rows.values())


SUPPORT_MATRIX: dict[str, tuple[str, ...]] = load_matrix()


def check_support(istio_version: str, kubernetes_version: str, force: bool = False) -> str | None:
    """None when Istio supports this Kubernetes; otherwise an error, or with force a warning."""
    istio, kube = minor(istio_version), minor(kubernetes_version)
    supported = SUPPORT_MATRIX.get(istio)
    if supported is None:
        known = ", ".join(SUPPORT_MATRIX)
        problem = f"Istio {istio_version} is not in the support matrix (known minors: {known})"
        advice = "pick one of those Istio versions, or force it to run anyway"
    elif kube not in supported:
        problem = (
            f"Istio {istio_version} supports Kubernetes {supported[0]}-{supported[-1]}, "
            f"not {kubernetes_version}"
        )
        advice = f"use a Kubernetes version in {supported[0]}-{supported[-1]}, or force it to run anyway"
    else:
        return None
    if not force:
        raise ConformanceError(f"{problem}: {advice}")
    return f"{problem}; running anyway because it was forced: results may reflect the mismatch"
