"""Traffic-split verdicts: both sides of the decision, the exact statistics, the report pieces."""

import json
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from scipy import stats

from conformance import verdicts
from conformance.report.charts import split_chart
from conformance.verdicts import (
    ACCEPT,
    CONTINUE,
    REJECT,
    SequentialSplit,
    SplitVerdict,
    binomial_pvalues,
    decide_split,
    fixed_sample_n,
    plan_split,
    run_split,
    split_label,
)
from conformance.verdicts import joint, sequential, splits

Send = Callable[[int], Mapping[str, int]]


def sender(true: Mapping[str, float], seed: int) -> Send:
    """Envoy's weighted pick, simulated: each batch multinomial with the true shares."""
    rng = np.random.default_rng(seed)
    names, shares = list(true), np.array(list(true.values()), dtype=float)
    shares = shares / shares.sum()

    def send(k: int) -> Mapping[str, int]:
        return dict(zip(names, (int(c) for c in rng.multinomial(k, shares))))

    return send


def problem(verdict: SplitVerdict) -> str:
    """The line of a failure message that says what is wrong (the rest is the table)."""
    return next(line for line in verdict.message.splitlines() if " received " in line)


def within_noise(observed: float, exact: float, runs: int, sigmas: float = 4.0) -> bool:
    return abs(observed - exact) <= sigmas * math.sqrt(exact * (1 - exact) / runs) + 1e-12


# --- both sides of the decision ---------------------------------------------


@pytest.mark.parametrize(
    "weights, seed",
    [({"v1": 80, "v2": 20}, 1), ({"v1": 50, "v2": 50}, 2), ({"v1": 90, "v2": 10, "v3": 0}, 3), ({"v1": 100}, 4)],
)
def test_correct_split_passes(weights: dict[str, float], seed: int) -> None:
    plan = plan_split(weights)
    verdict = run_split(sender(weights, seed), plan)
    assert verdict.ok, verdict.message
    assert verdict.message.startswith(f"{split_label(plan.weights)} held: {verdict.n} requests")
    assert verdict.n <= plan.max_requests


def test_correct_three_way_split_passes() -> None:
    weights = {"v1": 50, "v2": 30, "v3": 20}
    verdict = run_split(sender(weights, 5), plan_split(weights))
    assert verdict.ok, verdict.message


@pytest.mark.parametrize(
    "expected, true, culprit",
    [
        ({"v1": 80, "v2": 20}, {"v1": 70, "v2": 30}, "v2"),
        ({"v1": 80, "v2": 20}, {"v1": 75, "v2": 25}, "v2"),
        ({"v1": 80, "v2": 20}, {"v1": 85, "v2": 15}, "v2"),
        ({"v1": 50, "v2": 50}, {"v1": 45, "v2": 55}, "v1"),
    ],
)
def test_wrong_split_fails_naming_the_destination(
    expected: dict[str, float], true: dict[str, float], culprit: str
) -> None:
    verdict = run_split(sender(true, 11), plan_split(expected))
    assert not verdict.ok
    line = problem(verdict)
    assert f"{culprit} received " in line and "expected" in line, line
    assert verdict.table() in verdict.message
    assert verdict.reason in ("sequential test rejected", "fixed-sample exact test")


def test_three_way_deviation_names_a_deviating_destination() -> None:
    verdict = run_split(sender({"v1": 50, "v2": 22, "v3": 28}, 12), plan_split({"v1": 50, "v2": 30, "v3": 20}))
    assert not verdict.ok
    line = problem(verdict)
    assert "v2 received " in line or "v3 received " in line, line


def test_zero_weight_destination_hit_fails_at_once() -> None:
    plan = plan_split({"v1": 80, "v2": 20, "v3": 0})
    split = SequentialSplit(plan)
    verdict = split.add({"v1": 40, "v2": 9, "v3": 1})
    assert verdict is not None and not verdict.ok
    assert verdict.reason == "unexpected destination"
    assert "v3 has weight 0 but received 1 request" in verdict.message


def test_unnamed_destination_fails() -> None:
    plan = plan_split({"v1": 80, "v2": 20})
    verdict = decide_split({"v1": 80, "v2": 20}, {"v1": 39, "v2": 10, "<error>": 1}, plan)
    assert not verdict.ok
    assert "<error> is not a destination of the split but received 1 request" in verdict.message
    assert [r.destination for r in verdict.rows] == ["v1", "v2", "<error>"]


def test_single_destination_plan_is_90_requests_and_any_leak_fails() -> None:
    plan = plan_split({"v1": 100})
    assert (plan.max_requests, plan.fixed_n, plan.expected_requests) == (90, 90, 90.0)
    assert plan.exact_power == pytest.approx(1 - 0.95**90) and plan.exact_power >= 0.99 > 1 - 0.95**89
    asked: list[int] = []

    def all_v1(k: int) -> dict[str, int]:
        asked.append(k)
        return {"v1": k}

    assert run_split(all_v1, plan).ok and asked == [50, 40]
    leak = run_split(lambda k: {"v1": k - 1, "v2": 1}, plan)
    assert not leak.ok and leak.n == 50 and "v2 is not a destination" in leak.message


def test_batches_must_match_the_plan() -> None:
    split = SequentialSplit(plan_split({"v1": 80, "v2": 20}))
    with pytest.raises(ValueError, match="expected a batch of 50"):
        split.add({"v1": 40, "v2": 8})


def test_fixed_sample_decision_at_fixed_n() -> None:
    plan = plan_split({"v1": 80, "v2": 20})
    n = plan.fixed_n
    good = decide_split(plan.weights, {"v1": round(0.8 * n), "v2": n - round(0.8 * n)}, plan, fixed=True)
    assert good.ok and good.reason == "fixed-sample exact test"
    bad = decide_split(plan.weights, {"v1": round(0.75 * n), "v2": n - round(0.75 * n)}, plan, fixed=True)
    assert not bad.ok
    assert problem(bad).endswith("<= 1e-04/1)")


def test_weights_may_be_percents_or_fractions_and_must_match_the_plan() -> None:
    assert plan_split({"v1": 80, "v2": 20}) is plan_split({"v1": 0.8, "v2": 0.2})  # cached, same key
    with pytest.raises(ValueError):
        decide_split({"v1": 50, "v2": 50}, {"v1": 25, "v2": 25}, plan_split({"v1": 80, "v2": 20}))


# --- the statistics ---------------------------------------------------------


def test_vectorised_pvalues_equal_scipy_binomtest() -> None:
    for n in (1, 2, 5, 13, 50, 100, 333, 1000):
        for p in (0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.8, 0.95):
            ours = binomial_pvalues(n, p)
            xs = range(n + 1) if n <= 100 else range(0, n + 1, 7)
            for x in xs:
                # abs: below ~1e-280 both sides are in subnormal floats and differ in the last digits
                assert ours[x] == pytest.approx(stats.binomtest(x, n, p).pvalue, rel=1e-9, abs=1e-250), (x, n, p)


def test_plans_meet_their_stated_error_rates() -> None:
    for weights in ({"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v1": 95, "v2": 5}):
        plan = plan_split(weights)
        (test,) = plan.tests.values()
        assert plan.exact_alpha <= plan.alpha and plan.exact_power >= plan.power
        assert min(test.power) >= 0.99 and test.alpha <= 1e-4
        assert plan.max_requests % plan.batch == 0 and plan.expected_requests < plan.fixed_n < plan.max_requests
    three = plan_split({"v1": 50, "v2": 30, "v3": 20})
    assert len(three.tests) == 3 and all(t.level == pytest.approx(1e-4 / 3) for t in three.tests.values())
    assert three.exact_alpha == pytest.approx(sum(t.alpha for t in three.tests.values()))
    assert three.exact_alpha <= 1e-4
    assert max(t.expected_h0 for t in three.tests.values()) < three.expected_requests < three.max_requests
    _, joint_alpha = joint._joint_h0(list(three.tests.values()), three.batch)  # exact overall P(fail | H0)
    assert 0.9 * three.exact_alpha < joint_alpha <= three.exact_alpha  # the Bonferroni sum bounds it, tightly


def test_four_way_plan_simulates_its_expected_requests() -> None:
    plan = plan_split({"v1": 40, "v2": 30, "v3": 20, "v4": 10})
    assert not plan.expected_exact and "E[N] simulated" in plan.summary()
    assert plan.exact_alpha <= 1e-4 and plan.exact_power >= 0.99
    assert max(t.expected_h0 for t in plan.tests.values()) < plan.expected_requests < plan.max_requests


def test_a_95_5_split_catches_the_5_percent_destination_going_to_zero() -> None:
    (test,) = plan_split({"v1": 95, "v2": 5}).tests.values()
    assert 0.0 in test.alternatives  # kept: the open interval (0, 1) would have dropped it
    reject, _ = test.operating([0.0])
    assert reject[0] == pytest.approx(1.0)


def test_power_grows_beyond_delta() -> None:
    (test,) = plan_split({"v1": 80, "v2": 20}).tests.values()
    reject, _ = test.operating([0.10, 0.13, 0.15, 0.25, 0.27, 0.30])
    assert reject[0] >= reject[1] >= reject[2] >= 0.99 and 0.99 <= reject[3] <= reject[4] <= reject[5]


def test_exact_power_confirmed_by_monte_carlo() -> None:
    (test,) = plan_split({"v1": 80, "v2": 20}).tests.values()
    runs = 20_000
    exact_reject, exact_n = test.operating([0.15])  # p0 - delta for v2
    observed, mean_n = test.simulate(0.15, runs, np.random.default_rng(21))
    assert within_noise(observed, exact_reject[0], runs), (observed, exact_reject)
    assert mean_n == pytest.approx(exact_n[0], rel=0.02)


def test_exact_alpha_confirmed_by_monte_carlo_at_a_loose_level() -> None:
    plan = plan_split({"v1": 80, "v2": 20}, alpha=0.05)
    (test,) = plan.tests.values()
    assert 0.04 < test.alpha <= 0.05
    runs = 100_000
    observed, mean_n = test.simulate(0.2, runs, np.random.default_rng(22))
    assert within_noise(observed, test.alpha, runs), (observed, test.alpha)
    assert mean_n == pytest.approx(test.expected_h0, rel=0.01)


def test_joint_expected_requests_confirmed_by_monte_carlo() -> None:
    """Three tests on one multinomial stream, all runs at once, against the joint DP."""
    weights = {"v1": 50, "v2": 30, "v3": 20}
    plan = plan_split(weights)
    names, tests = list(plan.tests), list(plan.tests.values())
    runs, batch = 4000, plan.batch
    rng = np.random.default_rng(23)
    counts = np.zeros((runs, 3), dtype=np.int64)
    state = np.full((runs, 3), CONTINUE, dtype=np.int8)
    used = np.zeros(runs, dtype=np.int64)
    failed = np.zeros(runs, dtype=bool)
    for look in range(1, plan.max_requests // batch + 1):
        running = np.nonzero((state == CONTINUE).any(axis=1) & ~failed)[0]
        if len(running) == 0:
            break
        counts[running] += rng.multinomial(batch, [plan.weights[n] for n in names], len(running))
        used[running] = look * batch
        for j, test in enumerate(tests):
            live = running[state[running, j] == CONTINUE]
            if len(live):
                state[live, j] = test.codes(look, counts[live, j])
        failed |= (state == REJECT).any(axis=1)
    sd = used.std()
    assert abs(used.mean() - plan.expected_requests) < 4 * sd / math.sqrt(runs)
    assert failed.sum() <= 2  # exact alpha is ~1e-4


def test_fixed_sample_n_is_the_smallest_n_that_works() -> None:
    level, delta, beta = 1e-4, 0.05, 0.01
    n = fixed_sample_n((0.2,), level, delta, beta)
    power = [sequential._fixed_power(k, 0.2, p1, level) for k in (n,) for p1 in (0.25, 0.15)]
    assert min(power) >= 0.99
    for k in range(n - 40, n):
        assert min(sequential._fixed_power(k, 0.2, p1, level) for p1 in (0.25, 0.15)) < 0.99, k
    assert fixed_sample_n((0.2, 0.8), level, delta, beta) == n  # symmetric


def test_plan_split_is_fast_on_first_call() -> None:
    for cached in (splits._plan, verdicts.calibrate, verdicts.fixed_sample_n, sequential._critical):
        cached.cache_clear()
    started = time.perf_counter()
    plan = plan_split({"v1": 80, "v2": 20})
    assert time.perf_counter() - started < 1.0
    assert plan.max_requests >= plan.fixed_n


def test_sequential_codes_are_the_dp_boundaries() -> None:
    """Runtime decisions come from the same boundaries the DP priced."""
    (test,) = plan_split({"v1": 80, "v2": 20}).tests.values()
    look = 20  # accepting needs n * KL(p0, p0 +- delta) > -log B: from ~550 requests
    x = np.arange(0, look * test.batch + 1)
    codes = test.codes(look, x)
    assert set(np.unique(codes)) == {REJECT, CONTINUE, ACCEPT}
    assert codes[round(0.2 * look * test.batch)] in (ACCEPT, CONTINUE)
    assert codes[0] == REJECT and codes[-1] == REJECT
    final = test.codes(test.looks, np.arange(test.max_requests + 1))
    assert CONTINUE not in final


# --- report pieces ----------------------------------------------------------


def failing_verdict() -> SplitVerdict:
    plan = plan_split({"v1": 80, "v2": 20, "v3": 0})
    return decide_split(plan.weights, {"v1": 160, "v2": 90}, plan)


def test_table_has_every_column_and_the_error_rates() -> None:
    verdict = failing_verdict()
    assert not verdict.ok
    header, *rows, stated = verdict.table().splitlines()
    for column in ("destination", "weight", "expected", "observed", "share", "p-value"):
        assert column in header
    assert [r.split()[0] for r in rows] == ["v1", "v2", "v3"]
    assert "36.0%" in rows[1] and "20.0%" in rows[1] and rows[2].rstrip().endswith("-")
    assert stated.startswith("N 250;") and "alpha 1e-04" in stated and "delta 5 points" in stated
    assert "power 0.99" in stated
    assert verdict.table() in verdict.message
    assert "v2 received 36.0% of 250 requests, expected 20%" in problem(verdict)


def test_verdict_json() -> None:
    data = json.loads(json.dumps(failing_verdict().to_json()))
    assert data["ok"] is False and data["n"] == 250 and data["plan"]["max_requests"] > 0
    assert data["rows"][1]["destination"] == "v2" and data["rows"][1]["observed"] == 90


def test_split_chart_is_a_png_for_one_split_and_a_progression() -> None:
    one = split_chart([("80/20", failing_verdict())])
    steps = []
    for share in (10, 50, 100):
        weights = {"v1": 100 - share, "v2": share}
        steps.append((f"{share}% v2", run_split(sender(weights, share), plan_split(weights))))
    many = split_chart(steps)
    for png in (one, many):
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) < 200_000
