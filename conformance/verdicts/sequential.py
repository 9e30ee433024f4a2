"""One destination's exact binomial tests: p-values, the fixed-sample test and the calibrated truncated SPRT."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

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
