"""conformance.targets.istio_support: the package's support matrix agrees with Istio's own data, and
a pair outside it is refused (or, forced, warned about)."""

from pathlib import Path

import pytest
import yaml

from conformance.errors import ConformanceError
from conformance.targets import istio_support
from tests.builders import upstream_file

# The Istio minors meshconf supports.
MINORS = ("1.26", "1.27", "1.28", "1.29", "1.30")


def upstream_matrix() -> dict[str, tuple[str, ...]]:
    """Istio minor -> k8sVersions, from the copy of istio/istio.io data/compatibility/supportStatus.yml."""
    rows = yaml.safe_load(upstream_file("istio.io/compatibility__supportStatus.yml").read_text())
    return {str(row["version"]): tuple(str(v) for v in row["k8sVersions"] or ()) for row in rows}


def test_the_matrix_is_istios_for_every_supported_minor() -> None:
    upstream = upstream_matrix()
    assert tuple(istio_support.SUPPORT_MATRIX) == MINORS
    for minor in MINORS:
        assert istio_support.SUPPORT_MATRIX[minor] == upstream[minor], minor


def test_the_matrix_is_read_from_the_data_file(tmp_path: Path) -> None:
    data = tmp_path / "support.yaml"
    data.write_text(yaml.safe_dump({"istio": {"1.31": ["1.33", "1.37"]}}))
    assert istio_support.load_matrix(data) == {"1.31": ("1.33", "1.37")}
    for wrong in ({"kubernetes": {}}, {"istio": {}}, {"istio": {"1.31": "1.33"}}, ["istio"]):
        data.write_text(yaml.safe_dump(wrong))
        with pytest.raises(ConformanceError, match=f"Istio's support matrix {data}: `istio` must be a mapping"):
            istio_support.load_matrix(data)
    data.write_bytes("istio: {}".encode("utf-16"))  # not UTF-8: not a data file of ours
    with pytest.raises(ConformanceError, match=f"cannot read Istio's support matrix {data}: .*utf-8"):
        istio_support.load_matrix(data)


@pytest.mark.parametrize(("istio_version", "kube"), [
    ("1.26.0", "1.29"), ("1.27.3", "v1.33.1"), ("1.28.2", "1.30"), ("1.28.10", "1.34.0"), ("1.29.0", "1.35"),
    ("1.30.1", "1.36.1"), ("1.28.2", "v1.33.1+k3s1"), ("1.30.1", "v1.32.3-eks-4096722"),  # providers' builds
])
def test_supported_pairs(istio_version: str, kube: str) -> None:
    assert istio_support.check_support(istio_version, kube, force=False) is None


@pytest.mark.parametrize(("istio_version", "kube", "text"), [
    ("1.28.2", "1.29", "Istio 1.28.2 supports Kubernetes 1.30-1.34, not 1.29"),
    ("1.28.2", "1.35.0", "Istio 1.28.2 supports Kubernetes 1.30-1.34, not 1.35.0"),
    ("1.30.0", "1.31", "Istio 1.30.0 supports Kubernetes 1.32-1.36, not 1.31"),
    ("1.25.1", "1.30", "Istio 1.25.1 is not in the support matrix"),
])
def test_unsupported_pairs_refused(istio_version: str, kube: str, text: str) -> None:
    with pytest.raises(ConformanceError, match=text) as caught:
        istio_support.check_support(istio_version, kube, force=False)
    assert "force" in str(caught.value)


def test_forced_unsupported_pair_warns() -> None:
    warning = istio_support.check_support("1.26.1", "1.36.0", force=True)
    assert warning is not None
    assert "Istio 1.26.1 supports Kubernetes 1.29-1.33, not 1.36.0" in warning


def test_version_that_is_not_one() -> None:
    with pytest.raises(ConformanceError, match="'latest' is not a version"):
        istio_support.check_support("latest", "1.30")
