"""The suites' fixtures against a recording fake target: cleanup on every path."""

import pytest


CONFTEST = '''
from contextlib import contextmanager
import pytest
pytest_plugins = ["conformance.fixtures.mesh"]  # as suites/conftest.py loads them; target is replaced below

CALLS = []


class Fake:
    name = "fake"

    def supports(self, feature):
        return feature != "IngressGateway"

    @contextmanager
    def namespace(self, name, labels):
        CALLS.append(("ns+", name, labels.get("meshconf.dev/run-id") is not None))
        yield name
        CALLS.append(("ns-", name))

    def apply(self, docs, ns):
        CALLS.append(("apply", ns, tuple(d["kind"] for d in docs)))

    def delete(self, docs, ns):
        CALLS.append(("delete", ns, tuple(d["kind"] for d in docs)))

    def wait_ready(self, ns):
        pass

    def client(self, name, ns):
        return None

    def collect_debug(self, directory):
        directory.mkdir(parents=True)
        (directory / "pod.log").write_text("log")


@pytest.fixture(scope="session")
def target():
    yield Fake()
    print("CALLS", CALLS)
'''

SUITE = '''
import pytest

@pytest.mark.feature("RouteToVersion")
def test_fails_after_apply(applied, namespace):
    ns = namespace("extra", {"istio-injection": "enabled"})
    applied("istio/traffic/destination-rule-all.yaml")
    applied("istio/traffic/virtual-service-all-v1.yaml", namespace=ns)
    assert False, "deliberate"

@pytest.mark.feature("IngressGateway")
def test_unsupported(applied):
    raise AssertionError("must not run")
'''


def test_cleanup_and_not_supported(pytester: pytest.Pytester) -> None:
    suites = pytester.mkpydir("suites")
    (suites / "conftest.py").write_text(CONFTEST)
    (suites / "test_s.py").write_text(SUITE)
    report = pytester.path / "report.yaml"
    result = pytester.runpytest_subprocess(
        str(suites), "-s", "--target", "local", "--report", str(report), "-p", "no:cacheprovider",
        "--rootdir", str(pytester.path),
    )
    result.assert_outcomes(failed=1, skipped=1)
    calls = next(line for line in result.outlines if "CALLS" in line).split("CALLS", 1)[1]
    # Bookinfo's and the legacy client's namespaces first; the test's config applied in order and
    # removed in reverse, then its extra namespace, then the session's; the run label always set.
    order = [c.split(",")[0].strip("[( '") for c in calls.split("), (")]
    assert order == ["ns+", "ns+", "apply", "apply", "ns+", "apply", "apply", "delete", "delete",
                     "ns-", "ns-", "ns-"], calls
    assert "True" in calls and "False" not in calls
    text = report.read_text()
    assert "outcome: NOT_SUPPORTED" in text and "outcome: FAILED" in text and "deliberate" in text
    assert (pytester.path / "debug").is_dir()  # the failed test's bundle, next to the report
