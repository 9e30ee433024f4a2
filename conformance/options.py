"""Cluster-target options, declared once for both `meshconf` (argparse) and the pytest plugin."""

import argparse
from collections.abc import Callable
from typing import Any

from conformance.settings import RunSettings

# The RunSettings fields these options fill; `meshconf run` hands them on to pytest unchanged.
VALUES = ("istio_version", "kubernetes_version", "install_method", "cluster_name", "ingress_port",
          "ingress_https_port")
SWITCHES = ("reuse", "keep", "force", "yes")


def add_cluster_options(add: Callable[..., Any]) -> None:
    """`add` is argparse's add_argument or pytest's addoption: both take the same arguments."""
    defaults = RunSettings()
    add("--istio-version", default=defaults.istio_version, help="cluster targets: the Istio version to install")
    add("--kubernetes-version", default=defaults.kubernetes_version,
        help="kind: Kubernetes minor of the pinned node image")
    add("--install-method", choices=("istioctl", "helm"), default=defaults.install_method,
        help="cluster targets: install Istio with istioctl or Helm")
    add("--cluster-name", default=defaults.cluster_name, help="kind: cluster name")
    add("--ingress-port", type=int, default=defaults.ingress_port,
        help="kind: host port on 127.0.0.1 for the ingress gateway's HTTP")
    add("--ingress-https-port", type=int, default=defaults.ingress_https_port,
        help="kind: host port on 127.0.0.1 for the ingress gateway's HTTPS")
    add("--reuse", action="store_true", help="kind: run on an existing cluster of that name")
    add("--keep", action="store_true", help="leave what the run created in place")
    add("--force", action="store_true", help="run an Istio/Kubernetes pair outside Istio's support matrix")
    add("--install-mesh", action=argparse.BooleanOptionalAction, default=None,
        help="kubeconfig: install Istio (default: assume it is installed)")
    add("--yes", action="store_true",
        help="kubeconfig: allow installing or removing a mesh on a context meshconf did not create")


def as_pytest_args(values: Any) -> list[str]:
    """The options' values (an argparse namespace) as pytest command-line arguments."""
    args = []
    for name in VALUES:
        args += ["--" + name.replace("_", "-"), str(getattr(values, name))]
    if values.install_mesh is not None:
        args.append("--install-mesh" if values.install_mesh else "--no-install-mesh")
    return args + ["--" + name for name in SWITCHES if getattr(values, name)]


def settings_values(values: Any) -> dict[str, Any]:
    """The options' values as RunSettings keyword arguments."""
    return {name: getattr(values, name) for name in (*VALUES, *SWITCHES, "install_mesh")}
