"""The local control plane's figures at a growing number of sidecars.

Usage: python bench/push.py [--sizes 20,50,150] [--changes 20] [--timeout 600]

For each size N, a fresh LocalMesh in a temporary directory runs N-1 httpbin copies (each its
own Deployment and Service) and one curl client, every pod with a sidecar. Measured:
- bring-up: from the one apply() of every document to wait_ready() (all pods ready, every
  proxy ACKed), and apply() alone;
- route changes: `--changes` applies of a VirtualService on one httpbin service, alternating
  two variants so each one changes routes; apply() returns when every proxy it changed has
  ACKed (LocalMesh.push -> ControlPlane.wait_settled), so its time is "apply to all affected
  proxies ACKed"; also how many proxies were sent a response each time;
- memory: each Envoy's own memory (RssAnon: VmRSS also counts the Envoy binary's pages, which
  all Envoys share), and the harness's own RSS growth, per proxy;
- inotify instances held by the harness and its children, before and after bring-up.
Below the table, one line per size says where the time and memory went: CPU seconds spent in
bring-up by the harness, the Envoys and the apps; the pushes bring-up took; the Envoys' and
apps' VmRSS and RssAnon; one sidecar's configuration size by xDS type; and the median of each
phase of a route change (see PhaseClock).

Each size runs in a child process of its own, so one size's memory does not hide in the next
one's harness RSS.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from conformance.manifests import load
from conformance.probes.latency import percentile
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.target import namespace_doc
from conformance.targets.local.translator import Translation
from conformance.targets.local.xds.protos import SHORT_NAMES
from conformance.targets.local.xds.snapshot import Snapshots

NAMESPACE = "bench"
# The service whose VirtualService the route changes apply.
ROUTED = "httpbin-1"
MIB = 1024 * 1024
INOTIFY = "anon_inode:inotify"
# What the child prints before its figures, so the parent finds them among other output.
RESULT_MARK = "BENCH-RESULT "
COLUMNS = (
    "proxies", "bring-up s", "apply() s", "apply p50 ms", "apply p95 ms", "proxies pushed per apply",
    "Envoy own MiB/proxy", "harness RSS MiB/proxy", "inotify instances",
)


# -- documents ---------------------------------------------------------------------------------


def httpbin_copies(count: int) -> list[dict[str, Any]]:
    """`count` httpbin Deployments and Services named httpbin-1..count, sharing one ServiceAccount.

    manifests/clients/httpbin.yaml selects its pods by `app: httpbin`; each copy gets its own app
    label, so each Service selects its own Deployment's pod only.
    """
    docs = load("clients/httpbin.yaml")
    by_kind = {d["kind"]: d for d in docs}
    out: list[dict[str, Any]] = [by_kind["ServiceAccount"]]
    for i in range(1, count + 1):
        name = f"httpbin-{i}"
        service = copy.deepcopy(by_kind["Service"])
        service["metadata"]["name"] = name
        service["metadata"]["labels"].update({"app": name, "service": name})
        service["spec"]["selector"]["app"] = name
        deployment = copy.deepcopy(by_kind["Deployment"])
        deployment["metadata"]["name"] = name
        deployment["spec"]["selector"]["matchLabels"]["app"] = name
        deployment["spec"]["template"]["metadata"]["labels"]["app"] = name
        out += [service, deployment]
    return out


def route_change(variant: int) -> dict[str, Any]:
    """A VirtualService on ROUTED; its two variants differ in routes, so each apply changes RDS."""
    route = [{"destination": {"host": ROUTED}}]
    if variant % 2 == 0:
        http = [
            {"match": [{"headers": {"x-bench": {"exact": "a"}}}], "route": route},
            {"route": route},
        ]
    else:
        http = [{"route": route, "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 10}}}}]
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "bench-route"},
        "spec": {"hosts": [ROUTED], "http": http},
    }


# -- process figures ----------------------------------------------------------------------------


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/<pid>/status. VmRSS counts the pages of the Envoy binary each
    process maps, which all Envoys share; RssAnon is the process's own memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def inotify_instances(pids: Sequence[int]) -> int:
    """Inotify instances the processes hold: each is one fd linked to anon_inode:inotify."""
    count = 0
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone meanwhile
            continue
        for fd in fds:
            try:
                count += os.readlink(fd) == INOTIFY
            except OSError:
                continue
    return count


def user_inotify_instances() -> int:
    """Inotify instances of every process of this user that can be read: the limit is per user."""
    uid = os.getuid()
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid]
    return inotify_instances(pids)


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


# -- one size, in a child process ----------------------------------------------------------------


def measure(size: int, changes: int, timeout: float) -> dict[str, Any]:
    """Every figure of one size. Raises whatever the mesh raises; the mesh is stopped either way."""
    harness = os.getpid()
    inotify_before = inotify_instances([harness])
    user_inotify_before = user_inotify_instances()
    docs = [namespace_doc(NAMESPACE, {"istio-injection": "enabled"})]
    docs += httpbin_copies(size - 1) + load("clients/curl.yaml")
    with tempfile.TemporaryDirectory(prefix="meshconf-push-") as tmp:
        rss_before, cpu_before = rss_bytes(harness), cpu_seconds(harness)
        mesh = LocalMesh(Path(tmp) / "run")
        try:
            started = time.monotonic()
            mesh.apply(docs, NAMESPACE)
            applied = time.monotonic()
            mesh.wait_ready(NAMESPACE, timeout, 0.1)
            ready = time.monotonic()
            log(f"N={size}: apply {applied - started:.1f}s, ready {ready - started:.1f}s")
            proxies = [p.proxy for p in mesh.running() if p.proxy is not None]
            if len(proxies) != size:
                raise RuntimeError(f"{len(proxies)} proxies run, {size} wanted")
            children = [c.pid for c in mesh.supervisor.children()]
            envoy_pids = [p.child.pid for p in proxies if p.child is not None]
            app_pids = [pid for pid in children if pid not in envoy_pids]
            cpu = {
                "harness": cpu_seconds(harness) - cpu_before,
                "Envoys": sum(cpu_seconds(pid) for pid in envoy_pids),
                "apps": sum(cpu_seconds(pid) for pid in app_pids),
            }
            # Each readiness change is a push to every proxy: how many bring-up took.
            bring_up_pushes = {
                "mesh pushes": mesh.control_plane.version,
                "responses/proxy": sum(mesh.control_plane.pushes(p.node_id) for p in proxies) / size,
            }
            config_kib = config_size(mesh)
            envoy_rss = sum(rss_bytes(pid) for pid in envoy_pids)
            envoy_anon = sum(rss_bytes(pid, "RssAnon") for pid in envoy_pids)
            app_rss = sum(rss_bytes(pid) for pid in app_pids)
            app_anon = sum(rss_bytes(pid, "RssAnon") for pid in app_pids)
            rss_up = rss_bytes(harness)
            inotify_after = inotify_instances([harness, *children])
            user_inotify_after = user_inotify_instances()
            changes_seen = route_changes(mesh, changes)
            log(f"N={size}: {changes} route changes done")
        finally:
            mesh.stop()
    return {
        "proxies": size,
        "bring_up": ready - started,
        "apply": applied - started,
        "bring_up_cpu": cpu,
        "bring_up_pushes": bring_up_pushes,
        "config_kib": config_kib,
        "changes": changes_seen,
        "envoy_rss_per_proxy": envoy_rss / size / MIB,
        "envoy_anon_per_proxy": envoy_anon / size / MIB,
        "app_rss_per_pod": app_rss / size / MIB,
        "app_anon_per_pod": app_anon / size / MIB,
        "harness_rss_per_proxy": (rss_up - rss_before) / size / MIB,
        "harness_rss": rss_up / MIB,
        "inotify": [inotify_before, inotify_after],
        "user_inotify": [user_inotify_before, user_inotify_after],
    }


def config_size(mesh: LocalMesh) -> dict[str, float]:
    """KiB of serialized resources per xDS type in the curl sidecar's configuration: what one
    proxy is sent for each type that changes (all of it: state of the world)."""
    [curl] = [p for p in mesh.running() if p.workload.name == "curl"]
    snapshots = Snapshots()
    try:
        snapshot = snapshots.of(Translation(mesh.state()).proxy(curl.model))
    finally:
        snapshots.done()
    return {
        SHORT_NAMES[type_url]: sum(r.message.ByteSize() for r in by_name.values()) / 1024
        for type_url, by_name in snapshot.items()
    }


def route_changes(mesh: LocalMesh, changes: int) -> list[dict[str, float]]:
    """Per apply: its duration and phases (ms), and how many proxies were sent a response."""
    node_ids = [p.proxy.node_id for p in mesh.running() if p.proxy is not None]
    clock = PhaseClock(mesh)
    seen: list[dict[str, float]] = []
    for i in range(changes):
        before = {n: mesh.control_plane.pushes(n) for n in node_ids}
        clock.start()
        mesh.apply([route_change(i)], NAMESPACE)
        phases = clock.stop()
        phases["pushed"] = sum(mesh.control_plane.pushes(n) > before[n] for n in node_ids)
        seen.append(phases)
    return seen


class PhaseClock:
    """Splits apply() at the control plane's calls, wrapped on this mesh's instance only:
    - translate: from apply() to ControlPlane.push (validation, translation, conversion to Any);
    - set: ControlPlane.push (compare and store each proxy's resources, wake their streams);
    - wait ACKs: ControlPlane.wait_settled, until every changed proxy ACKed.
    """

    def __init__(self, mesh: LocalMesh) -> None:
        plane = mesh.control_plane
        self._marks: dict[str, float] = {}
        push, wait_settled = plane.push, plane.wait_settled

        def timed_push(resources: Any) -> list[str]:
            self._marks["push"] = time.monotonic()
            changed = push(resources)
            self._marks["pushed"] = time.monotonic()
            return changed

        def timed_wait(waited: Collection[str], timeout: float, since: int = 0) -> None:
            wait_settled(waited, timeout, since)
            self._marks["settled"] = time.monotonic()

        plane.push = timed_push  # type: ignore[method-assign]
        plane.wait_settled = timed_wait  # type: ignore[method-assign]

    def start(self) -> None:
        self._marks = {"start": time.monotonic()}

    def stop(self) -> dict[str, float]:
        m = self._marks | {"end": time.monotonic()}
        phases = {
            "total": m["end"] - m["start"],
            "translate": m["push"] - m["start"],
            "set": m["pushed"] - m["push"],
            "wait ACKs": m["settled"] - m["pushed"],
        }
        return {k: v * 1000 for k, v in phases.items()}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the table -----------------------------------------------------------------------------------


def row(result: dict[str, Any]) -> list[str]:
    totals = [c["total"] for c in result["changes"]]
    pushed = sorted({int(c["pushed"]) for c in result["changes"]})
    inotify, user = result["inotify"], result["user_inotify"]
    return [
        str(result["proxies"]),
        f"{result['bring_up']:.1f}",
        f"{result['apply']:.1f}",
        f"{percentile(totals, 0.50):.0f}",
        f"{percentile(totals, 0.95):.0f}",
        "/".join(map(str, pushed)),
        f"{result['envoy_anon_per_proxy']:.1f}",
        f"{result['harness_rss_per_proxy']:.2f}",
        f"{inotify[0]} -> {inotify[1]} (user {user[0]} -> {user[1]})",
    ]


def print_table(results: Sequence[dict[str, Any]]) -> None:
    rows = [list(COLUMNS)] + [row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(r, widths)))
    print()
    for r in results:
        cpu = ", ".join(f"{who} {seconds:.1f}" for who, seconds in r["bring_up_cpu"].items())
        cpu += "".join(f", {what} {count:.0f}" for what, count in r["bring_up_pushes"].items())
        sizes = ", ".join(f"{kind} {kib:.1f}" for kind, kib in r["config_kib"].items())
        phases = [k for k in r["changes"][0] if k not in ("total", "pushed")]
        medians = ", ".join(f"{k} {percentile([c[k] for c in r['changes']], 0.5):.0f}" for k in phases)
        print(
            f"N={r['proxies']}: bring-up CPU s: {cpu}; "
            f"Envoy VmRSS {r['envoy_rss_per_proxy']:.1f} MiB/proxy; "
            f"app processes RSS {r['app_rss_per_pod']:.1f}, RssAnon {r['app_anon_per_pod']:.1f} MiB/pod; "
            f"harness RSS {r['harness_rss']:.0f} MiB after bring-up; one sidecar's config KiB: {sizes}; "
            f"apply p50 ms by phase: {medians}"
        )


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any] | str:
    """One size in a child process: its figures, or why it failed."""
    argv = [sys.executable, __file__, "--one", str(size), "--changes", str(args.changes),
            "--timeout", str(args.timeout)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not marked:
        return f"N={size} failed (exit {done.returncode}); its output is above"
    return json.loads(marked[-1][len(RESULT_MARK):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,50,150", help="proxies per mesh, comma-separated")
    parser.add_argument("--changes", type=int, default=20, help="route changes per size")
    parser.add_argument("--timeout", type=float, default=600.0, help="wait_ready's timeout, seconds")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's own size
    args = parser.parse_args()
    if args.one is not None:
        print(RESULT_MARK + json.dumps(measure(args.one, args.changes, args.timeout)), flush=True)
        return
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for size in (int(s) for s in args.sizes.split(",")):
        outcome = run_size(size, args)
        if isinstance(outcome, str):
            failures.append(outcome)
        else:
            results.append(outcome)
    if results:
        print_table(results)
    # Other runs on the machine slow every figure: the load says how busy it was.
    print(f"wall time {time.monotonic() - started:.0f}s; 1-min load average at start {load_at_start:.1f}, "
          f"at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
