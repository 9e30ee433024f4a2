"""Traffic-split rules compared: false-failure rate, power and requests spent, by simulation and exactly.

Usage: python bench/verdicts.py [--runs N] [--seed S]
No mesh: Envoy's weighted pick is simulated (independent draws per request),
so counts are binomial.  Rules, for a two-way split:
  meshconf     the sequential test (alpha 1e-4, power 0.99 at +-5 points, batches of 50)
  istio        100 calls, each destination within +-10 calls of expected; up to 10 batches, pass if any passes
  gateway-api  500 requests, each within +-5 points (Go's float test); up to 10 attempts, pass if any passes
"Exact" columns: meshconf's from its DP, the anchors' from binomial formulas.
"""

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from conformance.verdicts import DestinationTest, plan_split

Rule = Callable[[float, int, np.random.Generator], tuple[float, float]]  # true v2 share -> P(fail), mean requests
CASES = {  # expected split (v1/v2) -> true splits: itself first, then the wrong ones
    (80, 20): [(80, 20), (70, 30), (75, 25), (85, 15)],
    (50, 50): [(50, 50), (40, 60), (45, 55), (55, 45)],
}
ATTEMPTS = 10


def meshconf(test: DestinationTest, tested: str) -> tuple[Rule, Rule]:
    """meshconf's sequential rule, simulated and exact (its DP); `tested` is the destination it tests."""

    def share_of(v2: float) -> float:
        return v2 if tested == "v2" else 1 - v2

    def simulate(v2: float, runs: int, rng: np.random.Generator) -> tuple[float, float]:
        return test.simulate(share_of(v2), runs, rng)

    def exact(v2: float, runs: int, rng: np.random.Generator) -> tuple[float, float]:
        reject, expected = test.operating([share_of(v2)])
        return reject[0], expected[0]

    return simulate, exact


def passes_istio(v2: np.ndarray, n: int, w2: float) -> np.ndarray:
    """Each destination within +-10 calls of its expected count (both checks: one per destination)."""
    v1 = n - v2
    return (np.abs(v1 - n * (1 - w2)) <= 10) & (np.abs(v2 - n * w2) <= 10)


def passes_gateway(v2: np.ndarray, n: int, w2: float) -> np.ndarray:
    """Gateway API's check in float64: math.Abs(got/500 - want) > 0.05 fails, per backend."""
    w1 = round(1 - w2, 12)
    return (np.abs((n - v2) / n - w1) <= 0.05) & (np.abs(v2 / n - w2) <= 0.05)


def retried(n: int, passes: Callable[[np.ndarray, int, float], np.ndarray], w2: float) -> tuple[Rule, Rule]:
    """A rule that draws n requests per attempt, up to ATTEMPTS, and passes on the first attempt that passes."""

    def simulate(share: float, runs: int, rng: np.random.Generator) -> tuple[float, float]:
        ok = passes(rng.binomial(n, share, (runs, ATTEMPTS)), n, w2)
        first = np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, ATTEMPTS)
        return float((~ok.any(axis=1)).mean()), float(n * first.mean())

    def exact(share: float, runs: int, rng: np.random.Generator) -> tuple[float, float]:
        x = np.arange(n + 1)
        q = float(stats.binom.pmf(x, n, share)[passes(x, n, w2)].sum())  # P(one attempt passes)
        return (1 - q) ** ATTEMPTS, n * sum((1 - q) ** i for i in range(ATTEMPTS))

    return simulate, exact


def wald_bound(p0: float, alpha: float, beta: float, delta: float) -> float:
    """Lower bound on E[N | p0] for any sequential test with these error rates against p0 +- delta."""
    a, b = alpha, beta
    numerator = (1 - a) * math.log((1 - a) / b) + a * math.log(a / (1 - b))
    kl = min(
        p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
        for p1 in (p0 + delta, p0 - delta)
        if 0 < p1 < 1
    )
    return numerator / kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200_000, help="simulated runs per rule and true split")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()

    header = (
        f"{'expected':<9}{'rule':<13}{'true':<7}{'measures':<15}"
        f"{'P(fail) sim':>12}{'exact':>11}{'requests sim':>14}{'exact':>9}"
    )
    lines, notes = [header, "-" * len(header)], []
    for (e1, e2), trues in CASES.items():
        plan = plan_split({"v1": e1, "v2": e2})
        name, test = next(iter(plan.tests.items()))  # the one test of a two-way split
        rules: dict[str, tuple[Rule, Rule]] = {
            "meshconf": meshconf(test, name),
            "istio": retried(100, passes_istio, e2 / 100),
            "gateway-api": retried(500, passes_gateway, e2 / 100),
        }
        for rule, (simulate, exact) in rules.items():
            for t1, t2 in trues:
                sim_fail, sim_n = simulate(t2 / 100, args.runs, rng)
                exact_fail, exact_n = exact(t2 / 100, args.runs, rng)
                what = "false-failure" if (t1, t2) == (e1, e2) else "power"
                lines.append(
                    f"{e1}/{e2:<6}{rule:<13}{t1}/{t2:<4}{what:<15}"
                    f"{sim_fail:>12.2e}{exact_fail:>11.2e}{sim_n:>14.1f}{exact_n:>9.1f}"
                )
        lines.append("")
        notes.append(
            f"{e1}/{e2}: meshconf plan {plan.summary()}; "
            f"Wald lower bound on E[N] under the expected split for ANY sequential test with "
            f"alpha {plan.alpha:.0e} and power {plan.power:g} at +-{100 * plan.delta:g} points: "
            f"{wald_bound(test.p0, plan.level, 1 - plan.power, plan.delta):.0f} requests "
            f"(Gateway API spends >= 500, Istio >= 100)"
        )
    print("\n".join(lines[:-1]))
    print()
    print("\n".join(notes))
    print(f"\n{args.runs} simulated runs per row; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
