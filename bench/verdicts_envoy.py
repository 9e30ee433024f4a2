"""The WeightedSplit check repeated K times on the real local mesh: how often does a correct split fail?

Usage: python bench/verdicts_envoy.py [--repeats K] [--manifest NAME]
Brings up the local reference mesh with Bookinfo, applies the 80/20 reviews route
once, converges, then runs the sequential split test K times and prints how many
failed, with the requests spent. The simulated false-failure rate is in bench/verdicts.py.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from conformance import manifests
from conformance.checks import Split, measure_split
from conformance.settings import RunSettings
from conformance.targets.local.target import LocalTarget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--manifest", default="istio/traffic/virtual-service-reviews-80-20.yaml")
    parser.add_argument("--concurrency", type=int, default=Split.concurrency, help="parallel connections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshconf-bench-") as tmp:
        settings = RunSettings(work_dir=Path(tmp))
        target = LocalTarget(settings)
        target.up()
        try:
            run(target, settings, args.repeats, args.manifest, args.concurrency)
        finally:
            target.down()


def run(target: LocalTarget, settings: RunSettings, repeats: int, manifest: str, concurrency: int) -> None:
    with target.namespace("bench", {"istio-injection": "enabled"}) as ns:
        target.apply(manifests.load("bookinfo/bookinfo.yaml") + manifests.load("clients/curl.yaml"), ns)
        target.wait_ready(ns)
        target.apply(manifests.load("istio/traffic/destination-rule-all.yaml"), ns)
        route = manifests.load(manifest)
        target.apply(route, ns)
        weights = {d["destination"]["subset"]: d["weight"] for d in route[0]["spec"]["http"][0]["route"]}
        client = target.client("curl", ns)
        uniform = {version: 1 / 3 for version in ("v1", "v2", "v3")}
        split = Split("bench", client, "http://reviews:9080/reviews/0", weights, uniform, concurrency=concurrency)
        failed, spent, started = 0, [], time.monotonic()
        for i in range(repeats):
            verdict = measure_split(split, settings, converge_first=i == 0)
            spent.append(verdict.n)
            if not verdict.ok:
                failed += 1
                print(f"repeat {i + 1} FAILED:\n{verdict.message}")
        wall = time.monotonic() - started
        plan = verdict.plan
        print(f"split {weights} on the local mesh (Envoy weighted clusters), {plan.summary()}")
        print(f"repeats: {repeats}, failed: {failed}, passed: {repeats - failed}")
        print(f"requests per check: mean {statistics.mean(spent):.0f}, min {min(spent)}, max {max(spent)}; "
              f"exact E[N] under the expected split {plan.expected_requests:.0f}")
        print(f"total requests {sum(spent)}, wall {wall:.1f}s ({sum(spent) / wall:.0f} requests/s)")


if __name__ == "__main__":
    main()
