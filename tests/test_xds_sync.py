"""The control plane's bookkeeping of one proxy (state-of-the-world ADS): what is due, what an
ACK or a NACK settles, and the proxy-status view (envoyproxy/envoy
api/envoy/service/discovery/v3/discovery.proto: version_info, response_nonce, error_detail)."""

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from conformance.targets.local.xds.status import proxy_status
from conformance.targets.local.xds.sync import ProxySync, Resource


def resources(*names: str) -> dict[str, Resource]:
    return {name: Resource(f"key-{name}", any_pb2.Any(type_url=name)) for name in names}


def test_a_type_is_sent_once_envoy_asks_and_synced_once_it_acks() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    assert proxy.update({CLUSTER_TYPE: resources("c1"), LISTENER_TYPE: resources("l1")}, 1) == [CLUSTER_TYPE, LISTENER_TYPE]
    assert list(proxy.due()) == [] and proxy.status()["CDS"] == "NOT SENT"
    assert proxy.status()["RDS"] == "SYNCED"  # nothing to have, nothing missing
    proxy.requested(CLUSTER_TYPE, frozenset(), "", "", None)
    [sent] = proxy.due()
    assert (sent.type_url, sent.version, len(sent.resources)) == (CLUSTER_TYPE, "1", 1)
    assert proxy.status()["CDS"] == "STALE" and not proxy.settled()
    assert list(proxy.due()) == []  # sent once
    proxy.requested(CLUSTER_TYPE, frozenset(), sent.nonce, "1", None)
    assert proxy.status()["CDS"] == "SYNCED"


def test_a_nack_keeps_envoys_reason_until_a_later_push_is_acked() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({LISTENER_TYPE: resources("l1")}, 1)
    proxy.requested(LISTENER_TYPE, frozenset(), "", "", None)
    [first] = proxy.due()
    proxy.requested(LISTENER_TYPE, frozenset(), first.nonce, "", "malformed IP address: not-an-ip")
    assert proxy.status()["LDS"] == "NACK" and proxy.settled()
    assert proxy.refusals() == ["proxy ns/a: Envoy refused LDS version 1: malformed IP address: not-an-ip"]
    assert proxy.update({LISTENER_TYPE: resources("l2")}, 2) == [LISTENER_TYPE]
    [second] = proxy.due()
    # The newer version is awaited like any push: the old NACK does not settle it.
    assert proxy.status()["LDS"] == "STALE" and not proxy.settled()
    assert proxy.refusals(since=2) == []
    proxy.requested(LISTENER_TYPE, frozenset(), second.nonce, "2", None)
    assert proxy.status()["LDS"] == "SYNCED" and proxy.refusals() == []


def test_an_answer_to_a_replaced_response_settles_nothing() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({CLUSTER_TYPE: resources("c1")}, 1)
    proxy.requested(CLUSTER_TYPE, frozenset(), "", "", None)
    [old] = proxy.due()
    proxy.update({CLUSTER_TYPE: resources("c2")}, 2)
    [new] = proxy.due()
    proxy.requested(CLUSTER_TYPE, frozenset(), old.nonce, "", "refused the old one")
    assert proxy.status()["CDS"] == "STALE" and proxy.refusals() == []
    proxy.requested(CLUSTER_TYPE, frozenset(), new.nonce, "2", None)
    assert proxy.status()["CDS"] == "SYNCED"


def test_named_types_send_what_envoy_asked_for_and_sync_once_it_holds_it() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({ROUTE_TYPE: resources("inbound", "outbound")}, 1)
    assert proxy.status()["RDS"] == "SYNCED"  # no listener asked for a route yet: nothing owed
    proxy.requested(ROUTE_TYPE, frozenset({"outbound"}), "", "", None)
    [first] = proxy.due()
    assert [r.type_url for r in first.resources] == ["outbound"]
    proxy.requested(ROUTE_TYPE, frozenset({"outbound"}), first.nonce, "1", None)
    assert proxy.status()["RDS"] == "SYNCED"
    # A new listener asks for its route too (with the last nonce it got).
    proxy.requested(ROUTE_TYPE, frozenset({"inbound", "outbound"}), first.nonce, "1", None)
    assert proxy.status()["RDS"] == "STALE"
    [second] = proxy.due()  # the same version, for the names Envoy asks for now
    assert second.version == "1" and [r.type_url for r in second.resources] == ["inbound", "outbound"]
    proxy.requested(ROUTE_TYPE, frozenset({"inbound", "outbound"}), second.nonce, "1", None)
    assert proxy.status()["RDS"] == "SYNCED"


def test_a_route_name_the_control_plane_lacks_is_answered_empty_as_istiod_does() -> None:
    # A listener draining after a change still asks for its old route (httproute.go BuildHTTPRoutes).
    proxy = ProxySync("router~1", "istio-system/gw")
    proxy.update({ROUTE_TYPE: resources("http.8080")}, 1)
    proxy.requested(ROUTE_TYPE, frozenset({"http.8080", "http.80"}), "", "", None)
    [sent] = proxy.due()
    held, empty = sorted(sent.resources, key=lambda r: r.type_url)
    assert held.type_url == "http.8080"
    config = route_pb2.RouteConfiguration()
    assert empty.Unpack(config) and config.name == "http.80" and not config.virtual_hosts
    assert config.validate_clusters.value is False
    assert proxy.status()["RDS"] == "STALE"
    proxy.requested(ROUTE_TYPE, frozenset({"http.8080", "http.80"}), sent.nonce, "1", None)
    assert proxy.status()["RDS"] == "SYNCED" and proxy.settled()


def test_a_nack_stands_when_envoy_asks_again_with_its_last_good_version() -> None:
    """After a NACK, Envoy's later requests carry the refused nonce and its last accepted
    version, without error_detail (envoyproxy/envoy GrpcMuxImpl::sendDiscoveryRequest clears
    it once sent): not an ACK."""
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({ROUTE_TYPE: resources("outbound")}, 1)
    proxy.requested(ROUTE_TYPE, frozenset({"outbound"}), "", "", None)
    [good] = proxy.due()
    proxy.requested(ROUTE_TYPE, frozenset({"outbound"}), good.nonce, "1", None)
    proxy.update({ROUTE_TYPE: resources("outbound", "inbound")}, 2)
    [bad] = proxy.due()
    proxy.requested(ROUTE_TYPE, frozenset({"outbound"}), bad.nonce, "1", "invalid regex")
    proxy.requested(ROUTE_TYPE, frozenset({"outbound", "inbound"}), bad.nonce, "1", None)
    assert proxy.status()["RDS"] == "NACK"
    assert proxy.refusals(since=2) == ["proxy ns/a: Envoy refused RDS version 2: invalid regex"]
    assert proxy.refusals(since=3) == []  # reported with the push that made it, not with later ones


def test_endpoints_follow_every_clusters_push() -> None:
    """A changed EDS cluster is a new one to Envoy, warming until it gets its endpoints, though
    it asks with the same names: istiod's full push sends EDS after CDS; so does this one."""
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({CLUSTER_TYPE: resources("c1"), ENDPOINT_TYPE: resources("c1")}, 1)
    proxy.requested(CLUSTER_TYPE, frozenset(), "", "", None)
    proxy.requested(ENDPOINT_TYPE, frozenset({"c1"}), "", "", None)
    sent = {r.type_url: r for r in proxy.due()}
    proxy.requested(CLUSTER_TYPE, frozenset(), sent[CLUSTER_TYPE].nonce, "1", None)
    proxy.requested(ENDPOINT_TYPE, frozenset({"c1"}), sent[ENDPOINT_TYPE].nonce, "1", None)
    assert proxy.update({CLUSTER_TYPE: {"c1": Resource("changed", any_pb2.Any())}, ENDPOINT_TYPE: resources("c1")}, 2) == [CLUSTER_TYPE]
    assert [r.type_url for r in proxy.due()] == [CLUSTER_TYPE, ENDPOINT_TYPE]


def test_secrets_are_sent_only_when_envoy_asks_for_them() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({SECRET_TYPE: resources("default", "ROOTCA")}, 1)
    assert proxy.status()["SDS"] == "SYNCED" and list(proxy.due()) == []
    proxy.requested(SECRET_TYPE, frozenset({"default"}), "", "", None)
    [sent] = proxy.due()
    assert [r.type_url for r in sent.resources] == ["default"] and proxy.status()["SDS"] == "STALE"
    proxy.requested(SECRET_TYPE, frozenset({"default"}), sent.nonce, "1", None)
    assert proxy.status()["SDS"] == "SYNCED"


def test_an_unchanged_update_changes_no_type() -> None:
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.update({CLUSTER_TYPE: resources("c1")}, 1)
    assert proxy.update({CLUSTER_TYPE: resources("c1")}, 2) == []
    assert proxy.types[CLUSTER_TYPE].version == 1


def test_proxy_status_prints_one_row_per_proxy() -> None:
    text = proxy_status([
        ("ns/b", True, {"CDS": "SYNCED", "EDS": "SYNCED", "LDS": "NACK", "RDS": "STALE", "SDS": "SYNCED"}),
        ("ns/a", False, {"CDS": "NOT SENT", "EDS": "SYNCED", "LDS": "NOT SENT", "RDS": "SYNCED", "SDS": "SYNCED"}),
    ])
    rows = [line.split("  ") for line in text.splitlines()]
    assert [[cell.strip() for cell in row if cell.strip()] for row in rows] == [
        ["NAME", "CDS", "EDS", "LDS", "RDS", "SDS", "STREAM"],
        ["ns/a", "NOT SENT", "SYNCED", "NOT SENT", "SYNCED", "SYNCED", "not connected"],
        ["ns/b", "SYNCED", "SYNCED", "NACK", "STALE", "SYNCED", "connected"],
    ]


def test_a_secret_envoy_asks_for_and_the_control_plane_lacks_is_stale() -> None:
    """A listener whose certificate never comes stays warming: the proxy is not in sync."""
    proxy = ProxySync("sidecar~1", "ns/a")
    proxy.requested(SECRET_TYPE, frozenset({"default"}), "", "", None)
    [sent] = proxy.due()
    assert sent.resources == ()
    proxy.requested(SECRET_TYPE, frozenset({"default"}), sent.nonce, sent.version, None)
    assert proxy.status()["SDS"] == "STALE" and not proxy.settled()
