"""The control plane with a real Envoy on the other end: what Envoy does with a changed cluster
and with a configuration it refuses."""

import copy
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.errors import ConformanceError
from conformance.targets.local.translator import ProxyConfig, translate
from tests.builders import mesh, make_pod
from tests.envoy_builders import Proxies, through

REVIEWS = "outbound|9080||reviews.bookinfo.svc.cluster.local"
BAD = "outbound|9080||bad.bookinfo.svc.cluster.local"


def with_cluster(config: ProxyConfig, name: str, **fields: object) -> ProxyConfig:
    """`config` with cluster `name`'s fields changed."""
    clusters = [({**c, **fields} if c["name"] == name else c) for c in copy.deepcopy(config.clusters)]
    return replace(config, clusters=clusters)


def with_new_cluster(config: ProxyConfig, name: str, **fields: object) -> ProxyConfig:
    """`config` with one more EDS cluster, a copy of reviews' with `fields` changed, and its endpoints."""
    [reviews] = [c for c in config.clusters if c["name"] == REVIEWS]
    eds = {**reviews["eds_cluster_config"], "service_name": name}
    cluster = {**copy.deepcopy(reviews), "name": name, "alt_stat_name": f"{name};", "eds_cluster_config": eds, **fields}
    endpoints = {**config.endpoints, name: {**config.endpoints[REVIEWS], "cluster_name": name}}
    return replace(config, clusters=[*config.clusters, cluster], endpoints=endpoints)


def test_a_changed_eds_cluster_gets_its_endpoints_again_and_goes_active(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """Envoy replaces a changed cluster with a new one, which warms until it has endpoints, and
    asks for them with the names it asked for before: the push must send them anyway."""
    client = make_pod("client", loopback_ips[0], {"app": "client"}, ports=())
    config = translate(client, mesh())
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start_config(client, config)
        assert proxies.push(proxy, with_cluster(config, REVIEWS, lb_policy="RANDOM")) == [proxy.node_id]
        dump = proxy.admin("/config_dump?resource=dynamic_warming_clusters").json()
        assert dump.get("configs", []) == []
        active = proxy.admin("/config_dump?resource=dynamic_active_clusters").json()["configs"]
        [reviews] = [c["cluster"] for c in active if c["cluster"]["name"] == REVIEWS]
        assert reviews["lb_policy"] == "RANDOM"


def test_a_refused_cluster_fails_the_push_at_once_with_envoys_reason_and_the_old_one_serves(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """Envoy never asks for the endpoints of a new cluster it refused: the push settles on the
    NACK, not at the timeout, and the clusters Envoy had keep serving."""
    client = make_pod("client", loopback_ips[0], {"app": "client"}, ports=())
    config = translate(client, mesh())
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start_config(client, config)
        before = through(client.ip, "http://reviews.bookinfo:9080/").status
        started = time.monotonic()
        with pytest.raises(ConformanceError, match=r"Envoy refused CDS version \d+: .*cluster provided LB specified but cluster"):
            proxies.push(proxy, with_new_cluster(config, BAD, lb_policy="CLUSTER_PROVIDED"))
        assert time.monotonic() - started < 5  # the wait's timeout is 10 s
        assert proxy.sync_status()["CDS"] == "NACK"
        assert through(client.ip, "http://reviews.bookinfo:9080/").status == before
