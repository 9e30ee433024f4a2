"""The steps of every check: converge, measure, decide; each an Allure step."""

from collections.abc import Callable

import allure

from conformance.probes.evidence import attach_batch
from conformance.settings import Timeouts
from conformance.targets.base import Batch
from conformance.verdicts import Verdict
from conformance.waiting import ProbeResult, converged


def converge(send: Callable[[], Batch], verdict: Callable[[Batch], Verdict], timeouts: Timeouts, what: str) -> int:
    """Wait until `verdict` holds for `required_successes` probe batches in a row."""

    def probe() -> ProbeResult:
        result = verdict(send())
        return ProbeResult(result.ok, result.message)

    with allure.step(f"converge: {what}"):
        return converged(probe, timeouts, what)


def measure(send: Callable[[], Batch], name: str) -> Batch:
    with allure.step(f"measure: {name}"):
        batch = send()
        attach_batch(batch, name)
        return batch


def decide(verdict: Verdict) -> str:
    with allure.step(f"verdict: {'pass' if verdict.ok else 'fail'}: {verdict.message[:160]}"):
        assert verdict.ok, verdict.message
    return verdict.message
