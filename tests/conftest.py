"""Shared pytest fixtures of the harness's own tests: pytest finds them by name, never import one.

Plain helpers and constants shared by tests are in tests/builders.py (those of the tests that
run real Envoy processes in tests/envoy_builders.py). The fakes'
fixtures (api, gateway, fake_tools, scenario, release_server) are registered below
as plugins, so they too are found by name.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Before any test module imports grpc: it sets how gRPC treats forks (see its docstring).
import conformance.targets.local.xds  # noqa: F401

from conformance import manifests
from conformance.settings import Timeouts
from conformance.targets.local.admission.control import AdmissionControl
from conformance.targets.local.admission.injector import Injector
from conformance.webhooks import Webhook, configurations
from conformance.targets.local.admission.control import INJECTOR_MANIFEST
from conformance.targets.local.pods import AddressPool
from conformance.targets.local.xds.secrets import MeshCA
from conformance.targets.kube import Kube
from conformance.waiting import wait_for

if TYPE_CHECKING:  # imported by pytest_plugins below: an import here first would stop their assert rewriting
    from tests.apps_builders import Apps
    from tests.cluster_builders import Machine
    from tests.fakeapi import FakeApi
    from tests.fakegateway import FakeGateway
    from tests.fakes import FakeTools
    from tests.release_server import ReleaseServer

pytest_plugins = ["pytester", "tests.fakeapi", "tests.fakegateway", "tests.fakes", "tests.release_server"]


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    """The local mesh's app processes, started by each test and stopped after it."""
    from tests.apps_builders import Apps

    started = Apps(tmp_path)
    started.register("placeholder")  # the registry file exists from the start
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def kube(api: FakeApi, tmp_path: Path) -> Iterator[Kube]:
    """A Kube client of the fake Kubernetes API (the `api` fixture), with short timeouts."""
    from tests.cluster_builders import write_kubeconfig

    k = Kube(write_kubeconfig(tmp_path / "kubeconfig", api.port),  # type: ignore[attr-defined]
             timeouts=Timeouts(rollout=0.4, install=2.0), poll_interval=0.02)
    yield k
    k.close()


@pytest.fixture
def machine(tmp_path: Path, fake_tools: FakeTools, api: FakeApi, release_server: ReleaseServer,
            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], gateway: FakeGateway) -> Machine:
    """This machine as `meshconf up` finds it, with nothing real but itself (tests/cluster_builders.py Machine)."""
    from tests.cluster_builders import set_up_machine

    return set_up_machine(tmp_path, fake_tools, api, release_server, monkeypatch, capsys, gateway)


@pytest.fixture(scope="module")
def httpbin() -> Iterator[str]:
    """The local mesh's httpbin app on a free port of 127.0.0.1, without a proxy; its base URL."""
    from tests.fakegateway import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "conformance.targets.local.apps", "httpbin", "--listen",
                             f"127.0.0.1:{port}", "--pod", "httpbin-x", "--namespace", "t"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> str | None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return None
        except OSError:
            return "not listening"

    try:
        wait_for(listening, 10, 0.02, "httpbin")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def loopback_ips() -> list[str]:
    """Three addresses of 127.0.0.0/8 unlikely to be in use by another run."""
    base = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    return [f"{base}.{n}" for n in (1, 2, 3)]


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA()


@pytest.fixture(scope="module")
def injector(ca: MeshCA) -> Iterator[Injector]:
    server = Injector(ca, "127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def istio_hooks(ca: MeshCA) -> list[Webhook]:
    """The manifest's webhooks trusting the mesh root, as the mesh fills caBundle."""
    return [hook.with_ca_bundle(ca.root_pem) for hook in configurations(manifests.load(INJECTOR_MANIFEST))]


@pytest.fixture(scope="module")
def admission_control() -> Iterator[AdmissionControl]:
    """The local mesh's admission (istiod's webhooks served on a claimed 127.x block, port 15017)."""
    addresses = AddressPool()
    control = AdmissionControl(MeshCA(), addresses.control_plane)
    try:
        yield control
    finally:
        control.stop()
        addresses.release()
