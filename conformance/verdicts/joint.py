"""Several destinations' tests run together on one multinomial stream: E[N] and P(fail) under H0, exact or simulated."""

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import fft as sp_fft
from scipy import special

from conformance.verdicts.sequential import CONTINUE, REJECT, DestinationTest, FloatArray


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

