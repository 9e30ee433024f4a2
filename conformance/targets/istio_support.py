"""Istio's support matrix: which Kubernetes minors each Istio minor supports, and the check of a pair.

The matrix is data (targets/data/istio_support.yaml), taken from istio/istio.io
data/compatibility/supportStatus.yml; that file names its source.
"""

import re
from pathlib import Path

import yaml

from conformance.errors import ConformanceError

MATRIX_FILE = Path(__file__).resolve().parent / "data" / "istio_support.yaml"


def minor(version: str) -> str:
    """'1.28.2' -> '1.28'; 'v1.33.1' and '1.33' -> '1.33'."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:[.+-].*)?$", version.strip())
    if match is None:
        raise ConformanceError(f"{version!r} is not a version like 1.28.2")
    return f"{match.group(1)}.{match.group(2)}"


def load_matrix(path: Path = MATRIX_FILE) -> dict[str, tuple[str, ...]]:
    """Istio minor -> the Kubernetes minors it supports, oldest first, as the data file holds them."""
    try:
        rows = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("istio")
    except (OSError, yaml.YAMLError) as exc:
        raise ConformanceError(f"cannot read Istio's support matrix {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(rows, dict) or not rows:
        raise ConformanceError(f"{path}: no `istio` mapping of Istio minors to Kubernetes minors")
    return {str(istio): tuple(str(kube) for kube in kubes) for istio, kubes in rows.items()}


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
