"""Which mutual TLS mode PeerAuthentications give a workload, a port, and a namespace, as istiod
resolves them (istio/istio, tag 1.28.0: pilot/pkg/security/authn/policy_applier.go
ComposePeerAuthentication; pilot/pkg/model/authentication.go getConfigsForWorkload,
addPeerAuthentication, GetNamespaceMutualTLSMode; pilot/pkg/model/push_context.go
BestEffortInferServiceMTLSMode). Pure: no Envoy."""

import pytest

from conformance.targets.local.translator.peer_authentication import (
    DISABLE,
    PERMISSIVE,
    STRICT,
    PeerPolicy,
    namespace_mode,
    service_mode,
    workload_policy,
)
from tests.builders import NS, make_pod
from tests.envoy_builders import peer_authentication as pa

ROOT = "istio-system"
POD = make_pod("httpbin-1", "127.0.9.1", {"app": "httpbin", "version": "v1"}, ports=(8080, 9090))


def test_no_policy_is_permissive() -> None:
    assert workload_policy(POD, []) == PeerPolicy(PERMISSIVE, {})
    assert namespace_mode(NS, []) is None
    assert service_mode(NS, []) == PERMISSIVE


def test_workload_beats_namespace_beats_mesh() -> None:
    mesh_wide = pa("default", STRICT, namespace=ROOT)
    namespace = pa("default", DISABLE)
    workload = pa("httpbin", PERMISSIVE, selector={"app": "httpbin"})
    assert workload_policy(POD, [mesh_wide]).mode == STRICT
    assert workload_policy(POD, [mesh_wide, namespace]).mode == DISABLE
    # Order of the documents does not matter: the scope does.
    assert workload_policy(POD, [workload, namespace, mesh_wide]).mode == PERMISSIVE


@pytest.mark.parametrize("unset", [None, "UNSET"], ids=["no mtls", "mode UNSET"])
def test_unset_inherits_the_wider_scope(unset: str | None) -> None:
    mesh_wide = pa("default", STRICT, namespace=ROOT)
    assert workload_policy(POD, [mesh_wide, pa("default", unset)]).mode == STRICT
    assert workload_policy(POD, [pa("default", DISABLE), pa("w", unset, selector={"app": "httpbin"})]).mode == DISABLE
    # A mesh policy that says nothing is PERMISSIVE, for workloads and for the namespace mode.
    assert workload_policy(POD, [pa("default", unset, namespace=ROOT)]).mode == PERMISSIVE
    assert namespace_mode(NS, [pa("default", unset, namespace=ROOT)]) == PERMISSIVE
    assert namespace_mode(NS, [mesh_wide, pa("default", unset)]) == STRICT


def test_the_oldest_wins_among_equals() -> None:
    first, second = pa("a", STRICT), pa("b", DISABLE)
    assert workload_policy(POD, [first, second]).mode == STRICT
    assert workload_policy(POD, [second, first]).mode == DISABLE
    one, other = pa("a", STRICT, selector={"app": "httpbin"}), pa("b", DISABLE, selector={"version": "v1"})
    assert workload_policy(POD, [other, one]).mode == DISABLE
    assert namespace_mode(NS, [second, first]) == DISABLE


def test_a_selector_must_match_and_another_namespace_does_not_count() -> None:
    assert workload_policy(POD, [pa("w", STRICT, selector={"app": "other"})]).mode == PERMISSIVE
    assert workload_policy(POD, [pa("w", STRICT, selector={"app": "httpbin", "version": "v2"})]).mode == PERMISSIVE
    assert workload_policy(POD, [pa("default", STRICT, namespace="elsewhere")]).mode == PERMISSIVE
    assert namespace_mode(NS, [pa("default", STRICT, namespace="elsewhere")]) is None


def test_a_selector_in_the_root_namespace_is_ignored() -> None:
    """ComposePeerAuthentication: a workload policy must not be in the root namespace."""
    root_workload = pa("w", DISABLE, namespace=ROOT, selector={"app": "httpbin"})
    assert workload_policy(POD, [root_workload]).mode == PERMISSIVE
    assert workload_policy(POD, [pa("default", STRICT, namespace=ROOT), root_workload]).mode == STRICT
    # Nor is it the mesh's policy.
    assert namespace_mode(NS, [root_workload]) is None


def test_port_level_modes_of_the_workload_policy() -> None:
    policy = workload_policy(POD, [pa("default", PERMISSIVE),
                                   pa("w", STRICT, selector={"app": "httpbin"}, port_modes={8080: DISABLE, 9090: None})])
    # An UNSET port inherits the workload's mode; a port not named has the workload's mode.
    assert policy == PeerPolicy(STRICT, {8080: DISABLE, 9090: STRICT})
    assert (policy.for_port(8080), policy.for_port(9090), policy.for_port(7070)) == (DISABLE, STRICT, STRICT)
    # An UNSET workload mode with ports: the ports inherit the namespace's.
    inherited = workload_policy(POD, [pa("default", DISABLE), pa("w", None, selector={"app": "httpbin"},
                                                                   port_modes={"9090": None, "8080": STRICT})])
    assert inherited == PeerPolicy(DISABLE, {9090: DISABLE, 8080: STRICT})


def test_only_the_workload_policy_gives_port_levels() -> None:
    namespace_ports = pa("default", STRICT, port_modes={8080: DISABLE})  # Istio's validation refuses it
    assert workload_policy(POD, [namespace_ports]) == PeerPolicy(STRICT, {})


def test_namespace_mode_and_service_mode() -> None:
    mesh_wide = pa("default", DISABLE, namespace=ROOT)
    assert namespace_mode(NS, [mesh_wide]) == DISABLE
    assert namespace_mode(NS, [mesh_wide, pa("default", STRICT)]) == STRICT
    # Workload policies do not make the namespace's mode.
    assert namespace_mode(NS, [pa("w", STRICT, selector={"app": "httpbin"})]) is None
    assert namespace_mode(ROOT, [mesh_wide, pa("default", STRICT)]) == DISABLE
    assert service_mode(NS, [pa("w", DISABLE, selector={"app": "httpbin"})]) == PERMISSIVE
    assert service_mode(NS, [pa("default", DISABLE)]) == DISABLE
