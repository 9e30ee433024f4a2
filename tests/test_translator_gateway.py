"""The translator's ingress gateway resources (Gateways and the VirtualServices bound to them), by value."""

from collections.abc import Mapping
from typing import Any

import pytest

from conformance.errors import UnsupportedResource
from conformance.targets.local.translator import ProxyConfig, translate
from tests.builders import (
    ALL_V1_DR,
    INGRESS,
    NS,
    REVIEWS_HOST,
    gateway,
    gateway_vs,
    hcm_of,
    load_reference,
    mesh,
    to,
    virtual_service,
)

# ---------------------------------------------------------------------------------------------
# Gateway


def ingress(*docs: Mapping[str, Any]) -> ProxyConfig:
    return translate(INGRESS, mesh(*docs))


def test_gateway_listener_uses_rds_route_http_port() -> None:
    config = ingress(gateway("gw", ["*"]))
    [listener] = config.listeners
    assert listener["name"] == "127.0.1.100_8080"
    assert listener["address"]["socket_address"] == {"address": "127.0.1.100", "port_value": 8080}
    hcm = hcm_of(listener)
    assert hcm["server_name"] == "istio-envoy"
    assert hcm["rds"]["route_config_name"] == "http.8080"
    assert config.routes["http.8080"]["virtual_hosts"] == []  # nothing bound: every host gets 404
    assert f"outbound|9080||{REVIEWS_HOST}" in {c["name"] for c in config.clusters}


def test_bookinfo_gateway_sample() -> None:
    config = ingress(*load_reference("bookinfo-gateway"), ALL_V1_DR)
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    assert [r["match"] for r in vhost["routes"]] == [
        {"path": "/productpage"}, {"prefix": "/static"}, {"path": "/login"}, {"path": "/logout"},
        {"prefix": "/api/v1/products"},
    ]
    assert {r["route"]["cluster"] for r in vhost["routes"]} == {"outbound|9080||productpage.bookinfo.svc.cluster.local"}


@pytest.mark.parametrize(
    ("server_hosts", "vs_hosts", "admitted"),
    [
        (["*"], ["bookinfo.example.com"], ["bookinfo.example.com"]),
        (["bookinfo.example.com"], ["bookinfo.example.com", "other.example.com"], ["bookinfo.example.com"]),
        (["*.example.com"], ["a.example.com", "example.com", "a.example.org"], ["a.example.com"]),
        (["bookinfo.example.com"], ["*"], ["bookinfo.example.com"]),  # the narrower host is served
        (["bookinfo/*"], ["a.example.com"], ["a.example.com"]),  # VS namespace allowed
        (["tools/*"], ["a.example.com"], []),  # VS namespace not allowed
        (["./*"], ["a.example.com"], []),  # gateway namespace (istio-system) only
    ],
)
def test_gateway_host_admission(server_hosts: list[str], vs_hosts: list[str], admitted: list[str]) -> None:
    config = ingress(gateway("gw", server_hosts), gateway_vs("front", vs_hosts, ["istio-system/gw"]))
    vhosts = config.routes["http.8080"]["virtual_hosts"]
    assert [vh["name"] for vh in vhosts] == [f"{host}:8080" for host in admitted]
    for vh in vhosts:
        host = vh["name"].removesuffix(":8080")
        assert vh["domains"] == [host]  # the route config ignores the Host's port


def test_gateway_binding_by_name() -> None:
    def served(vs: dict) -> list[str]:
        config = ingress(gateway("gw", ["*"], namespace=NS), vs)
        return [vh["name"] for vh in config.routes["http.8080"]["virtual_hosts"]]

    assert served(gateway_vs("a", ["a.example.com"], ["gw"])) == ["a.example.com:8080"]
    assert served(gateway_vs("a", ["a.example.com"], [f"{NS}/gw"], namespace="tools")) == ["a.example.com:8080"]
    # A bare name means the gateway in the VirtualService's namespace: tools/gw does not exist.
    assert served(gateway_vs("a", ["a.example.com"], ["gw"], namespace="tools")) == []
    assert served(gateway_vs("a", ["a.example.com"], ["other-gw"])) == []
    # Without spec.gateways a VirtualService is for sidecars only.
    assert served(virtual_service("reviews", [{"route": [to("reviews")]}])) == []


def test_gateway_merges_virtual_services_for_one_host() -> None:
    first = virtual_service("a", [{"match": [{"uri": {"prefix": "/a"}}], "route": [to("reviews", "v1")]}],
                            hosts=["shop.example.com"], gateways=["istio-system/gw"])
    second = virtual_service("b", [{"route": [to("ratings")]}],
                             hosts=["shop.example.com"], gateways=["istio-system/gw"])
    config = ingress(gateway("gw", ["*"]), ALL_V1_DR, first, second)
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert [r["route"]["cluster"] for r in vhost["routes"]] == [
        f"outbound|9080|v1|{REVIEWS_HOST}", "outbound|9080||ratings.bookinfo.svc.cluster.local",
    ]


def test_gateway_refuses_non_http_servers() -> None:
    with pytest.raises(UnsupportedResource, match=r"spec\.servers\[0\]\.port\.protocol TCP"):
        ingress(gateway("gw", ["*"], port=9000, protocol="TCP"))


def test_gateway_for_other_selector_is_ignored() -> None:
    other = gateway("gw", ["*"])
    other["spec"]["selector"] = {"istio": "egressgateway"}
    assert ingress(other).listeners == []
