"""Version numbers as meshconf reads them (Istio, Kubernetes, Gateway API, kind): one parser.

The shape is semver's, [v]MAJOR.MINOR.PATCH[-PRE-RELEASE][+BUILD], with the patch optional
because a Kubernetes minor ("1.34") names no patch. Build metadata does not order versions
(semver 2.0.0, item 10): kind's builds from main print "v0.33.0-alpha.12+fed2688", k3s "v1.33.1+k3s1".
"""

import re
from dataclasses import dataclass

_VERSION = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?")


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int | None = None  # None: a minor only, e.g. "1.34"
    pre_release: str = ""
    build: str = ""

    @property
    def core(self) -> tuple[int, int, int]:
        """(major, minor, patch), a minor's patch counted as 0."""
        return (self.major, self.minor, self.patch or 0)

    @property
    def minor_line(self) -> str:
        """'1.28' of 1.28.2."""
        return f"{self.major}.{self.minor}"

    def at_least(self, minimum: tuple[int, int, int]) -> bool:
        """Whether this is the release `minimum` or a later one; a pre-release of `minimum` predates it."""
        return self.core > minimum or (self.core == minimum and not self.pre_release)

    def __str__(self) -> str:
        patch = "" if self.patch is None else f".{self.patch}"
        pre = f"-{self.pre_release}" if self.pre_release else ""
        return f"v{self.major}.{self.minor}{patch}{pre}" + (f"+{self.build}" if self.build else "")


def parse(text: str) -> Version | None:
    """The version `text` is ("1.28.2", "v1.33.1", "1.34", "1.30.0-beta.1"), or None when it is not one."""
    match = _VERSION.fullmatch(text.strip())
    return _version(match) if match else None


def find(text: str) -> Version | None:
    """The first whole MAJOR.MINOR.PATCH version in a tool's output, e.g. kind's in
    "kind v0.32.0 go1.24.2 linux/amd64" (go1.24.2 is no version: it is not a word of its own)."""
    for match in _VERSION.finditer(text):
        if match[3] is not None:
            return _version(match)
    return None


def _version(match: re.Match[str]) -> Version:
    major, minor, patch, pre, build = match.groups()
    return Version(int(major), int(minor), None if patch is None else int(patch), pre or "", build or "")
