"""The ways in side by side: measured in the suites, carried as user properties, shown by the YAML
report, the terminal summary and an Allure table."""

import pytest
import yaml

from conformance import features
from conformance.plugin import FEATURE_PROPERTY, Recorder
from conformance.probes.latency import WAY_PROPERTY, WayLatency, ways_table
from conformance.report.conformance_report import build
from conformance.report.results import MeasuredWay, Outcome, ResultBook
from conformance.report.summary import render
from conformance.stash import BOOK

GATEWAY_API = features.get("GatewayAPIIngress")
INGRESS = features.get("KubernetesIngress")
ROUTE = features.get("RouteToVersion")
ISTIO_1 = WayLatency("Istio Gateway", 20, {200: 20}, 2.04, 3.5)
GATEWAY_WAY = WayLatency("Gateway API Gateway", 20, {200: 20}, 2.5, 4.25)
ISTIO_2 = WayLatency("Istio Gateway", 20, {200: 20}, 1.9, 3.0)
INGRESS_WAY = WayLatency("Kubernetes Ingress", 20, {503: 2, 200: 18}, 2.2, 9.0)


def phase(nodeid: str, feature: features.Feature, when: str, outcome: str, *ways: WayLatency) -> pytest.TestReport:
    """A phase's report as pytest (or pytest-xdist's controller) hands it to the recorder: every phase
    carries the test's whole list of user properties."""
    properties = [(FEATURE_PROPERTY, feature.name), *((WAY_PROPERTY, w.to_property()) for w in ways)]
    longrepr = None if outcome == "passed" else "AssertionError: 2 were not 200"
    return pytest.TestReport(nodeid, ("f", 0, "t"), {}, outcome, longrepr, when, user_properties=properties)


def record_run(gateway_api: str = "passed", ingress: str = "passed") -> ResultBook:
    """Both features' tests, as a run records them: setup, call, teardown."""
    book = ResultBook(selected=[GATEWAY_API, INGRESS])
    recorder = Recorder(type("Config", (), {"stash": {BOOK: book}})())  # type: ignore[arg-type]
    # KubernetesIngress reported first (another worker finished first): rows still follow the catalogue.
    for nodeid, feature, call, ways in (("k", INGRESS, ingress, (INGRESS_WAY, ISTIO_2)),
                                        ("g", GATEWAY_API, gateway_api, (GATEWAY_WAY, ISTIO_1))):
        for when in ("setup", "call", "teardown"):
            recorder.pytest_runtest_logreport(phase(nodeid, feature, when, call if when == "call" else "passed", *ways))
    return book


def test_a_way_travels_as_json_text_and_comes_back_equal() -> None:
    text = INGRESS_WAY.to_property()
    assert isinstance(text, str) and '"503": 2' in text  # JUnit's <property> shows it as it is
    assert WayLatency.from_property(text) == INGRESS_WAY


def test_the_recorder_keeps_each_ways_call_once_in_catalogue_order() -> None:
    book = record_run()
    assert [r.ways for r in book.records] == [[INGRESS_WAY, ISTIO_2], [GATEWAY_WAY, ISTIO_1]]  # not x3 phases
    assert book.measured_ways() == [
        MeasuredWay(GATEWAY_API, Outcome.PASSED, GATEWAY_WAY), MeasuredWay(GATEWAY_API, Outcome.PASSED, ISTIO_1),
        MeasuredWay(INGRESS, Outcome.PASSED, INGRESS_WAY), MeasuredWay(INGRESS, Outcome.PASSED, ISTIO_2),
    ]


def test_the_report_section_has_one_row_per_way_measured_the_istio_gateway_once_per_feature() -> None:
    section = build(record_run(ingress="failed"))["ingressComparison"]
    assert section == [
        {"way": "Gateway API Gateway", "feature": "GatewayAPIIngress", "outcome": "PASSED", "requests": 20,
         "statuses": {200: 20}, "p50Ms": 2.5, "p95Ms": 4.25},
        {"way": "Istio Gateway", "feature": "GatewayAPIIngress", "outcome": "PASSED", "requests": 20,
         "statuses": {200: 20}, "p50Ms": 2.04, "p95Ms": 3.5},
        # measured, then failed: its rows stay, beside the feature's outcome
        {"way": "Kubernetes Ingress", "feature": "KubernetesIngress", "outcome": "FAILED", "requests": 20,
         "statuses": {200: 18, 503: 2}, "p50Ms": 2.2, "p95Ms": 9.0},
        {"way": "Istio Gateway", "feature": "KubernetesIngress", "outcome": "FAILED", "requests": 20,
         "statuses": {200: 20}, "p50Ms": 1.9, "p95Ms": 3.0},
    ]
    assert yaml.safe_load(yaml.safe_dump(section)) == section


def cells(text: str, title: str) -> list[list[str]]:
    """The header and rows of the rich table under `title`, each as its stripped cells."""
    lines = [line.rstrip() for line in text.splitlines()]  # rich pads a title to the table's width
    below = lines[lines.index(title) + 1:]
    rows = [line.replace("┃", "│") for line in below if line.startswith(("│", "┃"))]  # rich draws the header's bars bold
    return [[c.strip() for c in row.split("│")[1:-1]] for row in rows]


def test_the_terminal_summary_prints_the_ways_side_by_side() -> None:
    text = render(record_run(ingress="failed"), width=140)
    assert cells(text, "ways in: the same page through each") == [
        ["feature", "outcome", "way", "requests", "statuses", "p50 ms", "p95 ms"],
        ["GatewayAPIIngress", "PASSED", "Gateway API Gateway", "20", "20 x 200", "2.5", "4.2"],
        ["GatewayAPIIngress", "PASSED", "Istio Gateway", "20", "20 x 200", "2.0", "3.5"],
        ["KubernetesIngress", "FAILED", "Kubernetes Ingress", "20", "18 x 200, 2 x 503", "2.2", "9.0"],
        ["KubernetesIngress", "FAILED", "Istio Gateway", "20", "20 x 200", "1.9", "3.0"],
    ]


def test_nothing_when_no_way_was_measured() -> None:
    # Neither feature selected (--profile MESH-TRAFFIC), or both NOT_SUPPORTED before measuring.
    book = ResultBook(selected=[ROUTE, GATEWAY_API])
    book.record("r", ROUTE, "call", Outcome.PASSED, "held")
    book.record("g", GATEWAY_API, "setup", Outcome.NOT_SUPPORTED, "GatewayAPIIngress on target x")
    assert book.measured_ways() == []
    assert "ingressComparison" not in build(book)
    assert "ways in" not in render(book)


def test_the_allure_table_is_plain_text_columns() -> None:
    assert ways_table([ISTIO_1, INGRESS_WAY]).splitlines() == [
        "way                 requests  statuses           p50 ms  p95 ms",
        "Istio Gateway       20        20 x 200           2.0     3.5",
        "Kubernetes Ingress  20        18 x 200, 2 x 503  2.2     9.0",
    ]


CONFTEST = '''
import pytest
pytest_plugins = ["conformance.fixtures.mesh"]


class Fake:
    name = "fake"

    def supports(self, feature):
        return True


@pytest.fixture(scope="session")
def target():
    yield Fake()
'''

SUITE = '''
import pytest
from conformance.probes.latency import WayLatency

@pytest.mark.feature("GatewayAPIIngress")
def test_gateway_api(record_way, evidence):
    record_way(WayLatency("Gateway API Gateway", 20, {200: 20}, 2.5, 4.0))
    record_way(WayLatency("Istio Gateway", 20, {200: 20}, 2.0, 3.0))
    evidence("compared")

@pytest.mark.feature("KubernetesIngress")
def test_kubernetes_ingress(record_way):
    record_way(WayLatency("Kubernetes Ingress", 20, {503: 20}, 1.0, 2.0))
    assert False, "20 were not 200"

@pytest.mark.feature("RouteToVersion")
def test_route():
    pass
'''


def run_suite(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    suites = pytester.mkpydir("suites")
    (suites / "conftest.py").write_text(CONFTEST)
    (suites / "test_s.py").write_text(SUITE)
    report = pytester.path / "report.yaml"
    result = pytester.runpytest_subprocess(
        str(suites), "--target", "local", "--report", str(report), "-p", "no:cacheprovider", "-p", "no:randomly",
        "--rootdir", str(pytester.path), *args)
    return result, yaml.safe_load(report.read_text())


def test_ways_cross_from_xdist_workers_into_the_report_and_the_summary(pytester: pytest.Pytester) -> None:
    result, report = run_suite(pytester, "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    assert [(r["feature"], r["way"], r["outcome"], r["statuses"]) for r in report["ingressComparison"]] == [
        ("GatewayAPIIngress", "Gateway API Gateway", "PASSED", {200: 20}),
        ("GatewayAPIIngress", "Istio Gateway", "PASSED", {200: 20}),
        ("KubernetesIngress", "Kubernetes Ingress", "FAILED", {503: 20}),
    ]
    result.stdout.fnmatch_lines(["ways in: the same page through each*",
                                 "*KubernetesIngress*FAILED*Kubernetes Ingress*20 x 503*1.0*2.0*"])


def test_a_run_without_the_ingress_features_writes_and_prints_no_comparison(pytester: pytest.Pytester) -> None:
    result, report = run_suite(pytester, "--profile", "MESH-TRAFFIC")
    result.assert_outcomes(passed=1)
    assert "ingressComparison" not in report and [f["name"] for f in report["features"]] == ["RouteToVersion"]
    assert "ways in" not in result.stdout.str()
