"""Cluster-target options, declared once for both `meshconf` (argparse) and the pytest plugin."""

import argparse
from collections.abc import Callable
from typing import Any

from conformance.errors import ConformanceError
from conformance.mesh_upgrade import upgrade_problem
from conformance.settings import RunSettings
from conformance.targets import ingress

# The RunSettings fields these options fill; `meshconf run` hands them on to pytest unchanged.
VALUES = ("istio_version", "kubernetes_version", "install_method", "cluster_name", "ingress_port",
          "ingress_https_port")
SWITCHES = ("reuse", "keep", "force", "yes")
# Values handed on only when given (their default, None, means "look for it").
OPTIONAL_VALUES = ("ingress_selector", "ingress_namespace", "upgrade_from")

# The targets each option means something on; given for another target, it is refused by name
# rather than silently ignored.
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "istio_version": ("kind", "kubeconfig"),
    "upgrade_from": ("kind", "kubeconfig"),
    "kubernetes_version": ("kind",),
    "install_method": ("kind", "kubeconfig"),
    "cluster_name": ("kind",),
    "ingress_port": ("kind",),
    "ingress_https_port": ("kind",),
    "reuse": ("kind",),
    "keep": ("kind", "kubeconfig"),
    "force": ("kind", "kubeconfig"),
    "yes": ("kubeconfig",),
    "install_mesh": ("kubeconfig",),
    "context": ("kubeconfig",),
    "ingress_selector": ("kubeconfig",),
    "ingress_namespace": ("kubeconfig",),
    "local_mutant": ("local",),
}


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def positive_seconds(text: str) -> float:
    """An argparse type: seconds > 0 (a timeout of 0 or less would fail every check at once)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds greater than 0")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer of at least 1")
    return value


def port(text: str) -> int:
    value = int(_number(text, int))
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return value


def pod_label(text: str) -> str:
    """An argparse type: one pod label KEY=VALUE (what --ingress-selector takes)."""
    try:
        ingress.parse_selector(text)
    except ConformanceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def check_applicable(values: Any, target: str, why: str = "") -> None:
    """Refuse, by name, each option given (not at its default) that does nothing on target."""
    defaults = RunSettings()
    for name, targets in APPLIES_TO.items():
        if target in targets or not hasattr(values, name):
            continue
        given = getattr(values, name)
        # A repeatable option (--local-mutant) not given is an empty list.
        if given != getattr(defaults, name, None) and given != []:
            flag = "--" + name.replace("_", "-")
            reason = f" ({why})" if why else ""
            raise ConformanceError(
                f"{flag} does not apply to target {target}{reason}; it applies to: {', '.join(targets)}"
            )


def add_cluster_options(add: Callable[..., Any]) -> None:
    """`add` is argparse's add_argument or pytest's addoption: both take the same arguments."""
    defaults = RunSettings()
    add("--istio-version", default=defaults.istio_version, help="cluster targets: the Istio version to install")
    add("--upgrade-from", default=defaults.upgrade_from, metavar="VERSION",
        help="cluster targets: the Istio release MeshUpgrade upgrades from (default: the previous minor's newest patch)")
    add("--kubernetes-version", default=defaults.kubernetes_version,
        help="kind: Kubernetes minor of the pinned node image")
    add("--install-method", choices=("istioctl", "helm"), default=defaults.install_method,
        help="cluster targets: install Istio with istioctl or Helm")
    add("--cluster-name", default=defaults.cluster_name, help="kind: cluster name")
    add("--ingress-port", type=port, default=defaults.ingress_port,
        help="kind: host port on 127.0.0.1 for the ingress gateway's HTTP")
    add("--ingress-https-port", type=port, default=defaults.ingress_https_port,
        help="kind: host port on 127.0.0.1 for the ingress gateway's HTTPS")
    add("--reuse", action="store_true", help="kind: run on an existing cluster of that name")
    add("--keep", action="store_true", help="leave what the run created in place")
    add("--force", action="store_true", help="run an Istio/Kubernetes pair outside Istio's support matrix")
    add("--install-mesh", action=argparse.BooleanOptionalAction, default=None,
        help="kubeconfig: install Istio (default: assume it is installed)")
    add("--yes", action="store_true",
        help="kubeconfig: allow installing or removing a mesh on a context meshconf did not create")
    known = ", ".join(ingress.KNOWN_SELECTORS)
    add("--ingress-selector", type=pod_label, default=defaults.ingress_selector, metavar="KEY=VALUE",
        help=f"kubeconfig: the ingress gateway's pod label (default: look for {known})")
    add("--ingress-namespace", default=defaults.ingress_namespace, metavar="NAME",
        help=f"kubeconfig: the ingress gateway's namespace (default: look in {', '.join(ingress.KNOWN_NAMESPACES)})")


def check_upgrade_from(settings: RunSettings) -> None:
    """Refuse a --upgrade-from that cannot be upgraded to the Istio under test, before anything starts."""
    if settings.upgrade_from is not None:
        problem = upgrade_problem(settings.upgrade_from, settings.istio_version)
        if problem:
            raise ConformanceError(problem)


def as_pytest_args(values: Any) -> list[str]:
    """The options' values (an argparse namespace) as pytest command-line arguments."""
    args = []
    for name in VALUES:
        args += ["--" + name.replace("_", "-"), str(getattr(values, name))]
    for name in OPTIONAL_VALUES:
        if getattr(values, name) is not None:
            args += ["--" + name.replace("_", "-"), str(getattr(values, name))]
    if values.install_mesh is not None:
        args.append("--install-mesh" if values.install_mesh else "--no-install-mesh")
    return args + ["--" + name for name in SWITCHES if getattr(values, name)]


def settings_values(values: Any) -> dict[str, Any]:
    """The options' values as RunSettings keyword arguments."""
    return {name: getattr(values, name) for name in (*VALUES, *SWITCHES, *OPTIONAL_VALUES, "install_mesh")}
