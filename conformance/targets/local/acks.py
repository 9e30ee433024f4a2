"""Whether a proxy's Envoy accepted the configuration files it was given, or refused them, and why.

Envoy keeps statistics per xDS subscription (envoyproxy/envoy
docs/root/configuration/overview/mgmt_server.rst, "xDS subscription statistics"): the counters
update_rejected and update_failure count the updates it refused, and the text readout
version_text holds the version of the last update it accepted. A file subscription refuses an
update with a warning in Envoy's log, "Filesystem config update rejected: <why>" or "Filesystem
config update failure: in <path>, <why>" (source/extensions/config_subscription/filesystem/
filesystem_subscription_impl.cc), written before the counter moves.

Each subscription watches its own file (no watched_directory), so Envoy reads a file once per
write, and once when the subscription starts: a refusal counted after a write is that write's.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conformance.targets.local.translator import rds_file_name
from conformance.targets.local.translator.resources import STAT_PREFIX_DELIMITER

LDS = "lds.json"
CDS = "cds.json"

# The stats of every subscription of a proxy, in one admin call: LDS, CDS, and each route
# config's RDS, which Envoy names http.<connection manager's stat prefix>rds.<route name>.
SUBSCRIPTION_STATS = (
    r"^(listener_manager\.lds|cluster_manager\.cds|http\..*\.rds\..*)"
    r"\.(update_rejected|update_failure|version_text)$"
)
_RDS_INFIX = f"{STAT_PREFIX_DELIMITER}.rds."
_REFUSAL = re.compile(r"Filesystem config update (?:rejected|failure): (.*)")


@dataclass(frozen=True)
class Subscription:
    """What Envoy's stats say of one subscription."""

    version: str  # of the last update it accepted; "" before any
    refused: int  # updates rejected or failed, since it started


@dataclass(frozen=True)
class Write:
    """A file written for Envoy, and what Envoy had counted before it."""

    file: str
    resource: str  # what the file holds, for messages
    version: str
    refused_before: int
    log_offset: int  # the length of Envoy's log before the write


def subscriptions(stats: str) -> dict[str, Subscription]:
    """Envoy's /stats text (filtered by SUBSCRIPTION_STATS), by the file each subscription reads."""
    values: dict[str, dict[str, str]] = {}
    for line in stats.splitlines():
        name, separator, value = line.partition(": ")
        subscription, _, stat = name.rpartition(".")
        file = _file_of(subscription)
        if separator and file is not None:
            values.setdefault(file, {})[stat] = value.strip().removeprefix('"').removesuffix('"')
    return {
        file: Subscription(
            version=stat.get("version_text", ""),
            refused=int(stat.get("update_rejected", 0)) + int(stat.get("update_failure", 0)),
        )
        for file, stat in values.items()
    }


def _file_of(subscription: str) -> str | None:
    if subscription == "listener_manager.lds":
        return LDS
    if subscription == "cluster_manager.cds":
        return CDS
    prefix, infix, route = subscription.partition(_RDS_INFIX)
    return rds_file_name(route) if infix and prefix.startswith("http.") else None


def describe(file: str, route: str | None = None) -> str:
    """What a file holds: `route` names the route configuration of an RDS file."""
    if file == LDS:
        return f"the listeners (LDS, {LDS})"
    if file == CDS:
        return f"the clusters (CDS, {CDS})"
    return f"route configuration {route!r} (RDS, {file})"


def refusal_reasons(log: Path, offset: int) -> list[str]:
    """Why Envoy refused updates, from its log after `offset`, in the order it refused them."""
    try:
        with log.open("rb") as text:
            text.seek(offset)
            tail = text.read().decode(errors="replace")
    except OSError:
        return []
    return [match.group(1).strip() for match in _REFUSAL.finditer(tail)]


class Acceptance:
    """The files a proxy's Envoy was given and has not been seen to accept or refuse yet.

    Before Envoy is up, only its first configuration is written: it reads each file once as it
    starts. Once it is up and that configuration settled (`verified`), every write is awaited.
    """

    def __init__(self) -> None:
        self.verified = False
        self.unsettled: dict[str, Write] = {}
        self.refusals: dict[str, str] = {}  # file -> why Envoy refused its last write
        self._refused: dict[str, int] = {}  # file -> refusals counted, when last seen

    def wrote(self, file: str, resource: str, version: str, log_offset: int) -> None:
        self.unsettled[file] = Write(file, resource, version, self._refused.get(file, 0), log_offset)

    def settle(self, seen: Mapping[str, Subscription], log: Path) -> list[str]:
        """Settle the writes `seen` decides; return a message for each one Envoy refused."""
        refused = []
        for write in list(self.unsettled.values()):
            state = seen.get(write.file)
            if state is None:
                continue
            if state.version == write.version:
                del self.unsettled[write.file]
                self.refusals.pop(write.file, None)
            elif state.refused > write.refused_before:
                del self.unsettled[write.file]
                refused.append(write)
        if LDS not in self.unsettled:
            # A route config no listener names has no subscription: Envoy reads it when a
            # listener does. Which ones do is known once Envoy has settled the listeners.
            for file in [file for file in self.unsettled if file not in seen and file not in (LDS, CDS)]:
                del self.unsettled[file]
        reasons = refusal_reasons(log, min((w.log_offset for w in refused), default=0))
        for position, write in enumerate(refused):
            # One warning per refused file, in the order they were written.
            why = reasons[position] if len(reasons) == len(refused) else "; ".join(reasons)
            self.refusals[write.file] = (
                f"Envoy refused {write.resource} version {write.version}: {why or 'its log says no more'}"
            )
        self._refused = {file: state.refused for file, state in seen.items()}
        return [self.refusals[write.file] for write in refused]
