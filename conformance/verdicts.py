"""Decisions on observed traffic, each with a message that explains itself.

Traffic splits (reviews 80/20 v1/v2, canary steps) are decided by a test with
stated error rates: false-failure rate alpha (default 1e-4) and power 1 - beta
(default 0.99) against a deviation of at least delta (default 5 points) on ANY
destination, with as few requests as we can manage.  Peers state neither
(Istio: 100 calls, +-10 each, retried; Gateway API: 500 requests, +-5 points,
up to 10 retries).

Model.  Envoy picks a weighted cluster independently per request, so a batch's
counts are multinomial and destination i's count is Binomial(n, w_i) under H0.

Why per-destination exact tests, not one chi-square.  The requirement is per
destination: a share off by >= delta on any one destination must be caught
with probability >= 1 - beta.  A deviation on destination i moves its
marginal, so the rule "fail if any destination's own test rejects" catches it
with at least the power of test i alone, which we compute exactly.  A
chi-square spreads its power over every direction of the simplex and gives no
such per-destination guarantee.  With m >= 3 tested destinations each test
runs at alpha/m (Bonferroni: the overall false-failure rate is at most the sum
of the exact per-test rates, a bound).  With m == 2 the two marginals are the
same event (count_2 = n - count_1), so one test at alpha.

No statistics where none are needed.  A destination of weight 0, or one not
named at all (failed requests, labelled e.g. "<error>"), must get nothing: one
hit fails at once.  A single destination at 100% needs N = the smallest n with
(1 - delta)^n <= beta (90 by default): a leak of >= delta is seen with power
1 - beta.

The sequential rule (the main one: it saves requests).  Requests go in batches
(default 50).  Per tested destination, a truncated two-sided SPRT on the
cumulative count: log-likelihood ratios against p0 + delta and p0 - delta
(a side outside [0, 1] is dropped); reject when either reaches log A, accept
when both are <= log B; an accepted destination stays accepted.  At the
truncation N_max the fixed-sample exact test at the destination's level
decides: chosen over "accept" because, calibrated to the same error rates, it
gives the same E[N] with ~25% smaller N_max.  Overall: fail as soon as any
destination rejects, pass when all have accepted, else send another batch.

Exact, not Wald.  Error rates and E[N] come from a dynamic programme over the
count lattice at the look points (mass of continuing paths, minus what crosses
a boundary at each look).  log A, log B and N_max are searched so that exact
alpha_i <= alpha/m and exact power >= 1 - beta at both alternatives, least
E[N] under H0.  The plan's E[N] for three tested destinations comes from a
joint DP over the multinomial (~1 s); beyond three that DP has too many axes
and E[N] is simulated (seeded; the plan says so).  The fixed-sample planner
(the comparison) gives the smallest N at which the exact two-sided binomial
test at alpha/m has that power.
"""

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import fft as sp_fft
from scipy import special, stats

from conformance.probes.classify import version_of
from conformance.targets.base import Batch
from conformance.waiting import Verdict


def describe(batch: Batch) -> str:
    """N, who served, which statuses and errors: the observation in one paragraph."""
    served = ", ".join(f"{k}: {v}" for k, v in sorted(batch.served_by().items()))
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(batch.statuses().items()))
    text = f"{len(batch)} requests from {batch.client} to {batch.url}; served by {{{served}}}; status {{{statuses}}}"
    errors = batch.errors()
    if errors:
        text += "; errors {" + ", ".join(f"{k}: {v}" for k, v in errors.most_common(3)) + "}"
    return text


def only_version(batch: Batch, version: str) -> Verdict:
    """Every reply 200 and served by a pod of `version`; anything else fails, counted."""
    versions = Counter(version_of(r.served_by) or "<unknown>" for r in batch if r.status == 200)
    wrong = len(batch) - versions.get(version, 0)
    if len(batch) > 0 and wrong == 0:
        return Verdict(True, f"all {len(batch)} replies from {version}")
    return Verdict(
        False,
        f"expected all {len(batch)} replies from {version} with status 200, {wrong} were not; "
        f"by version {dict(sorted(versions.items()))}; {describe(batch)}",
    )


def all_status(batch: Batch, status: int, body_contains: str | None = None) -> Verdict:
    bad = [r for r in batch if r.status != status or (body_contains is not None and body_contains not in r.body)]
    if len(batch) > 0 and not bad:
        what = f" containing {body_contains!r}" if body_contains else ""
        return Verdict(True, f"all {len(batch)} replies {status}{what}")
    example = bad[0] if bad else None
    detail = f"; first bad reply: status {example.status}, {example.error or example.body[:120]!r}" if example else ""
    return Verdict(
        False,
        f"expected all {len(batch)} replies with status {status}"
        + (f" and body containing {body_contains!r}" if body_contains else "")
        + f", {len(bad)} were not; {describe(batch)}{detail}",
    )


def all_header(batch: Batch, name: str, value: str) -> Verdict:
    seen = Counter(r.headers.get(name.lower(), "<absent>") for r in batch)
    if len(batch) > 0 and seen == Counter({value: len(batch)}):
        return Verdict(True, f"all {len(batch)} replies carry {name}: {value}")
    return Verdict(False, f"expected header {name}: {value} on all {len(batch)} replies; seen {dict(seen)}")


# ---------------------------------------------------------------------------
# Traffic splits: statistics
# ---------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
REJECT, CONTINUE, ACCEPT = -1, 0, 1


def binomial_pvalues(n: int, p: float) -> FloatArray:
    """Exact two-sided binomial p-values for x = 0..n, vectorised.

    Same rule as scipy.stats.binomtest (two-sided: the probability of every count
    no more likely than x, with scipy's 1e-7 relative tolerance), computed for all
    x at once: the DP needs the critical region at every look.
    """
    if n == 0:
        return np.ones(1)
    x = np.arange(n + 1, dtype=np.float64)
    # log-gamma pmf: ~1e-13 relative error, 2.5x faster than stats.binom.pmf (the DP needs one per look)
    log_pmf = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)
    pmf = np.exp(log_pmf + special.xlogy(x, p) + special.xlog1py(n - x, -p))
    cdf = np.cumsum(pmf)  # summed from the left: exact enough in the lower tail, where it is used
    at_least = np.cumsum(pmf[::-1])[::-1]  # P(X >= x), summed from the right for the upper tail
    limit = pmf * (1 + 1e-7)
    centre = n * p
    out = np.ones(n + 1)
    lower = x < centre
    if lower.any():
        # first count at or above the centre as unlikely as x (pmf is non-increasing there)
        start = int(np.ceil(centre))
        first = start + np.searchsorted(-pmf[start:], -limit[lower], side="left")
        out[lower] = cdf[lower] + np.where(first <= n, at_least[np.minimum(first, n)], 0.0)
    upper = x > centre
    if upper.any():
        # last count at or below the centre as unlikely as x (pmf is non-decreasing there)
        stop = int(np.floor(centre))
        last = np.searchsorted(pmf[: stop + 1], limit[upper], side="right") - 1
        out[upper] = np.where(last >= 0, cdf[np.maximum(last, 0)], 0.0) + at_least[upper]
    return np.minimum(out, 1.0)


def binomial_pvalue(x: int, n: int, p: float) -> float:
    return float(binomial_pvalues(n, p)[x])


@lru_cache(maxsize=8192)
def _critical(n: int, p: float, level: float) -> tuple[int, int]:
    """The exact test's rejection region at `level`: x <= lo or x >= hi (p-values are monotone on each side)."""
    pv = binomial_pvalues(n, p)
    x = np.arange(n + 1)
    low = np.nonzero((x < n * p) & (pv <= level))[0]
    high = np.nonzero((x > n * p) & (pv <= level))[0]
    return (int(low[-1]) if len(low) else -1), (int(high[0]) if len(high) else n + 1)


def _fixed_power(n: int, p0: float, p1: float, level: float) -> float:
    lo, hi = _critical(n, p0, level)
    return float(stats.binom.cdf(lo, n, p1) + stats.binom.sf(hi - 1, n, p1))


def _ump_power(n: int, p0: float, p1: float, level: float) -> float:
    """Power of the most powerful (randomised) one-sided level test of p0 against p1: an upper bound."""
    if p1 < p0:  # mirror: N - X is binomial with 1 - p
        p0, p1 = 1 - p0, 1 - p1
    c = int(stats.binom.isf(level, n, p0))
    while c < n and stats.binom.sf(c, n, p0) > level:
        c += 1
    while c > 0 and stats.binom.sf(c - 1, n, p0) <= level:
        c -= 1
    at_c = stats.binom.pmf(c, n, p0)
    gamma = (level - stats.binom.sf(c, n, p0)) / at_c if at_c > 0 else 0.0
    return float(stats.binom.sf(c, n, p1) + gamma * stats.binom.pmf(c, n, p1))


def _first_possible_n(p0: float, p1: float, level: float, target: float) -> int:
    """Smallest N where the one-sided UMP test's power, plus level for the other tail, reaches target.

    That sum bounds the two-sided exact test's power from above, and the
    randomised UMP power never decreases with N, so bisection is valid.
    """
    lo, hi = 1, 1
    while _ump_power(hi, p0, p1, level) + level < target:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _ump_power(mid, p0, p1, level) + level >= target else (mid + 1, hi)
    return lo


def _alternatives(p0: float, delta: float) -> tuple[float, ...]:
    """p0 + delta and p0 - delta, dropping a side outside [0, 1].

    0 and 1 themselves are kept, not only the open interval: for 95/5 the
    5% destination dropping to 0 is a 5-point deviation that must be caught, and
    the likelihood ratio against p = 0 is well defined (zero hits in n).
    """
    sides = (round(p0 + delta, 12), round(p0 - delta, 12))
    return tuple(p for p in sides if 0.0 <= p <= 1.0)


@lru_cache(maxsize=256)
def fixed_sample_n(p0s: tuple[float, ...], level: float, delta: float, beta: float) -> int:
    """Smallest N at which the exact two-sided test at `level` has power >= 1 - beta at p0 +- delta for every p0.

    Power is not monotone in N (the discrete critical region jumps), so this is
    the smallest N for which the requirement holds *at that N*; a slightly larger
    N may fall just short.  The scan starts where the most powerful one-sided test
    (an upper bound on our power, plus level for the far tail) first reaches the
    target: below that no N can work.
    """
    checks = [(p0, p1) for p0 in p0s for p1 in _alternatives(p0, delta)]
    if not checks:
        raise ValueError("no alternative inside [0, 1]: delta too large")
    target = 1 - beta
    if len(set(p0s)) > 1:  # all must hold at one N: no earlier than the latest single answer
        n = max(fixed_sample_n((p0,), level, delta, beta) for p0 in set(p0s))
    else:
        n = max(_first_possible_n(p0, p1, level, target) for p0, p1 in checks)
    while not all(_fixed_power(n, p0, p1, level) >= target for p0, p1 in checks):
        n += 1
    return n


def _llr(x: FloatArray, n: int, p0: float, p1: float) -> FloatArray:
    """Log-likelihood ratio of Binomial(n, p1) to Binomial(n, p0) at count x."""
    return special.xlogy(x, p1 / p0) + special.xlogy(n - x, (1 - p1) / (1 - p0))  # type: ignore[no-any-return]


def _codes(llrs: Sequence[FloatArray], log_a: Any, log_b: Any) -> npt.NDArray[np.int8]:
    """REJECT if any LLR >= log A, ACCEPT if all LLRs <= log B, else CONTINUE (broadcasting)."""
    reject = np.zeros(np.broadcast_shapes(*(np.shape(l) for l in llrs), np.shape(log_a)), dtype=bool)
    accept = np.ones_like(reject)
    for llr in llrs:
        reject |= llr >= log_a
        accept &= llr <= log_b
    return np.where(reject, REJECT, np.where(accept, ACCEPT, CONTINUE)).astype(np.int8)


@dataclass(frozen=True)
class DestinationTest:
    """One destination's truncated two-sided SPRT, with its exact operating characteristics."""

    p0: float
    level: float  # this destination's false-failure budget (alpha or alpha/m)
    batch: int
    alternatives: tuple[float, ...]  # p0 + delta, p0 - delta (inside [0, 1])
    log_a: float  # reject when any LLR >= log A
    log_b: float  # accept when every LLR <= log B
    looks: int  # truncation at looks * batch requests: the exact test at `level` decides
    alpha: float  # exact P(reject | p0)
    power: tuple[float, ...]  # exact P(reject | alternative), per alternative
    expected_h0: float  # exact E[N | p0] of this test alone
    expected_alt: tuple[float, ...]  # exact E[N | alternative]

    @property
    def max_requests(self) -> int:
        return self.looks * self.batch

    def llrs(self, look: int, x: FloatArray) -> list[FloatArray]:
        n = look * self.batch
        return [_llr(np.asarray(x, dtype=np.float64), n, self.p0, p1) for p1 in self.alternatives]

    def codes(self, look: int, x: Any) -> npt.NDArray[np.int8]:
        """Decision per count at `look` (1-based); at the truncation look nothing continues."""
        if not 1 <= look <= self.looks:
            raise ValueError(f"look {look} outside 1..{self.looks}")
        x = np.asarray(x, dtype=np.float64)
        codes = _codes(self.llrs(look, x), self.log_a, self.log_b)
        if look == self.looks:
            lo, hi = _critical(look * self.batch, self.p0, self.level)
            final = np.where((x <= lo) | (x >= hi), REJECT, ACCEPT)
            codes = np.where(codes == CONTINUE, final, codes).astype(np.int8)
        return codes

    def status(self, look: int, x: int) -> int:
        return int(self.codes(look, np.array([x]))[0])

    def operating(self, ps: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact P(reject) and E[N] of this test when the true share is each p in ps."""
        a, b = np.array([self.log_a]), np.array([self.log_b])
        trace = _trace(self.p0, self.alternatives, self.level, self.batch, a, b, self.looks, tuple(ps))
        return tuple(trace.reject[0, self.looks]), tuple(trace.expected[0, self.looks])

    def simulate(self, p: float, runs: int, rng: np.random.Generator) -> tuple[float, float]:
        """Monte Carlo of this test at true share p, all runs at once: P(reject), mean N.

        The check on the exact figures above (tests and bench/verdicts.py).
        """
        count, used = np.zeros(runs, dtype=np.int64), np.zeros(runs, dtype=np.int64)
        state = np.full(runs, CONTINUE, dtype=np.int8)
        for look in range(1, self.looks + 1):
            going = np.nonzero(state == CONTINUE)[0]
            if len(going) == 0:
                break
            count[going] += rng.binomial(self.batch, p, len(going))
            state[going] = self.codes(look, count[going])
            used[going] = look * self.batch
        return float((state == REJECT).mean()), float(used.mean())


@dataclass(frozen=True)
class _Trace:
    """Per row (a pair log A, log B), per truncation look K, per measure: exact P(reject) and E[N]."""

    reject: FloatArray  # (rows, looks + 1, measures)
    expected: FloatArray  # (rows, looks + 1, measures)


def _trace(
    p0: float,
    alternatives: tuple[float, ...],
    level: float,
    batch: int,
    log_a: FloatArray,
    log_b: FloatArray,
    looks: int,
    measures: tuple[float, ...],
) -> _Trace:
    """Exact DP over the count lattice at the looks, for several (log A, log B) rows at once.

    The mass of continuing paths is propagated under p0 (one binomial convolution
    per batch); another measure q reweights each count by the likelihood ratio
    (q/p0)^x ((1-q)/(1-p0))^(n-x), exact because every path to (n, x) has that
    ratio.  Convolution is direct, not FFT: tiny masses get multiplied by large
    ratios and need relative precision.  At each look we also record what the
    exact terminal test would reject if the test were truncated there, so one
    pass prices every truncation point.
    """
    rows, width = len(log_a), 1
    kernel = stats.binom.pmf(np.arange(batch + 1), batch, p0)
    mass = np.ones((rows, 1))
    left = 0  # count at column 0 of `mass`
    la, lb = log_a[:, None], log_b[:, None]
    shape = (rows, looks + 1, len(measures))
    rejected, stopped, terminal = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for look in range(1, looks + 1):
        n = look * batch
        # one direct convolution for all rows: b zeros between rows keep them apart
        padded = np.zeros((rows, width + batch))
        padded[:, :width] = mass
        mass = np.convolve(padded.ravel(), kernel)[: padded.size].reshape(rows, width + batch)
        width += batch
        x = left + np.arange(width, dtype=np.float64)
        llrs = {q: _llr(x, n, p0, q) for q in {*alternatives, *measures}}
        codes = _codes([llrs[p1] for p1 in alternatives], la, lb)
        tilt = np.exp(np.array([llrs[q] for q in measures]))  # (measures, width); ratio 1 for p0
        lo, hi = _critical(n, p0, level)
        going = codes == CONTINUE
        rejected[:, look] = (mass * (codes == REJECT)) @ tilt.T
        stopped[:, look] = (mass * ~going) @ tilt.T
        terminal[:, look] = (mass * (going & ((x <= lo) | (x >= hi)))) @ tilt.T
        mass = mass * going
        alive = np.nonzero(mass.any(axis=0))[0]
        if len(alive) == 0:
            break
        mass = mass[:, alive[0] : alive[-1] + 1]
        left += int(alive[0])
        width = mass.shape[1]
    counts = (np.arange(looks + 1) * batch)[None, :, None]
    reject = np.cumsum(rejected, axis=1) + terminal
    before = np.cumsum(stopped, axis=1) - stopped  # P(stopped before look K)
    expected = np.cumsum(stopped * counts, axis=1) - stopped * counts + counts * (1 - before)
    return _Trace(reject, expected)


@lru_cache(maxsize=256)
def calibrate(p0: float, level: float, delta: float, beta: float, batch: int) -> DestinationTest:
    """Search log A, log B and the truncation for the smallest exact E[N | p0] meeting both error rates.

    Exact alpha <= level and exact power >= 1 - beta at each alternative.  For
    fixed truncation, rejections only shrink as log A grows and only grow as log B
    falls, and E[N | p0] grows as log B falls; so we bisect for the highest log B
    at which some (log A, truncation) is feasible (log B on a 0.025 grid), then
    pick log A (0.05 grid) and the truncation there: least E[N | p0], ties
    within 0.1% to the smaller N_max.
    """
    if not 0 < p0 < 1:
        raise ValueError(f"a tested share must be inside (0, 1), got {p0}")
    alternatives = _alternatives(p0, delta)
    measures = (p0, *alternatives)
    fixed = fixed_sample_n((p0,), level, delta, beta)
    looks = max(4, math.ceil(1.75 * fixed / batch))  # optimal truncations came out at 1.3-1.4x fixed N
    grid_a = np.linspace(max(0.5, math.log(1 / level) - 1.5), math.log(2 / level) + 2, 10)
    grid_b = np.arange(-0.05, math.log(beta) - 4, -0.025)

    def feasible(log_a: FloatArray, log_b: float) -> tuple[npt.NDArray[np.bool_], FloatArray]:
        """Per row and truncation look: meets both error rates? and E[N | p0]."""
        trace = _trace(p0, alternatives, level, batch, log_a, np.full(len(log_a), log_b), looks, measures)
        ok = (trace.reject[:, :, 0] <= level) & (trace.reject[:, :, 1:] >= 1 - beta).all(axis=2)
        ok[:, 0] = False
        return ok, trace.expected[:, :, 0]

    coarse: dict[int, tuple[npt.NDArray[np.bool_], FloatArray]] = {}

    def works(index: int) -> bool:
        if index < 0:
            return False
        if index not in coarse:
            coarse[index] = feasible(grid_a, float(grid_b[index]))
        return bool(coarse[index][0].any())

    # bracket the highest feasible log B, starting near Wald's log(beta) less a batch's overshoot
    step = 8
    start = int(np.argmin(np.abs(grid_b - (math.log(beta) + 0.8))))
    good, bad = start, start
    if works(start):
        while bad >= 0 and works(bad):
            good, bad = bad, bad - step
    else:
        while not works(good):
            if good == len(grid_b) - 1:
                raise ValueError(f"no sequential plan within {looks * batch} requests for share {p0} at level {level}")
            bad, good = good, min(good + step, len(grid_b) - 1)
    bad = max(bad, -1)
    while good - bad > 1:  # grid_b[good] feasible, grid_b[bad] not
        mid = (good + bad) // 2
        good, bad = (mid, bad) if works(mid) else (good, mid)
    log_b = float(grid_b[good])

    # log A and truncation at that log B: a finer log A grid around the best coarse row
    ok, cost = coarse[good]
    row = int(np.argmin(np.where(ok, cost, np.inf).min(axis=1)))
    around = np.arange(grid_a[max(row - 1, 0)], grid_a[min(row + 1, len(grid_a) - 1)], 0.05)
    fine_a = np.union1d(grid_a[row : row + 1], around)
    ok, cost = feasible(fine_a, log_b)
    cost = np.where(ok, cost, np.inf)
    near = zip(*np.nonzero(cost <= cost.min() * 1.001))  # least E[N | p0]; within 0.1%, the smaller N_max
    row, look = min(near, key=lambda rl: (rl[1], cost[rl]))
    log_a, look = float(fine_a[row]), int(look)
    trace = _trace(p0, alternatives, level, batch, np.array([log_a]), np.array([log_b]), look, measures)
    reject, expected = trace.reject[0, look], trace.expected[0, look]
    return DestinationTest(
        p0=p0,
        level=level,
        batch=batch,
        alternatives=alternatives,
        log_a=log_a,
        log_b=log_b,
        looks=look,
        alpha=float(reject[0]),
        power=tuple(float(v) for v in reject[1:]),
        expected_h0=float(expected[0]),
        expected_alt=tuple(float(v) for v in expected[1:]),
    )


def _simulated_h0(tests: Sequence[DestinationTest], batch: int, runs: int = 20_000) -> float:
    """Mean N under H0 of tests run together, by a seeded simulation of all runs at once (for m >= 4)."""
    rng = np.random.default_rng(0)
    m = len(tests)
    counts = np.zeros((runs, m), dtype=np.int64)
    state = np.full((runs, m), CONTINUE, dtype=np.int8)
    used = np.zeros(runs, dtype=np.int64)
    for look in range(1, max(t.looks for t in tests) + 1):
        going = np.nonzero((state == CONTINUE).any(axis=1) & ~(state == REJECT).any(axis=1))[0]
        if len(going) == 0:
            break
        counts[going] += rng.multinomial(batch, [t.p0 for t in tests], len(going))
        used[going] = look * batch
        for i, test in enumerate(tests):
            live = going[state[going, i] == CONTINUE]
            if len(live):
                state[live, i] = test.codes(look, counts[live, i])
    return float(used.mean())


@lru_cache(maxsize=64)
def _multinomial_kernel(probs: tuple[float, ...], batch: int) -> FloatArray:
    """P(j_1..j_d from one batch) for d named categories; the rest of the batch goes to 'other'."""
    grids = np.indices((batch + 1,) * len(probs), dtype=np.float64)
    total = grids.sum(axis=0)
    rest = max(0.0, 1.0 - sum(probs))
    log = special.gammaln(batch + 1) - special.gammaln(np.maximum(batch - total, 0) + 1)
    for grid, p in zip(grids, probs):
        log = log - special.gammaln(grid + 1) + special.xlogy(grid, p)
    log = log + special.xlogy(np.maximum(batch - total, 0), rest)
    return np.where(total <= batch, np.exp(log), 0.0)  # type: ignore[no-any-return]


Box = tuple[npt.NDArray[np.int64], FloatArray]  # offsets (count at index 0, per axis), mass


def _joint_h0(tests: Sequence[DestinationTest], batch: int) -> tuple[float, float]:
    """Exact E[N] and P(fail) under H0 of m >= 3 tests run together on one multinomial stream.

    A state is the set of destinations still undecided plus the joint
    distribution of their counts (an accepted destination stays accepted, so its
    count is summed out).  While all m are undecided the last count is n minus
    the others, so arrays have m - 1 axes.  FFT convolution is fine here: this
    feeds E[N] and a cross-check, not tiny masses that get reweighted.
    """
    m = len(tests)
    everyone = frozenset(range(m))
    weights = [t.p0 for t in tests]
    states: dict[frozenset[int], Box] = {everyone: (np.zeros(m - 1, dtype=np.int64), np.ones((1,) * (m - 1)))}
    alive, failed = [1.0], 0.0
    for look in range(1, max(t.looks for t in tests) + 1):
        n = look * batch
        parts: dict[frozenset[int], list[Box]] = {}
        for active, (offsets, mass) in states.items():
            axes = sorted(active)[:-1] if active == everyone else sorted(active)
            probs = tuple(weights[i] for i in axes)
            if mass.ndim > 1:
                mass = _fft_convolve(mass, probs, batch)
            else:
                mass = np.convolve(mass, _multinomial_kernel(probs, batch))
            offsets, mass = _trim(offsets, np.where(mass > 1e-15, mass, 0.0))  # drop FFT round-off (~1e-17)
            counts = _axis_counts(offsets, mass.shape)
            codes = {i: tests[i].codes(look, counts[k]) for k, i in enumerate(axes)}
            if active == everyone:  # the last count is implicit
                codes[m - 1] = _codes_by_value(tests[m - 1], look, n - sum(counts))
            rejected = np.zeros(mass.shape, dtype=bool)
            for c in codes.values():
                rejected |= c == REJECT
            failed += float(mass[rejected].sum())
            # which destinations still continue, as a bit pattern; -1 for stopped paths
            bits = np.zeros(mass.shape, dtype=np.int64)
            for i in active:
                bits |= (codes[i] == CONTINUE).astype(np.int64) << i
            pattern = np.where(rejected | (mass == 0), -1, bits)
            for value in np.nonzero(np.bincount(pattern.ravel() + 1, minlength=2**m + 1)[2:])[0] + 1:
                keep = frozenset(i for i in active if value >> i & 1)
                kept = np.where(pattern == value, mass, 0.0)
                box = _trim(offsets, kept) if keep == active else _project(kept, offsets, axes, keep, n, m)
                parts.setdefault(keep, []).append(box)
        states = {keep: _merge(found) for keep, found in parts.items()}
        alive.append(sum(float(mass.sum()) for _, mass in states.values()))
    return batch * sum(alive[:-1]), failed


def _fft_convolve(mass: FloatArray, probs: tuple[float, ...], batch: int) -> FloatArray:
    """Full linear convolution of `mass` with one batch's multinomial kernel, by real FFT."""
    full = tuple(size + batch for size in mass.shape)
    shape = tuple(sp_fft.next_fast_len(size, real=True) for size in full)
    product = sp_fft.rfftn(mass, shape) * _kernel_fft(probs, batch, shape)
    return sp_fft.irfftn(product, shape)[tuple(slice(0, size) for size in full)]  # type: ignore[no-any-return]


@lru_cache(maxsize=512)
def _kernel_fft(probs: tuple[float, ...], batch: int, shape: tuple[int, ...]) -> npt.NDArray[np.complex128]:
    return sp_fft.rfftn(_multinomial_kernel(probs, batch), shape)  # type: ignore[no-any-return]


def _axis_counts(offsets: npt.NDArray[np.int64], shape: tuple[int, ...]) -> list[npt.NDArray[np.int64]]:
    """Per axis, the counts along it, shaped to broadcast against the box."""
    out = []
    for k, size in enumerate(shape):
        view = [1] * len(shape)
        view[k] = size
        out.append((offsets[k] + np.arange(size)).reshape(view))
    return out


def _codes_by_value(test: DestinationTest, look: int, counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    """test.codes over an array of counts, evaluated once per distinct count (a box repeats them)."""
    low = int(counts.min())
    return test.codes(look, np.arange(low, int(counts.max()) + 1))[counts - low]


def _project(
    mass: FloatArray, offsets: npt.NDArray[np.int64], axes: list[int], keep: frozenset[int], n: int, m: int
) -> Box:
    """Sum `mass` (over `axes`, plus the implicit last count when m - 1 is not an axis) onto `keep`'s counts."""
    if m - 1 in axes or m - 1 not in keep:  # keep's counts are axes: sum the others out
        drop = tuple(k for k, i in enumerate(axes) if i not in keep)
        return _trim(offsets[[k for k, i in enumerate(axes) if i in keep]], mass.sum(axis=drop))
    where = np.nonzero(mass)
    counts = {i: offsets[k] + where[k] for k, i in enumerate(axes)}
    counts[m - 1] = n - sum(counts[i] for i in axes)
    coords = [counts[i] for i in sorted(keep)]
    low = np.array([c.min() for c in coords], dtype=np.int64)
    shape = tuple(int(c.max() - o) + 1 for c, o in zip(coords, low))
    flat = np.ravel_multi_index(tuple(c - o for c, o in zip(coords, low)), shape)
    return low, np.bincount(flat, weights=mass[where], minlength=math.prod(shape)).reshape(shape)


def _trim(offsets: npt.NDArray[np.int64], mass: FloatArray) -> Box:
    """Cut the box down to its non-zero part."""
    spans = []
    for k in range(mass.ndim):
        used = np.nonzero(mass.any(axis=tuple(j for j in range(mass.ndim) if j != k)))[0]
        spans.append((int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1))
    low = np.array([a for a, _ in spans], dtype=np.int64)
    return offsets + low, mass[tuple(slice(a, b) for a, b in spans)]


def _merge(parts: list[Box]) -> Box:
    low = np.min([o for o, _ in parts], axis=0)
    high = np.max([o + np.array(a.shape) for o, a in parts], axis=0)
    out = np.zeros(tuple(int(v) for v in high - low))
    for offsets, mass in parts:
        start = offsets - low
        out[tuple(slice(int(s), int(s) + d) for s, d in zip(start, mass.shape))] += mass
    return low, out


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
