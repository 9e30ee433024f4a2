"""Each traffic check can fail: on each mutant of the local mesh, the features it breaks FAIL.

One `meshconf run` per mutant, selecting (`--feature`) only the features that mutant
breaks; in the profiles that run in seconds (WHOLE_PROFILES), the mutant's whole profile, so
that every other feature there is seen to PASS: the mutant fails exactly its features. The
correct mesh passing the whole catalogue is tests/test_local_e2e.py::test_run_passes_on_correct_mesh.
"""

from pathlib import Path

import pytest
import yaml

from conformance import features
from conformance.targets.local.translator import KNOWN_MUTANTS
from tests.builders import WHOLE_MESH, mesh_processes, meshconf

pytestmark = WHOLE_MESH
# Profiles a mutant test runs whole (a few seconds each on the local target).
WHOLE_PROFILES = {"MESH-INJECTION", "MESH-SECURITY"}

# mutant -> {feature that must fail: text its failure reason must contain}
BREAKS: dict[str, dict[str, str]] = {
    "ignore-weights": {
        "WeightedSplit": "80/20 v1/v2 failed: v2 received",  # an equal split where 80/20 is configured
        "CanaryProgression": "100/0 v1/v3 failed: v3 has weight 0 but received",
        "MeshHTTPRouteWeights": "80/20 v1/v2 failed: v2 received",
    },
    "swap-subsets": {
        "RouteToVersion": "100 v1 failed: v2 is not a destination of the split",
        "WeightedSplit": "80/20 v1/v2 failed: v3 is not a destination of the split",
        "HeaderMatchRouting": "expected all 10 replies from v2",
        "CanaryProgression": "100/0 v1/v3 failed: v2 is not a destination of the split",
        "FaultInjection": "'no healthy upstream'",  # ratings v1 swapped to v2, which has no pods
    },
    "ignore-header-match": {
        "HeaderMatchRouting": "no end-user answered by v1",
        "FaultInjection": "expected all 90 replies with status 200, 90 were not",  # everyone aborted
    },
    "no-fault-injection": {"FaultInjection": "with status 500 and body containing 'fault filter abort'"},
    "no-timeouts": {"RequestTimeout": "expected 504 within 0.18-0.45s for a 0.8s upstream delay"},
    # Every case Istio injects is seen without a sidecar: the four policy cases, the three revision
    # cases, and the dry-run pod in a plain namespace.
    "no-injection": {
        "SidecarInjection": "6 of 14 injection cases differ from Istio's policy",
        "RevisionInjection": "5 of 5 revision cases differ from Istio's revision selection",
        "WebhookConfiguration": "1 of 28 webhook checks differ from what Istio installs",
    },
    # Only the annotation reaches the injector: the webhooks' selectors exclude a pod labelled false.
    "inject-opted-out": {"SidecarInjection": "1 of 14 injection cases differ from Istio's policy"},
    # The four injector webhooks fail open.
    "webhook-fail-open": {"WebhookConfiguration": "4 of 28 webhook checks differ from what Istio installs"},
    # The three canary cases injected by the default istiod; the two default-revision cases stay right.
    "revision-ignored": {"RevisionInjection": "3 of 5 revision cases differ from Istio's revision selection"},
    # STRICT served as PERMISSIVE: plaintext is answered wherever STRICT should refuse it.
    "strict-as-permissive": {
        "MutualTLSStrict": "namespace STRICT refuses plaintext: not converged",
        "MutualTLSMigration": "STRICT refuses plaintext: not converged",
        "PortLevelMTLS": "port 8080 STRICT under a PERMISSIVE namespace refuses plaintext: not converged",
        "DestinationRuleTLS": "tls DISABLE toward a STRICT server fails: not converged",
    },
    # No client certificate asked for: the server never sees who calls, so principals match nothing.
    "no-peer-verification": {
        "MutualTLSStrict": "X-Forwarded-Client-Cert: absent",
        "MutualTLSPermissive": "X-Forwarded-Client-Cert: absent",
        "DestinationRuleTLS": "X-Forwarded-Client-Cert: absent",
        "AuthorizationPolicy": "ALLOW by principal takes effect for curl GET /headers: not converged",
    },
    # One identity for every workload: the server sees it instead of the client's.
    "shared-identity": {
        "MutualTLSStrict": "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/default",
        "MutualTLSPermissive": "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/default",
        "DestinationRuleTLS": "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/default",
        "AuthorizationPolicy": "ALLOW by principal takes effect for curl GET /headers: not converged",
    },
    "authz-ignored": {"AuthorizationPolicy": "ALLOW by principal takes effect for curl GET /ip: not converged"},
    "no-circuit-breaker": {"CircuitBreaking": "0 of 20 concurrent requests refused as overflow"},
    "no-outlier-detection": {"OutlierDetection": "the failing endpoint is ejected: not converged"},
    "no-retries": {"Retries": "upstream_rq_retry +0 over a probe (attempts 2)"},
    # Every request counted, under the other end's names: none where the requests went.
    "metrics-swapped-labels": {"StandardMetrics": "source curl -> reviews-v2 +0 (sent 20)"},
    "metrics-undercount": {"StandardMetrics": "istio_requests_total: expected each edge to increase by exactly its requests"},
    # Envoys killed and restarted by each change: the load's requests fail, named with their moments.
    "switch-drops-requests": {
        "ConfigChangeUnderLoad": "requests failed, relative to the change: #",
        "BlueGreen": "requests failed during the switch, relative to the change: #",
    },
    # Five invalid resources stored, and one refused by the local mesh's own limits, not by Istio.
    "validation-off": {"ValidationWebhook": "6 of 8 validation cases differ from Istio's validation"},
    # The unserved name gets the served host's certificate instead of a refused handshake.
    "gateway-ignores-sni": {"IngressTLS": "SNI unserved.meshconf.test got bookinfo-tls.meshconf.test's certificate"},
    # The gateway Istio deploys for the Gateway runs, and the Gateway is Programmed, but nothing listens.
    "gateway-api-ignored": {"GatewayAPIIngress": "answers through the Gateway API Gateway: not converged"},
}


def test_every_mutant_is_covered() -> None:
    assert set(BREAKS) == set(KNOWN_MUTANTS)
    catalogue = {f.name for f in features.CATALOGUE}
    for mutant, broken in BREAKS.items():
        assert broken, f"{mutant} breaks no feature"
        assert set(broken) <= catalogue, f"{mutant}: not in the catalogue: {sorted(set(broken) - catalogue)}"


@pytest.mark.parametrize("mutant", list(BREAKS))
def test_mutant_fails_the_features_it_breaks(tmp_path: Path, mutant: str) -> None:
    expected = BREAKS[mutant]
    args = ["run", "--target", "local", "--local-mutant", mutant, "--consistency-timeout", "3"]
    profile = {f.name: f.profile for f in features.CATALOGUE}
    whole = sorted({profile[name] for name in expected} & WHOLE_PROFILES)
    for name in expected:
        if profile[name] not in whole:
            args += ["--feature", name]
    for name in whole:
        args += ["--profile", name]
    done = meshconf(args, cwd=tmp_path)
    report = yaml.safe_load((tmp_path / "results" / "report.yaml").read_text())
    outcome = {f["name"]: f for f in report["features"]}
    reasons = {n: f.get("reason", "")[:300] for n, f in outcome.items()}
    ran = set(expected) | {f.name for f in features.CATALOGUE if f.profile in whole}
    assert set(outcome) == ran, reasons
    failed = {name for name, f in outcome.items() if f["outcome"] == "FAILED"}
    assert failed == set(expected), reasons
    assert all(outcome[name]["outcome"] == "PASSED" for name in ran - failed), reasons
    for name, text in expected.items():
        assert text in outcome[name]["reason"], f"{name}: {outcome[name]['reason']}"
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert mesh_processes(str(tmp_path)) == []
