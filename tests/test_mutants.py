"""Each traffic check can fail: on each mutant of the local mesh, exactly the features it breaks FAIL.

One `meshconf run --profile MESH-TRAFFIC` per mutant, plus the correct mesh, which must pass.
"""

from pathlib import Path

import pytest
import yaml

from conformance import features
from conformance.targets.local.translator import KNOWN_MUTANTS
from tests.conftest import mesh_processes, meshconf

TRAFFIC = {f.name for f in features.CATALOGUE if f.profile == "MESH-TRAFFIC"}

# mutant -> {feature that must fail: text its failure reason must contain}
BREAKS: dict[str | None, dict[str, str]] = {
    None: {},
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
    "no-timeouts": {"RequestTimeout": "expected 504 within 0.195-0.45s for a 0.8s upstream delay"},
}


def test_every_mutant_is_covered() -> None:
    assert set(BREAKS) - {None} == set(KNOWN_MUTANTS)


@pytest.mark.parametrize("mutant", list(BREAKS), ids=lambda m: m or "correct-mesh")
def test_traffic_profile_on_mutant(tmp_path: Path, mutant: str | None) -> None:
    args = ["run", "--target", "local", "--profile", "MESH-TRAFFIC", "--consistency-timeout", "3"]
    if mutant:
        args += ["--local-mutant", mutant]
    done = meshconf(args, cwd=tmp_path)
    report = yaml.safe_load((tmp_path / "results" / "report.yaml").read_text())
    outcome = {f["name"]: f for f in report["features"]}
    assert set(outcome) == TRAFFIC
    failed = {name for name, f in outcome.items() if f["outcome"] == "FAILED"}
    expected = BREAKS[mutant]
    assert failed == set(expected), {n: f.get("reason", "")[:300] for n, f in outcome.items()}
    for name, text in expected.items():
        assert text in outcome[name]["reason"], f"{name}: {outcome[name]['reason']}"
    passed = {name for name, f in outcome.items() if f["outcome"] == "PASSED"}
    assert passed == TRAFFIC - set(expected)
    assert done.returncode == (1 if expected else 0), done.stdout[-2000:]
    assert mesh_processes(str(tmp_path)) == []
