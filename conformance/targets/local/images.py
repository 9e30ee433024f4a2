"""Container images the local mesh can run, mapped to its own implementations."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.apps import http_echo

HTTP_ECHO = "http-echo"


@dataclass(frozen=True)
class AppSpec:
    app: str  # an app of conformance.targets.local.apps, or "gateway" (Envoy only)
    version: str | None = None
    # The container's args, for an app that reads them (http-echo): checked by resolve_container.
    args: tuple[str, ...] = ()


# Matched against the image's repository path, without registry host and tag.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:^|/)examples-bookinfo-(productpage|details|ratings)-v1$"), "{0}"),
    (re.compile(r"(?:^|/)examples-bookinfo-reviews-(v[123])$"), "reviews"),
    (re.compile(r"(?:^|/)curlimages/curl$"), "client"),
    (re.compile(r"(?:^|/)fortio/fortio$"), "client"),
    (re.compile(r"(?:^|/)(?:mccutchen/go-httpbin|kennethreitz/httpbin)$"), "httpbin"),
    (re.compile(r"(?:^|/)istio/proxyv2$"), "gateway"),
    (re.compile(r"(?:^|/)hashicorp/http-echo$"), HTTP_ECHO),
)

KNOWN = (
    "examples-bookinfo-{productpage,details,ratings}-v1, examples-bookinfo-reviews-v{1,2,3}, "
    "curlimages/curl, fortio/fortio, mccutchen/go-httpbin, hashicorp/http-echo, istio/proxyv2 (gateway)"
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
    """The app an image stands for; an app that reads its container's args is refused here
    (resolve_container runs it with them)."""
    app = _app_of(image, where)
    if app.app == HTTP_ECHO:
        raise UnsupportedResource(f"{where}: image {image!r} reads its container's args: the local mesh runs it "
                                  f"through images.resolve_container only")
    return app


def _app_of(image: str, where: str) -> AppSpec:
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


def resolve_container(container: Mapping[str, Any], where: str) -> AppSpec:
    """The app a Deployment's container runs, with the args it reads (http-echo's); other apps
    run as their images' defaults, whatever their args."""
    app = _app_of(container.get("image", ""), where)
    if app.app != HTTP_ECHO:
        return app
    if container.get("command") is not None:
        raise UnsupportedResource(f"{where}: field command of a {HTTP_ECHO} container is not implemented by the "
                                  f"local mesh (the image's entrypoint runs, with args)")
    args = tuple(str(arg) for arg in container.get("args") or ())
    try:
        options = http_echo.parse_echo_args(args)
    except http_echo.Unsupported as refused:
        raise UnsupportedResource(f"{where}: {HTTP_ECHO} argument not implemented by the local mesh: {refused}") from None
    except ValueError as invalid:
        raise ManifestError(f"{where}: {HTTP_ECHO} would exit at start: {invalid}") from None
    ports = [int(port.get("containerPort", 0)) for port in container.get("ports") or ()]
    if ports[:1] != [options.port]:
        raise UnsupportedResource(
            f"{where}: {HTTP_ECHO} listens on port {options.port} (-listen={options.listen}); the local mesh runs "
            f"an app on its container's first containerPort, {ports[0] if ports else 'none here'}")
    return AppSpec(HTTP_ECHO, args=args)
