"""conformance.targets.istio_release against a local HTTP server: the archive for the platform,
verified, extracted safely, cached."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from conformance.errors import ConformanceError
from conformance.targets import istio_release
from tests.release_server import ReleaseServer, tarball

# The platform the tests download for, named so they do not depend on the machine they run on.
LINUX_AMD64 = "linux-amd64"


def _release(version: str = "1.28.2", extra: dict[str, bytes] | None = None) -> bytes:
    top = f"istio-{version}"
    return tarball({
        f"{top}/bin/istioctl": b"#!/bin/sh\necho fake\n",
        f"{top}/samples/addons/prometheus.yaml": b"kind: ConfigMap\n",
        f"{top}/samples/addons/kiali.yaml": b"kind: Service\n",
        **(extra or {}),
    })


def _fetch(release_server: ReleaseServer, cache: Path, version: str = "1.28.2") -> Path:
    return istio_release.fetch_release(version, cache, base_url=release_server.url, platform=LINUX_AMD64)


# --- the platform ----------------------------------------------------------------------------


@pytest.mark.parametrize(("os_name", "machine_name", "platform"), [
    ("Linux", "x86_64", "linux-amd64"),
    ("Linux", "aarch64", "linux-arm64"),
    ("Darwin", "x86_64", "osx-amd64"),
    ("Darwin", "arm64", "osx-arm64"),
])
def test_platform_follows_the_os_and_machine(os_name: str, machine_name: str, platform: str) -> None:
    assert istio_release.host_platform(os_name, machine_name) == platform


@pytest.mark.parametrize(("os_name", "machine_name"), [("Windows", "AMD64"), ("Linux", "armv7l"), ("Linux", "s390x")])
def test_unsupported_platform_is_a_clear_error(os_name: str, machine_name: str) -> None:
    with pytest.raises(ConformanceError) as caught:
        istio_release.host_platform(os_name, machine_name)
    message = str(caught.value)
    assert f"no Istio release archive for {os_name.lower()} on {machine_name.lower()}" in message
    assert "linux-amd64, linux-arm64, osx-amd64, osx-arm64" in message


def test_the_default_archive_is_the_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(istio_release, "system", lambda: "Darwin")
    monkeypatch.setattr(istio_release, "machine", lambda: "arm64")
    assert istio_release.release_url("1.28.2") == (
        "https://github.com/istio/istio/releases/download/1.28.2/istio-1.28.2-osx-arm64.tar.gz"
    )
    monkeypatch.setattr(istio_release, "system", lambda: "Linux")
    monkeypatch.setattr(istio_release, "machine", lambda: "aarch64")
    assert istio_release.archive_name("1.28.2") == "istio-1.28.2-linux-arm64.tar.gz"


def test_official_url_layout() -> None:
    assert istio_release.release_url("1.28.2", platform="linux-amd64") == (
        "https://github.com/istio/istio/releases/download/1.28.2/istio-1.28.2-linux-amd64.tar.gz"
    )
    assert istio_release.release_url("1.28.2", platform="osx-amd64").endswith("/1.28.2/istio-1.28.2-osx-amd64.tar.gz")
    with pytest.raises(ConformanceError, match="unknown Istio release platform 'win-amd64'"):
        istio_release.archive_name("1.28.2", "win-amd64")


def test_fetch_downloads_the_archive_of_the_platform(release_server: ReleaseServer, tmp_path: Path) -> None:
    release_server.publish("1.28.2", _release(), platform="linux-arm64")
    release = istio_release.fetch_release("1.28.2", tmp_path / "cache", base_url=release_server.url,
                                          platform="linux-arm64")
    assert (release / "bin" / "istioctl").is_file()
    assert release_server.requests == [
        "/releases/1.28.2/istio-1.28.2-linux-arm64.tar.gz.sha256",
        "/releases/1.28.2/istio-1.28.2-linux-arm64.tar.gz",
    ]
    # A cached extraction of another platform's archive is not reused.
    release_server.publish("1.28.2", _release(), platform=LINUX_AMD64)
    _fetch(release_server, tmp_path / "cache")
    assert release_server.requests[2:] == [
        "/releases/1.28.2/istio-1.28.2-linux-amd64.tar.gz.sha256",
        "/releases/1.28.2/istio-1.28.2-linux-amd64.tar.gz",
    ]


# --- download, verification, extraction -------------------------------------------------------


def test_fetch_verifies_extracts_and_caches(release_server: ReleaseServer, tmp_path: Path) -> None:
    release_server.publish("1.28.2", _release(), platform=LINUX_AMD64)
    cache = tmp_path / "cache"
    release = _fetch(release_server, cache)
    assert release == cache / "istio-1.28.2"
    assert os.access(release / "bin" / "istioctl", os.X_OK)
    assert (release / "samples/addons/prometheus.yaml").read_bytes() == b"kind: ConfigMap\n"
    assert (release / "samples/addons/kiali.yaml").read_bytes() == b"kind: Service\n"
    assert release_server.requests == [
        "/releases/1.28.2/istio-1.28.2-linux-amd64.tar.gz.sha256",
        "/releases/1.28.2/istio-1.28.2-linux-amd64.tar.gz",
    ]
    marker = json.loads((release / ".meshconf-verified").read_text())
    assert marker["sha256"] == hashlib.sha256(_release()).hexdigest()
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == ["istio-1.28.2"]

    again = _fetch(release_server, cache)
    assert again == release
    assert len(release_server.requests) == 2  # the verified copy was reused without a request


def test_fetch_bad_digest_leaves_nothing(release_server: ReleaseServer, tmp_path: Path) -> None:
    archive = _release()
    wrong = "0" * 64
    release_server.publish("1.28.2", archive, digest=wrong, platform=LINUX_AMD64)
    cache = tmp_path / "cache"
    with pytest.raises(ConformanceError) as caught:
        _fetch(release_server, cache)
    message = str(caught.value)
    assert f"expected {wrong}" in message and f"got {hashlib.sha256(archive).hexdigest()}" in message
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_fetch_refuses_path_traversal(release_server: ReleaseServer, tmp_path: Path) -> None:
    release_server.publish("1.28.2", _release(extra={"istio-1.28.2/../../escaped.txt": b"owned"}),
                           platform=LINUX_AMD64)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ConformanceError, match=r"refusing archive member 'istio-1.28.2/../../escaped.txt'"):
        _fetch(release_server, cache)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_fetch_refuses_escaping_symlink(release_server: ReleaseServer, tmp_path: Path) -> None:
    archive = tarball({"istio-1.28.2/bin/istioctl": b"x"}, links={"istio-1.28.2/evil": "../../../etc/passwd"})
    release_server.publish("1.28.2", archive, platform=LINUX_AMD64)
    with pytest.raises(ConformanceError, match="symlink to '../../../etc/passwd' leaves the release folder"):
        _fetch(release_server, tmp_path / "cache")


def test_fetch_unknown_version_is_not_found(release_server: ReleaseServer, tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match=r"not found: .*/1\.99\.0/istio-1\.99\.0-linux-amd64\.tar\.gz\.sha256"):
        _fetch(release_server, tmp_path / "cache", version="1.99.0")


def test_fetch_retries_transport_errors(release_server: ReleaseServer, tmp_path: Path) -> None:
    release_server.publish("1.28.2", _release(), platform=LINUX_AMD64)
    release_server.drop_next = 1  # the first request is cut off: httpx raises a transport error
    release = _fetch(release_server, tmp_path / "cache")
    assert (release / "bin" / "istioctl").is_file()
    assert release_server.requests[:2] == ["/releases/1.28.2/istio-1.28.2-linux-amd64.tar.gz.sha256"] * 2
