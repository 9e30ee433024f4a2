"""The local mesh's check of Istio documents (check_supported): what it accepts, and what it refuses by path."""

import json
import subprocess
import sys

import pytest

from conformance.errors import UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from tests.builders import (
    ALL_V1_DR,
    ISTIO_API,
    NS,
    gateway,
    load_reference,
    mesh,
    metadata,
    sidecar,
    to,
    virtual_service,
)
from tests.builders import UPSTREAM

# ---------------------------------------------------------------------------------------------
# check_supported


def test_refused_field_is_named_by_path() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "mirror": {"host": "reviews", "subset": "v2"}}])
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(vs)
    assert str(refused.value) == (
        "VirtualService bookinfo/reviews: field spec.http[0].mirror is not implemented by the local mesh"
    )


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}},
         "spec.trafficPolicy.loadBalancer"),
        (virtual_service("r", [{"match": [{"uri": {"exact": "/"}, "ignoreUriCase": True}], "route": [to("r")]}]),
         r"spec.http\[0\].match\[0\].ignoreUriCase"),
        (virtual_service("r", [{"match": [{"headers": {"end-user": {"exact": "x", "bogus": 1}}}], "route": [to("r")]}]),
         r"spec.http\[0\].match\[0\].headers.end-user.bogus"),
        (virtual_service("r", [{"route": [{"destination": {"host": "r", "port": {"name": "http"}}}]}]),
         r"spec.http\[0\].route\[0\].destination.port.name"),
        ({**virtual_service("r", []), "spec": {"hosts": ["r"], "tcp": []}}, "spec.tcp"),
        ({**gateway("gw", ["*"]), "spec": {"servers": [{"port": {"number": 1, "protocol": "HTTPS"},
                                                         "tls": {"mode": "SIMPLE", "minProtocolVersion": "TLSV1_3"}}]}},
         r"spec.servers\[0\].tls.minProtocolVersion"),
    ],
)
def test_refused_fields(doc: dict, path: str) -> None:
    with pytest.raises(UnsupportedResource, match=f"field {path} is not implemented by the local mesh"):
        check_supported(doc)


def test_export_to_only_everywhere() -> None:
    check_supported({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "exportTo": ["*"]}})
    with pytest.raises(UnsupportedResource, match=r"spec\.exportTo"):
        check_supported({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "exportTo": ["."]}})


def test_unknown_kind_and_version_are_refused() -> None:
    with pytest.raises(UnsupportedResource, match="kind 'ServiceEntry'"):
        check_supported({"apiVersion": ISTIO_API, "kind": "ServiceEntry", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="field spec.gatewayClassName None is not implemented"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="kind 'GRPCRoute'"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="apiVersion 'gateway.networking.k8s.io/v1alpha2'"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "HTTPRoute",
                         "metadata": metadata("x", NS)})


def test_translate_refuses_unimplemented_fields_too() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": {"attempts": 3, "backoff": "1s"}}])
    with pytest.raises(UnsupportedResource, match=r"spec\.http\[0\]\.retries\.backoff"):
        sidecar(mesh(vs))


ACCEPTED_SAMPLES = [
    "bookinfo-gateway", "destination-rule-all", "virtual-service-all-v1", "virtual-service-reviews-80-20",
    "virtual-service-reviews-50-v3", "virtual-service-reviews-test-v2", "virtual-service-reviews-v3",
    "virtual-service-ratings-test-abort", "virtual-service-ratings-test-delay", "destination-rule-all-mtls",
]


@pytest.mark.parametrize("sample", ACCEPTED_SAMPLES)
def test_bookinfo_samples_with_implemented_fields_are_accepted(sample: str) -> None:
    for doc in load_reference(sample):
        check_supported(doc)


def test_reference_samples_are_all_classified() -> None:
    found = {p.name.removeprefix("bookinfo__networking__").removesuffix(".yaml")
             for p in (UPSTREAM / "istio").glob("bookinfo__networking__*.yaml")}
    assert found == set(ACCEPTED_SAMPLES)


def test_the_subset_check_loads_no_translator_module() -> None:
    """istio_subset.py and the translator parse durations and HTTP statuses with one module
    (istio_values.py) and name the mesh gateway once (conformance.names): checking a
    VirtualService's retries and hosts for sidecars needs no translator module."""
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": {"attempts": 2, "perTryTimeout": "1s",
                                                                             "retryOn": "503,5xx"}}])
    code = ("import json, sys\n"
            "from conformance.targets.local.istio_subset import check_supported\n"
            f"check_supported(json.loads({json.dumps(json.dumps(vs))}))\n"
            "print(sorted(name for name in sys.modules if '.translator' in name))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
