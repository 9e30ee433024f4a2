"""The feature catalogue: every suite test names exactly one feature from here."""

from dataclasses import dataclass
from enum import StrEnum

from conformance.errors import ConformanceError


class Level(StrEnum):
    CORE = "core"
    EXTENDED = "extended"


PROFILES = (
    "MESH-INJECTION",
    "MESH-TRAFFIC",
    "MESH-RESILIENCE",
    "MESH-SECURITY",
    "MESH-INGRESS",
    "MESH-TELEMETRY",
)


@dataclass(frozen=True)
class Feature:
    name: str
    profile: str
    level: Level
    description: str


CATALOGUE: tuple[Feature, ...] = (
    Feature(
        "IngressGateway",
        "MESH-INGRESS",
        Level.CORE,
        "An Istio Gateway + VirtualService expose /productpage; a host no Gateway serves gets 404.",
    ),
    Feature(
        "RouteToVersion",
        "MESH-TRAFFIC",
        Level.CORE,
        "A VirtualService routing reviews to one subset sends every request there (v1, then v3).",
    ),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in CATALOGUE}


def get(name: str) -> Feature:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConformanceError(f"unknown feature {name!r}; known: {', '.join(sorted(BY_NAME))}") from None


def select(profiles: list[str], features: list[str]) -> list[Feature]:
    """The features a run covers: the union of the named profiles and features, or all."""
    for p in profiles:
        if p not in PROFILES:
            raise ConformanceError(f"unknown profile {p!r}; known: {', '.join(PROFILES)}")
    for f in features:
        get(f)
    if not profiles and not features:
        return list(CATALOGUE)
    return [f for f in CATALOGUE if f.profile in profiles or f.name in features]
