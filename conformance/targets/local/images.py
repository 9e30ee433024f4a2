"""Container images the local mesh can run, mapped to its own implementations."""

import re
from dataclasses import dataclass

from conformance.errors import UnsupportedResource


@dataclass(frozen=True)
class AppSpec:
    app: str  # an app of conformance.targets.local.apps, or "gateway" (Envoy only)
    version: str | None = None


# Matched against the image's repository path, without registry host and tag.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:^|/)examples-bookinfo-(productpage|details|ratings)-v1$"), "{0}"),
    (re.compile(r"(?:^|/)examples-bookinfo-reviews-(v[123])$"), "reviews"),
    (re.compile(r"(?:^|/)curlimages/curl$"), "client"),
    (re.compile(r"(?:^|/)fortio/fortio$"), "client"),
    (re.compile(r"(?:^|/)(?:mccutchen/go-httpbin|kennethreitz/httpbin)$"), "httpbin"),
    (re.compile(r"(?:^|/)istio/proxyv2$"), "gateway"),
)

KNOWN = (
    "examples-bookinfo-{productpage,details,ratings}-v1, examples-bookinfo-reviews-v{1,2,3}, "
    "curlimages/curl, fortio/fortio, mccutchen/go-httpbin, istio/proxyv2 (gateway)"
)


def repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    parts = name.split("/")
    # A first part with a dot or colon is a registry host (docker.io, registry.istio.io).
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def resolve(image: str, where: str) -> AppSpec:
    repo = repository(image)
    for pattern, app in _PATTERNS:
        match = pattern.search(repo)
        if match:
            if app == "reviews":
                return AppSpec("reviews", match.group(1))
            return AppSpec(app.format(*match.groups()))
    raise UnsupportedResource(
        f"{where}: image {image!r} is not implemented by the local mesh (known: {KNOWN})"
    )
