"""conformance.targets.ingress without a cluster: binding the manifests' Gateways to a gateway, and
the options that name one."""

import copy

import pytest

from conformance import cli, manifests, options
from conformance.errors import ConformanceError
from conformance.targets.ingress import GatewayBinding, IngressGateway, parse_selector

BOOKINFO_GATEWAY = "istio/ingress/bookinfo-gateway.yaml"
CHART = GatewayBinding({"istio": "ingress"}, 80)


def test_the_manifests_binding_changes_nothing() -> None:
    docs = manifests.load(BOOKINFO_GATEWAY)
    assert GatewayBinding().is_the_manifests
    assert GatewayBinding().bind(docs) == docs


def test_binding_moves_the_manifests_gateways_and_nothing_else() -> None:
    docs = [*manifests.load(BOOKINFO_GATEWAY), *manifests.load("istio/readiness/gateway.yaml")]
    before = copy.deepcopy(docs)
    bound = CHART.bind(docs)
    assert docs == before  # the caller's documents are not changed in place
    gateways = [d for d in bound if d["kind"] == "Gateway"]
    assert [g["spec"]["selector"] for g in gateways] == [{"istio": "ingress"}] * 2
    assert [s["port"]["number"] for g in gateways for s in g["spec"]["servers"]] == [80, 80]
    assert [d for d in bound if d["kind"] != "Gateway"] == [d for d in docs if d["kind"] != "Gateway"]


def test_binding_leaves_other_gateways_alone() -> None:
    own = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "mine"},
           "spec": {"selector": {"istio": "egressgateway"}, "servers": [{"port": {"number": 8080}}]}}
    kubernetes = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "k"},
                  "spec": {"gatewayClassName": "istio", "listeners": [{"port": 8080, "protocol": "HTTP"}]}}
    https = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "tls"},
             "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 8443}}]}}
    bound = CHART.bind([own, kubernetes, https])
    assert bound[:2] == [own, kubernetes]
    assert bound[2]["spec"] == {"selector": {"istio": "ingress"}, "servers": [{"port": {"number": 8443}}]}


def test_the_description_says_what_was_bound_and_why() -> None:
    assert CHART.describe() == (
        "Istio Gateways bound to the ingress gateway istio=ingress on port 80, its Service's http2 targetPort "
        "(the manifests say istio=ingressgateway on port 8080)")


@pytest.mark.parametrize(("address", "url"), [
    ("203.0.113.7", "http://203.0.113.7:80"), ("lb.example.test", "http://lb.example.test:80"),
    ("2001:db8::7", "http://[2001:db8::7]:80"), (None, None)])
def test_the_load_balancer_url(address: str | None, url: str | None) -> None:
    assert IngressGateway("istio-ingress", "istio-ingress", {"istio": "ingress"}, 80, 80, address).url == url


@pytest.mark.parametrize("text", ["istio", "=ingress", "istio=", "istio=ingress,app=x"])
def test_a_selector_is_one_label(text: str) -> None:
    with pytest.raises(ConformanceError, match="is not a pod label like istio=ingress"):
        parse_selector(text)


def test_the_ingress_options_reach_the_settings_and_pytest() -> None:
    args = cli.parser().parse_args(["run", "--context", "c", "--ingress-selector", "istio=ingress",
                                    "--ingress-namespace", "istio-ingress"])
    settings = cli.settings_from(args, "kubeconfig")
    assert (settings.ingress_selector, settings.ingress_namespace) == ("istio=ingress", "istio-ingress")
    pytest_args = options.as_pytest_args(args)
    assert pytest_args[pytest_args.index("--ingress-selector") + 1] == "istio=ingress"
    assert pytest_args[pytest_args.index("--ingress-namespace") + 1] == "istio-ingress"
    assert "--ingress-selector" not in options.as_pytest_args(cli.parser().parse_args(["run"]))
    on_kind = cli.parser().parse_args(["run", "--ingress-namespace", "istio-ingress"])
    with pytest.raises(ConformanceError, match="--ingress-namespace does not apply to target kind"):
        options.check_applicable(on_kind, "kind")


def test_a_bad_ingress_selector_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--ingress-selector", "ingress"])
    assert caught.value.code == 2
    assert "argument --ingress-selector: 'ingress' is not a pod label like istio=ingress" in capsys.readouterr().err
