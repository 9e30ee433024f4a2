"""The control plane's view of its proxies, printed as `istioctl proxy-status` prints istiod's
(istio/istio istioctl/pkg/writer/pilot/status.go, 1.26: NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD
VERSION): one row per proxy, SYNCED, STALE, NACK or NOT SENT per xDS type."""

from collections.abc import Mapping, Sequence

from conformance.tables import render_table
from conformance.targets.local.xds.protos import PUSH_ORDER, SHORT_NAMES

COLUMNS = ("NAME", *(SHORT_NAMES[t] for t in PUSH_ORDER), "STREAM")


def proxy_status(rows: Sequence[tuple[str, bool, Mapping[str, str]]]) -> str:
    """rows: (proxy name, connected, status by type), as ControlPlane.snapshot() gives them."""
    return render_table(COLUMNS, [
        (name, *(status.get(kind, "") for kind in COLUMNS[1:-1]), "connected" if connected else "not connected")
        for name, connected, status in sorted(rows)
    ]) + "\n"
