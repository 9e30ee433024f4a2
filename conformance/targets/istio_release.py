"""Downloading an Istio release: the archive for this machine, SHA-256 checked, extracted safely, cached.

Release assets (istio/release-builder pkg/build/archive.go, `Archive`): for each platform
<os>-<arch> of linux-amd64, linux-armv7, linux-arm64, osx-amd64, osx-arm64 a tarball
<base>/<v>/istio-<v>-<os>-<arch>.tar.gz (win-amd64 gets a .zip), each with a .sha256 beside it
holding "<hex> <file name>". The host's OS and machine map to <os>-<arch> as Istio's own download
script does (istio/istio release/downloadIstioCandidate.sh: Darwin -> osx, else linux;
x86_64|amd64 -> amd64, aarch64|arm64 -> arm64).
"""

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from platform import machine, system

import httpx

from conformance.errors import ConformanceError
from conformance.settings import OFFICIAL_ISTIO_RELEASES, Timeouts
from conformance.targets import downloads

# The platforms whose tar.gz meshconf can use (linux-armv7 is left out: no kind node image runs there).
PLATFORMS = ("linux-amd64", "linux-arm64", "osx-amd64", "osx-arm64")
_OS_NAMES = {"linux": "linux", "darwin": "osx"}
_ARCH_NAMES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_VERIFIED_MARKER = ".meshconf-verified"
_WHAT = "Istio version"
_MIRROR_HINT = "use a mirror"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def host_platform(os_name: str | None = None, machine_name: str | None = None) -> str:
    """This machine's release platform, e.g. 'linux-amd64' (or that of the OS and machine given)."""
    os_name = (os_name if os_name is not None else system()).lower()
    machine_name = (machine_name if machine_name is not None else machine()).lower()
    os_part = _OS_NAMES.get(os_name)
    arch_part = _ARCH_NAMES.get(machine_name)
    if os_part is None or arch_part is None:
        raise ConformanceError(
            f"no Istio release archive for {os_name or 'an unknown OS'} on {machine_name or 'an unknown machine'}: "
            f"meshconf downloads one of {', '.join(PLATFORMS)}; "
            "run meshconf on such a machine, or use the local target"
        )
    return f"{os_part}-{arch_part}"


def archive_name(version: str, platform: str | None = None) -> str:
    """'istio-1.28.2-linux-amd64.tar.gz' for this machine, or for one of PLATFORMS."""
    chosen = platform or host_platform()
    if chosen not in PLATFORMS:
        raise ConformanceError(f"unknown Istio release platform {chosen!r}: use one of {', '.join(PLATFORMS)}")
    return f"istio-{version}-{chosen}.tar.gz"


def release_url(version: str, base_url: str = OFFICIAL_ISTIO_RELEASES, platform: str | None = None) -> str:
    return f"{base_url.rstrip('/')}/{version}/{archive_name(version, platform)}"


def fetch_release(
    version: str,
    cache_dir: Path,
    base_url: str = OFFICIAL_ISTIO_RELEASES,
    platform: str | None = None,
    timeout: float = Timeouts().request,
) -> Path:
    """The extracted release, cache_dir/istio-<v>/ (bin/istioctl, samples/addons/...).

    Downloads the archive for this machine (or `platform`) and its .sha256, verifies the
    digest, extracts safely and records the verified archive in a marker; a later call that
    finds the marker for the same archive returns at once without any request.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    release_dir = cache_dir / f"istio-{version}"
    name = archive_name(version, platform)
    # Parallel runs (xdist workers, two CLIs) share the cache: one downloads, the rest reuse.
    with downloads.locked(cache_dir / f".istio-{version}.lock"):
        if _verified_marker(release_dir) == name:
            return release_dir
        url = release_url(version, base_url, platform)
        with httpx.Client(follow_redirects=True, timeout=timeout) as client:
            # GitHub answers release downloads with a redirect to its object store.
            digest_text = downloads.get_text(client, f"{url}.sha256", _WHAT, _MIRROR_HINT)
            expected = _parse_sha256(digest_text, name, f"{url}.sha256")
            archive = cache_dir / name
            actual = _download(client, url, archive)
        try:
            if actual != expected:
                raise ConformanceError(
                    f"SHA-256 mismatch for {name}: expected {expected}, got {actual} "
                    f"(download deleted; retry, or check the mirror {base_url})"
                )
            _extract(archive, release_dir, {"archive": name, "sha256": actual, "url": url})
        finally:
            # The verified tree is what we reuse; the archive is not needed after it.
            archive.unlink(missing_ok=True)
    return release_dir


def _verified_marker(release_dir: Path) -> str | None:
    """The archive name a complete, verified extraction recorded, if any."""
    try:
        return str(json.loads((release_dir / _VERIFIED_MARKER).read_text())["archive"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _download(client: httpx.Client, url: str, dest: Path) -> str:
    """Stream url into dest; the SHA-256 of what was written."""
    partial = dest.with_name(dest.name + ".part")
    try:
        for attempt in downloads.retrying():
            with attempt:
                digest = hashlib.sha256()
                with client.stream("GET", url) as response:
                    downloads.check_status(response, url, _WHAT)
                    with partial.open("wb") as out:
                        for chunk in response.iter_bytes():
                            digest.update(chunk)
                            out.write(chunk)
        partial.replace(dest)
    except httpx.TransportError as exc:
        raise downloads.unreachable(url, exc, _MIRROR_HINT) from None
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


def _parse_sha256(text: str, name: str, url: str) -> str:
    """The digest from a sha256sum-style line: '<hex> <file>' (or '<hex>  *<file>')."""
    fields = text.split()
    digest = fields[0].lower() if fields else ""
    if not _SHA256_HEX.match(digest):
        raise ConformanceError(f"{url} does not hold a SHA-256 digest")
    if len(fields) > 1 and fields[1].lstrip("*") != name:
        raise ConformanceError(f"{url} is the digest of {fields[1]}, not of {name}")
    return digest


def _extract(archive: Path, release_dir: Path, marker: dict[str, str]) -> None:
    """Extract archive's istio-<v>/ into release_dir, refusing members that would escape."""
    top = release_dir.name
    staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=release_dir.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, staging)
                # The data filter repeats our checks and also drops setuid bits and device files.
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ConformanceError(f"cannot extract {archive.name}: {exc}") from None
        extracted = staging / top
        if not (extracted / "bin" / "istioctl").is_file():
            raise ConformanceError(f"{archive.name} has no {top}/bin/istioctl: not an Istio release archive")
        (extracted / _VERIFIED_MARKER).write_text(json.dumps(marker) + "\n")
        # A leftover tree without a marker is from an interrupted run: replace it.
        shutil.rmtree(release_dir, ignore_errors=True)
        extracted.rename(release_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise ConformanceError(f"refusing archive member {member.name!r}: it points outside the release folder")
    if member.issym():
        target = (dest / name.parent / member.linkname).resolve()
        if not target.is_relative_to(dest.resolve()):
            raise ConformanceError(
                f"refusing archive member {member.name!r}: symlink to {member.linkname!r} leaves the release folder"
            )
    if member.islnk():
        linked = PurePosixPath(member.linkname)
        if linked.is_absolute() or ".." in linked.parts:
            raise ConformanceError(
                f"refusing archive member {member.name!r}: hard link to {member.linkname!r} leaves the release folder"
            )
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ConformanceError(f"refusing archive member {member.name!r}: not a file, folder or link")
