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

from conformance.verdicts.replies import Verdict, all_header, all_status, describe, only_version
from conformance.verdicts.sequential import (
    ACCEPT,
    CONTINUE,
    REJECT,
    DestinationTest,
    FloatArray,
    binomial_pvalue,
    binomial_pvalues,
    calibrate,
    fixed_sample_n,
)
from conformance.verdicts.splits import (
    SequentialSplit,
    SplitPlan,
    SplitRow,
    SplitVerdict,
    decide_split,
    plan_split,
    run_split,
    split_label,
)

__all__ = [
    "ACCEPT",
    "CONTINUE",
    "REJECT",
    "DestinationTest",
    "FloatArray",
    "SequentialSplit",
    "SplitPlan",
    "SplitRow",
    "SplitVerdict",
    "Verdict",
    "all_header",
    "all_status",
    "binomial_pvalue",
    "binomial_pvalues",
    "calibrate",
    "decide_split",
    "describe",
    "fixed_sample_n",
    "only_version",
    "plan_split",
    "run_split",
    "split_label",
]
