"""The steps of every check: converge, measure, decide; each an Allure step."""

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import allure

from conformance.probes.classify import version_of
from conformance.probes.evidence import attach_batch
from conformance.report.charts import split_chart
from conformance.settings import RunSettings, Timeouts
from conformance.targets.base import Batch, Client
from conformance.verdicts import SplitVerdict, Verdict, binomial_pvalue, plan_split, run_split, split_label
from conformance.waiting import converged


def converge(send: Callable[[], Batch], verdict: Callable[[Batch], Verdict], timeouts: Timeouts, what: str) -> int:
    """Wait until `verdict` holds for `required_successes` probe batches in a row."""

    with allure.step(f"converge: {what}"):
        return converged(lambda: verdict(send()), timeouts, what)


def measure(send: Callable[[], Batch], name: str) -> Batch:
    with allure.step(f"measure: {name}"):
        batch = send()
        attach_batch(batch, name)
        return batch


def decide(verdict: Verdict) -> str:
    with allure.step(f"verdict: {'pass' if verdict.ok else 'fail'}: {verdict.message[:160]}"):
        assert verdict.ok, verdict.message
    return verdict.message


@dataclass(frozen=True)
class Split:
    """One traffic split to check: the weights the config declares, and the ones before it."""

    name: str
    client: Client
    url: str
    weights: Mapping[str, float]
    previous: Mapping[str, float]
    headers: Mapping[str, str] | None = None
    concurrency: int = 8


def version_counts(batch: Batch) -> Counter[str]:
    """Replies by serving version; a failed or unclassified reply counts against the split."""
    return Counter(
        (version_of(r.served_by) or "<unknown>") if r.status == 200 else f"<status {r.status}>" for r in batch
    )


def _fractions(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


# A probe batch counts as "the old weights are gone" below this p-value (per destination,
# Bonferroni over destinations); three such batches in a row are ~1e-9 likely under the old weights.
OLD_CONFIG_P = 1e-3


def split_probe(split: Split) -> Callable[[Batch], Verdict]:
    """Converged when the replies can no longer come from the previous weights.

    It asks only that the old configuration is gone, not that the new one is right:
    whether the new split holds is the measurement's question, so a wrong split
    fails there, with the statistics, instead of timing out here.
    """
    old = _fractions(split.previous)

    def probe(batch: Batch) -> Verdict:
        counts = version_counts(batch)
        n = len(batch)
        detail = f"{n} requests: {dict(sorted(counts.items()))}"
        failed = [d for d in counts if d.startswith("<")]
        if n == 0 or failed:
            return Verdict(False, detail + "; failed or unclassified replies")
        level = OLD_CONFIG_P / max(1, len(old))
        moved = [
            d for d in sorted(set(old) | set(counts))
            if (old.get(d, 0.0) == 0.0 and counts.get(d, 0)) or
               (0.0 < old.get(d, 0.0) and binomial_pvalue(counts.get(d, 0), n, old[d]) < level)
        ]
        if moved:
            return Verdict(True, detail + f"; unlike the previous weights on {', '.join(moved)}")
        return Verdict(False, detail + f"; still consistent with the previous weights {split_label(old)}")

    return probe


PROBE_REQUESTS = 40


def measure_split(split: Split, settings: RunSettings, converge_first: bool = True) -> SplitVerdict:
    """Converge on the new weights, then measure sequentially until the test decides."""
    if converge_first:
        send_probe = partial(split.client.send, split.url, PROBE_REQUESTS, split.concurrency, split.headers)
        converge(send_probe, split_probe(split), settings.timeouts, f"{split.name}: previous weights gone")
    plan = plan_split(split.weights)
    batches: list[Batch] = []

    def send(count: int) -> Counter[str]:
        batches.append(split.client.send(split.url, count, split.concurrency, split.headers))
        return version_counts(batches[-1])

    with allure.step(f"measure: {split.name} ({plan.summary()})"):
        verdict = run_split(send, plan)
        allure.attach(json.dumps(verdict.to_json(), indent=1), name=f"{split.name}: split",
                      attachment_type=allure.attachment_type.JSON)
        if batches:
            attach_batch(Batch(split.url, batches[0].client, tuple(r for b in batches for r in b)),
                         f"{split.name}: replies")
    return verdict


def attach_split_chart(steps: Sequence[tuple[str, SplitVerdict]], title: str) -> None:
    if steps:
        allure.attach(split_chart(steps), name=title, attachment_type=allure.attachment_type.PNG)


def check_split(split: Split, settings: RunSettings) -> SplitVerdict:
    verdict = measure_split(split, settings)
    attach_split_chart([(split.name, verdict)], split.name)
    decide(verdict)
    return verdict
