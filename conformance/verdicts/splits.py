"""Traffic splits: the plan, the verdict with its table, and the sequential driver."""

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import numpy as np

from conformance.verdicts.joint import _joint_h0, _simulated_h0
from conformance.verdicts.sequential import (
    ACCEPT,
    CONTINUE,
    REJECT,
    DestinationTest,
    _critical,
    binomial_pvalue,
    calibrate,
    fixed_sample_n,
)
from conformance.waiting import Verdict

# ---------------------------------------------------------------------------
# Traffic splits: plans, verdicts, the sequential driver
# ---------------------------------------------------------------------------


def _pct(share: float) -> str:
    return f"{100 * share:.4g}%"


def _requests(count: int) -> str:
    return f"{count} request" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class SplitPlan:
    """How a split will be decided, with its exact operating characteristics."""

    weights: Mapping[str, float]  # normalised to fractions summing to 1
    alpha: float  # stated false-failure rate
    delta: float  # smallest deviation (fraction) that must be caught on any destination
    power: float  # 1 - beta against delta
    batch: int
    max_requests: int  # truncation N_max (a multiple of batch, except the 100% case: its N)
    expected_requests: float  # exact E[N] under the expected weights
    exact_alpha: float  # exact false-failure probability (for m >= 3 the Bonferroni sum: a bound)
    exact_power: float  # exact minimum power at +-delta over tested destinations
    fixed_n: int  # the fixed-sample N, for comparison
    tests: Mapping[str, DestinationTest] = field(default_factory=dict, compare=False)  # one for a two-way split
    expected_exact: bool = True  # False beyond 3 tested destinations: E[N] simulated (the joint DP is too slow)

    @property
    def divisor(self) -> int:
        """Bonferroni m: each test runs at alpha / divisor (1 for two destinations: one event)."""
        shared = sum(1 for w in self.weights.values() if 0 < w < 1)
        return shared if shared >= 3 else 1

    @property
    def level(self) -> float:
        return self.alpha / self.divisor

    def next_batch(self, sent: int) -> int:
        return max(0, min(self.batch, self.max_requests - sent))

    def summary(self) -> str:
        if not self.tests:
            return (
                f"N {self.max_requests} (single destination: any leak fails; a leak of >= {100 * self.delta:g} "
                f"points is seen with probability {self.exact_power:.4f}); power {self.power:g}"
            )
        exact = "exact bound" if self.divisor > 1 else "exact"
        per_test = f", {self.level:.1e} per destination" if self.divisor > 1 else ""
        how = "" if self.expected_exact else " simulated"
        return (
            f"N_max {self.max_requests}, E[N]{how} {self.expected_requests:.0f} (fixed-sample N {self.fixed_n}); "
            f"alpha {self.alpha:.0e} ({exact} {self.exact_alpha:.2e}{per_test}), delta {100 * self.delta:g} points, "
            f"power {self.power:g} (exact {self.exact_power:.4f})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "alpha": self.alpha,
            "delta": self.delta,
            "power": self.power,
            "batch": self.batch,
            "max_requests": self.max_requests,
            "expected_requests": self.expected_requests,
            "exact_alpha": self.exact_alpha,
            "exact_power": self.exact_power,
            "fixed_n": self.fixed_n,
            "expected_exact": self.expected_exact,
            "tests": {
                name: {
                    "share": t.p0,
                    "level": t.level,
                    "log_a": t.log_a,
                    "log_b": t.log_b,
                    "max_requests": t.max_requests,
                    "exact_alpha": t.alpha,
                    "exact_power": dict(zip(map(str, t.alternatives), t.power)),
                    "expected_requests": t.expected_h0,
                }
                for name, t in self.tests.items()
            },
        }


def _normalise(weights: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    if not weights:
        raise ValueError("a split needs at least one destination")
    values = {str(k): float(v) for k, v in weights.items()}
    if any(not math.isfinite(v) or v < 0 for v in values.values()):
        raise ValueError(f"weights must be finite and >= 0: {weights}")
    total = sum(values.values())
    if total <= 0:
        raise ValueError(f"weights sum to 0: {weights}")
    return tuple((k, round(v / total, 12)) for k, v in values.items())


def plan_split(
    weights: Mapping[str, float], alpha: float = 1e-4, delta: float = 0.05, power: float = 0.99, batch: int = 50
) -> SplitPlan:
    """Plan the decision of a split: weights as fractions or percents, e.g. {"v1": 80, "v2": 20}."""
    if not (0 < alpha < 1 and 0 < delta < 1 and 0 < power < 1 and batch >= 1):
        raise ValueError(f"need 0 < alpha, delta, power < 1 and batch >= 1: {alpha}, {delta}, {power}, {batch}")
    return _plan(_normalise(weights), float(alpha), float(delta), float(power), int(batch))


@lru_cache(maxsize=128)
def _plan(items: tuple[tuple[str, float], ...], alpha: float, delta: float, power: float, batch: int) -> SplitPlan:
    weights = MappingProxyType(dict(items))
    beta = 1 - power
    shared = [(name, w) for name, w in items if 0 < w < 1]
    if not shared:  # one destination takes everything: only leaks can fail
        n = math.ceil(math.log(beta) / math.log(1 - delta))
        return SplitPlan(weights, alpha, delta, power, batch, n, float(n), 0.0, 1 - (1 - delta) ** n, n)
    if len(shared) == 2:  # count_2 = n - count_1: one test, on the smaller share
        shared = [min(shared, key=lambda nw: nw[1])]
        level = alpha
    else:
        level = alpha / len(shared)
    tests = {name: calibrate(w, level, delta, beta, batch) for name, w in shared}
    ordered = list(tests.values())
    if len(ordered) == 1:
        expected = ordered[0].expected_h0
    elif len(ordered) == 3:
        expected = _joint_h0(ordered, batch)[0]
    else:  # the exact joint DP has m - 1 axes: minutes for m = 4
        expected = _simulated_h0(ordered, batch)
    return SplitPlan(
        weights=weights,
        alpha=alpha,
        delta=delta,
        power=power,
        batch=batch,
        max_requests=max(t.max_requests for t in ordered),
        expected_requests=expected,
        exact_alpha=sum(t.alpha for t in ordered),
        exact_power=min(min(t.power) for t in ordered),
        fixed_n=fixed_sample_n(tuple(t.p0 for t in ordered), level, delta, beta),
        tests=MappingProxyType(tests),
        expected_exact=len(ordered) <= 3,
    )


@dataclass(frozen=True)
class SplitRow:
    destination: str
    weight: float
    expected: float  # n * weight
    observed: int
    share: float  # observed / n
    p_value: float | None  # exact two-sided binomial p-value of this count alone (fixed-sample reading)


@dataclass(frozen=True)
class SplitVerdict(Verdict):
    rows: tuple[SplitRow, ...]
    n: int
    plan: SplitPlan
    reason: str

    def table(self) -> str:
        width = max(11, *(len(r.destination) for r in self.rows))
        lines = [f"{'destination':<{width}}  {'weight':>7}  {'expected':>9}  {'observed':>8}  {'share':>7}  p-value"]
        for r in self.rows:
            p = "-" if r.p_value is None else (f"{r.p_value:.3g}" if r.p_value >= 1e-3 else f"{r.p_value:.1e}")
            lines.append(
                f"{r.destination:<{width}}  {100 * r.weight:>6.1f}%  {r.expected:>9.1f}  {r.observed:>8d}"
                f"  {100 * r.share:>6.1f}%  {p}"
            )
        lines.append(f"N {self.n}; {self.plan.summary()}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "reason": self.reason,
            "n": self.n,
            "rows": [asdict(r) for r in self.rows],
            "plan": self.plan.to_json(),
        }


def split_label(weights: Mapping[str, float]) -> str:
    """'80/20 v1/v2'."""
    return "/".join(f"{100 * w:.4g}" for w in weights.values()) + " " + "/".join(weights)


def _rows(plan: SplitPlan, counts: Mapping[str, int], n: int) -> tuple[SplitRow, ...]:
    names = list(plan.weights) + sorted(set(counts) - set(plan.weights))
    rows = []
    for name in names:
        w, seen = plan.weights.get(name, 0.0), int(counts.get(name, 0))
        p = binomial_pvalue(seen, n, w) if 0 < w < 1 and n > 0 else None
        rows.append(SplitRow(name, w, n * w, seen, seen / n if n else 0.0, p))
    return tuple(rows)


def _split_verdict(plan: SplitPlan, counts: Mapping[str, int], reason: str, problems: Sequence[str]) -> SplitVerdict:
    n = sum(counts.values())
    rows = _rows(plan, counts, n)
    if problems:
        verdict = SplitVerdict(False, "", rows, n, plan, reason)
        # The problem first: reports and summaries show a failure's first line.
        headline = f"{split_label(plan.weights)} failed: " + "; ".join(problems)
        return replace(verdict, message=headline + "\n" + verdict.table())
    shares = ", ".join(f"{r.destination} {r.observed} ({100 * r.share:.1f}%)" for r in rows)
    if plan.tests:
        stated = f"alpha {plan.alpha:.0e}, power {plan.power:g} at +-{100 * plan.delta:g} points"
    else:
        stated = f"no leak: power {plan.power:g} against a leak of {100 * plan.delta:g} points"
    message = f"{split_label(plan.weights)} held: {n} requests, {shares}; {stated}"
    return SplitVerdict(True, message, rows, n, plan, reason)


def _unexpected(plan: SplitPlan, counts: Mapping[str, int]) -> list[str]:
    out = []
    for name, seen in counts.items():
        if seen and plan.weights.get(name, 0.0) == 0.0:
            if name in plan.weights:
                out.append(f"{name} has weight 0 but received {_requests(seen)}")
            else:
                out.append(f"{name} is not a destination of the split but received {_requests(seen)}")
    return out


def _exact_problem(name: str, plan: SplitPlan, counts: Mapping[str, int], n: int) -> str | None:
    """The fixed-sample exact test's complaint about one destination, if its count is in the critical region."""
    w, seen = plan.weights[name], int(counts.get(name, 0))
    lo, hi = _critical(n, w, plan.level)
    if lo < seen < hi:
        return None
    p = binomial_pvalue(seen, n, w)
    return (
        f"{name} received {100 * seen / n:.1f}% of {n} requests, expected {_pct(w)} "
        f"(p = {p:.1e} <= {plan.alpha:.0e}/{plan.divisor})"
    )


def _sequential_problem(name: str, plan: SplitPlan, look: int, seen: int, n: int) -> str:
    test = plan.tests[name]
    llrs = [float(v[0]) for v in test.llrs(look, np.array([seen]))]
    worst = int(np.argmax(llrs))
    if llrs[worst] < test.log_a:  # no boundary crossed: the exact test at the truncation look rejected
        return (
            f"{name} received {100 * seen / n:.1f}% of {n} requests, expected {_pct(test.p0)} "
            f"(exact test at N_max: p = {binomial_pvalue(seen, n, test.p0):.1e} <= {plan.alpha:.0e}/{plan.divisor})"
        )
    return (
        f"{name} received {100 * seen / n:.1f}% of {n} requests, expected {_pct(test.p0)} "
        f"(sequential test: log-likelihood ratio {llrs[worst]:.2f} >= {test.log_a:.2f} for "
        f"{_pct(test.alternatives[worst])} against {_pct(test.p0)}; fixed-sample p = "
        f"{binomial_pvalue(seen, n, test.p0):.1e})"
    )


def decide_split(
    weights: Mapping[str, float],
    counts: Mapping[str, int],
    plan: SplitPlan | None = None,
    *,
    accepted: Collection[str] = frozenset(),
    fixed: bool = False,
) -> SplitVerdict:
    """Decide on cumulative counts (keyed by destination; failed requests under e.g. "<error>").

    At a look of the plan (n a multiple of batch, within N_max) the sequential
    boundaries decide, with `accepted` the destinations already accepted at
    earlier looks (SequentialSplit passes them).  Where they don't decide, or
    with fixed=True, or off the look grid, the fixed-sample exact test at
    alpha/m decides: its stated power holds from plan.fixed_n requests.  The
    plan's error rates hold for SequentialSplit / run_split, or for one call at
    fixed_n with fixed=True.
    """
    plan = plan or plan_split(weights)
    if _normalise(weights) != tuple(plan.weights.items()):
        raise ValueError(f"weights {dict(weights)} are not the plan's {dict(plan.weights)}")
    counts = {str(k): int(v) for k, v in counts.items() if v}
    n = sum(counts.values())
    if n <= 0:
        raise ValueError("no requests to decide on")
    unexpected = _unexpected(plan, counts)
    if unexpected:
        return _split_verdict(plan, counts, "unexpected destination", unexpected)
    if not plan.tests:
        return _split_verdict(plan, counts, "no leak", [])
    if fixed or n % plan.batch or n > plan.max_requests:
        return _fixed_verdict(plan, counts, n, "fixed-sample exact test")
    look = n // plan.batch
    problems, undecided = [], []
    for name, test in plan.tests.items():
        if name in accepted:
            continue
        if look > test.looks:
            undecided.append(name)
            continue
        code = test.status(look, counts.get(name, 0))
        if code == REJECT:
            problems.append(_sequential_problem(name, plan, look, counts.get(name, 0), n))
        elif code == CONTINUE:
            undecided.append(name)
    if problems:
        return _split_verdict(plan, counts, "sequential test rejected", problems)
    if not undecided:
        return _split_verdict(plan, counts, "sequential test accepted", [])
    return _fixed_verdict(plan, counts, n, "fixed-sample exact test (sequential test undecided)")


def _fixed_verdict(plan: SplitPlan, counts: Mapping[str, int], n: int, reason: str) -> SplitVerdict:
    problems = [p for name in plan.tests if (p := _exact_problem(name, plan, counts, n))]
    return _split_verdict(plan, counts, reason, problems)


class SequentialSplit:
    """Feed one batch of counts at a time; get a verdict as soon as the plan decides."""

    def __init__(self, plan: SplitPlan) -> None:
        self.plan = plan
        self.counts: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.verdict: SplitVerdict | None = None

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def add(self, counts: Mapping[str, int]) -> SplitVerdict | None:
        """Counts of ONE batch (plan.next_batch(n) requests); a final verdict, or None: send more."""
        if self.verdict is not None:
            raise RuntimeError("this split is already decided")
        size, wanted = sum(counts.values()), self.plan.next_batch(self.n)
        if size != wanted:  # the error rates were computed for these look points
            raise ValueError(f"expected a batch of {wanted} requests, got {size}")
        self.counts.update({str(k): int(v) for k, v in counts.items()})
        self.verdict = self._look()
        return self.verdict

    def _look(self) -> SplitVerdict | None:
        plan, n = self.plan, self.n
        decide = partial(decide_split, plan.weights, self.counts, plan)
        if _unexpected(plan, self.counts) or (not plan.tests and n >= plan.max_requests):
            return decide()
        if not plan.tests:
            return None
        look = n // plan.batch
        for name, test in plan.tests.items():
            if name in self.accepted:
                continue
            code = test.status(look, self.counts[name])
            if code == REJECT:
                return decide(accepted=frozenset(self.accepted))
            if code == ACCEPT:
                self.accepted.add(name)
        if len(self.accepted) == len(plan.tests):
            return decide(accepted=frozenset(self.accepted))
        return None


def run_split(send: Callable[[int], Mapping[str, int]], plan: SplitPlan) -> SplitVerdict:
    """Call send(k) (k requests -> counts by destination) batch by batch until the plan decides."""
    split = SequentialSplit(plan)
    while True:
        verdict = split.add(send(plan.next_batch(split.n)))
        if verdict is not None:
            return verdict
