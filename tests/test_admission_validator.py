"""The local istiod's validation webhook: Istio's rules for the resources ValidationWebhook
exercises (istio/istio pkg/config/validation, tag 1.26.0), each on both sides, and the webhook
called over HTTPS through the mesh's admission as the API server calls it."""


import pytest

from conformance.targets.local.admission.control import AdmissionControl
from conformance.targets.local.admission.review import AdmissionRefused
from conformance.targets.local.admission.validator import review_response, validation_errors
from conformance.targets.local.translator.mutants import VALIDATION_OFF

ROUTE = [{"destination": {"host": "httpbin"}}]


def vs(**spec: object) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v"},
            "spec": {"hosts": ["httpbin"], **spec}}


def weighted(*weights: int | None) -> list[dict]:
    return [{"destination": {"host": f"h{n}"}, **({} if w is None else {"weight": w})} for n, w in enumerate(weights)]


@pytest.mark.parametrize(("doc", "errors"), [
    (vs(http=[{"route": ROUTE}]), []),
    (vs(), ["http, tcp or tls must be provided in virtual service"]),
    (vs(tcp=[{"route": ROUTE}]), []),
    (vs(http=[{"route": ROUTE, "redirect": {"uri": "/x"}}]), ["HTTP route cannot contain both route and redirect"]),
    (vs(http=[{"redirect": {"uri": "/x"}}]), []),
    (vs(http=[{"route": weighted(0, 0)}]), ["total destination weight = 0"]),
    (vs(http=[{"route": weighted(None, None)}]), ["total destination weight = 0"]),
    (vs(http=[{"route": weighted(30, 30)}]), []),  # not summing to 100 is accepted in 1.26-1.30
    (vs(http=[{"route": weighted(0)}]), []),  # one destination: its weight is not looked at
    (vs(http=[{"route": weighted(-5, 105)}]), ["weight -5 < 0"]),
    (vs(http=[{"match": [{"uri": {"regex": "/a.*"}}], "route": ROUTE}]), []),
    (vs(http=[{"match": [{"headers": {"x": {"regex": "(?!y)"}}}], "route": ROUTE}]),
     ['"headers": error parsing regexp: invalid perl operator: (?!; Istio uses RE2 style regex-based '
      "match (https://github.com/google/re2/wiki/Syntax)"]),
    (vs(http=[{"match": [{"uri": {"regex": "(unclosed"}}], "route": ROUTE}]),
     ['"uri": error parsing regexp: missing ): (unclosed; Istio uses RE2 style regex-based '
      "match (https://github.com/google/re2/wiki/Syntax)"]),
    (vs(http=[{"match": [{"uri": {"regex": r"/\p{L}+[[:alpha:]]"}}], "route": ROUTE}]), []),  # RE2, not Python
    (vs(http=[{"match": [{"uri": {"regex": "a++"}}], "route": ROUTE}]), None),  # Python's, not RE2
    ({"kind": "DestinationRule", "spec": {"host": "h", "subsets": [{"name": "v1"}, {"name": "v1"}]}},
     ["duplicate subset names: v1"]),
    ({"kind": "DestinationRule", "spec": {"host": "h", "subsets": [{"name": "v1"}]}}, []),  # no labels: valid
    ({"kind": "Gateway", "spec": {"selector": {"istio": "ingressgateway"}}}, ["gateway must have at least one server"]),
    ({"kind": "Gateway", "spec": {"servers": [{"port": {"number": 80, "name": "h", "protocol": "HTTP"},
                                               "hosts": ["*"]}]}}, []),
    ({"kind": "Sidecar", "spec": {}}, []),  # a kind these rules do not cover passes
], ids=lambda v: None)
def test_istios_rules(doc: dict, errors: list[str] | None) -> None:
    found = validation_errors(doc)
    if errors is None:  # refused in RE2's words
        assert len(found) == 1 and found[0].startswith('"uri": error parsing regexp: bad repetition operator')
    else:
        assert found == errors


def test_the_answer_is_an_admission_review_with_istios_words_or_allowed() -> None:
    review = {"request": {"uid": "u1", "object": vs()}}
    denied = review_response(review)["response"]
    assert denied == {"uid": "u1", "allowed": False, "status": {
        "code": 400, "reason": "BadRequest",
        "message": "configuration is invalid: http, tcp or tls must be provided in virtual service"}}
    assert review_response(review, frozenset({VALIDATION_OFF}))["response"] == {"uid": "u1", "allowed": True}


def test_the_api_server_gets_the_denial_over_https_and_words_it(admission_control: AdmissionControl) -> None:
    webhooks = admission_control.istiod_webhooks()
    with pytest.raises(AdmissionRefused) as refused:
        admission_control.admit_object(vs(), "CREATE", "shop", {}, webhooks)
    assert str(refused.value) == ('admission webhook "validation.istio.io" denied the request: '
                                  "configuration is invalid: http, tcp or tls must be provided in virtual service")
    admission_control.admit_object(vs(http=[{"route": ROUTE}]), "UPDATE", "shop", {}, webhooks)  # valid: admitted
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}
    admission_control.admit_object(deployment, "CREATE", "shop", {}, webhooks)  # no rule selects it: no call
