"""Validating Istio and Gateway API objects against their CRDs' schemas, as the API server does.

The API server of a real cluster validates custom resources against the openAPIV3Schema of
their CRD (kubernetes/kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/registry/
customresource/validator.go) after mutating admission and before validating admission; the local
reference mesh has no API server, so it runs the same schemas through `jsonschema`, after
translating the Kubernetes extensions the API server understands (see _structural). The
harness's own tests use it too: for their manifests, and in the fake Kubernetes API.

The CRDs are package data, unmodified upstream copies: data/crds/ (provenance and license in
its README.md). They are read once per process (schema_set()).

What is not checked, so an object passing here can still be refused by a cluster:
- x-kubernetes-validations (CEL rules): there is no CEL evaluator here. Istio and Gateway API
  express many cross-field rules this way.
- `format` (int32, date-time, ...): the API server checks few of them either.
- Istio's validating webhook, which checks much more than the schema (e.g. a Gateway without
  servers, or a route with both `route` and `redirect`).
"""

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from conformance.errors import ConformanceError
from conformance.targets.data_files import DATA_DIR
from conformance.targets.field_errors import INVALID, NOT_SUPPORTED, REQUIRED, FieldError

CRD_DIR = DATA_DIR / "crds"
ISTIO_CRD_FILE = "istio/crd-all.gen.yaml"
GATEWAY_API_CRD_DIR = "gateway-api"

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Key of one served API: (group, version, kind); group "" is the core group.
GVK = tuple[str, str, str]

# What the API server checks in metadata itself (ObjectMeta), whatever the CRD
# says: CRDs may only restrict name, and Gateway API declares metadata as a
# bare object. Names of custom resources must be DNS-1123 subdomains.
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        # Set by the server; accepted so that documents read back from a cluster validate.
        "uid": {},
        "resourceVersion": {},
        "generation": {},
        "creationTimestamp": {},
        "deletionTimestamp": {},
        "deletionGracePeriodSeconds": {},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array"},
        "managedFields": {"type": "array"},
        "selfLink": {},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Problem:
    """One way an object differs from its schema, and what the API server does about it."""

    field: str  # the JSON path, as kubectl prints it: spec.http[0].route
    detail: str  # in our words: "required field missing", "unknown field", ...
    # The API server's refusal (422 Invalid); None where it prunes the field instead.
    error: FieldError | None
    undeclared: bool = False  # a field the schema does not declare (fieldValidation=Strict refuses it)

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


@dataclass(frozen=True)
class Checked:
    """An object against its schema: what the API server refuses, and what it prunes."""

    causes: list[FieldError]  # refusals: 422 Invalid (the Status's details.causes)
    undeclared: list[str]  # paths of fields the schema does not declare
    pruned: list[str]  # paths of every field the server drops (undeclared ones and nulls)


def crd_files(crd_dir: Path = CRD_DIR) -> list[Path]:
    """The CRD files SchemaSet reads: Istio's bundle and the Gateway API standard channel."""
    istio = crd_dir / ISTIO_CRD_FILE
    if not istio.is_file():
        raise ConformanceError(f"CRD file not found: {istio} (see {CRD_DIR / 'README.md'})")
    gateway_api = sorted((crd_dir / GATEWAY_API_CRD_DIR).glob("*.yaml"))
    if not gateway_api:
        raise ConformanceError(f"Gateway API CRDs not found: {crd_dir / GATEWAY_API_CRD_DIR}/*.yaml")
    return [istio, *gateway_api]


def split_api_version(api_version: str) -> tuple[str, str]:
    """'networking.istio.io/v1' -> ('networking.istio.io', 'v1'); 'v1' -> ('', 'v1')."""
    group, _, version = api_version.rpartition("/")
    return group, version


@functools.cache
def schema_set() -> "SchemaSet":
    """The shipped CRDs' schemas, read on first use and kept for the process (they are large)."""
    return SchemaSet()


class SchemaSet:
    """The openAPIV3Schema of every CRD version in the CRD files, by (group, version, kind)."""

    def __init__(self, crd_dir: Path = CRD_DIR) -> None:
        self.crd_dir = crd_dir
        self.schemas: dict[GVK, dict[str, Any]] = {}
        # (group, kind) -> every version the CRD lists, and whether it is served.
        self.versions: dict[tuple[str, str], dict[str, bool]] = {}
        self._validators: dict[GVK, jsonschema.protocols.Validator] = {}
        for path in crd_files(self.crd_dir):
            self._load(path)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as f:
            for crd in yaml.load_all(f, Loader=_Loader):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    self.versions.setdefault((group, kind), {})[version["name"]] = bool(version.get("served"))
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if schema is None:
                        raise ConformanceError(f"{path}: {kind} {version['name']} has no openAPIV3Schema")
                    self.schemas[(group, version["name"], kind)] = schema

    def covers(self, doc: Mapping[str, Any]) -> bool:
        """Whether a CRD defines this document's kind, in any version.

        Keyed without the version so that validate() can report a version the
        CRD does not serve instead of the document being silently skipped.
        """
        group, _ = split_api_version(str(doc.get("apiVersion", "")))
        return (group, str(doc.get("kind", ""))) in self.versions

    def validate(self, doc: Mapping[str, Any]) -> list[str]:
        """Human-readable problems, each starting with the JSON path; [] when valid."""
        api_version = str(doc.get("apiVersion", ""))
        kind = str(doc.get("kind", ""))
        group, version = split_api_version(api_version)
        versions = self.versions.get((group, kind))
        if versions is None:
            return [f"apiVersion: no CRD in {self.crd_dir} defines kind {kind} in group {group or '(core)'}"]
        if not versions.get(version, False):
            served = ", ".join(sorted(v for v, on in versions.items() if on))
            return [f"apiVersion: {api_version} is not served for {kind} (served versions: {served})"]
        return problems(self._validator((group, version, kind)), doc)

    def check(self, doc: Mapping[str, Any]) -> Checked | None:
        """The object as the API server checks it; None if no CRD here serves its apiVersion and kind
        (the API server would not find the resource: not a schema question)."""
        group, version = split_api_version(str(doc.get("apiVersion", "")))
        kind = str(doc.get("kind", ""))
        if not self.versions.get((group, kind), {}).get(version, False):
            return None
        return check(self._validator((group, version, kind)), doc)

    def _validator(self, gvk: GVK) -> jsonschema.protocols.Validator:
        # Built on first use: most runs touch only a handful of kinds.
        if gvk not in self._validators:
            self._validators[gvk] = schema_validator(self.schemas[gvk])
        return self._validators[gvk]


def schema_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator of whole objects against one CRD version's openAPIV3Schema."""
    return _KubeValidator(_root(schema))


def problems(validator: jsonschema.protocols.Validator, doc: Mapping[str, Any]) -> list[str]:
    """Human-readable problems, each starting with the JSON path; [] when valid."""
    return [str(p) for p in _problems(validator, doc)]


def check(validator: jsonschema.protocols.Validator, doc: Mapping[str, Any]) -> Checked:
    """What the API server refuses in `doc`, and what it prunes (undeclared fields, and nulls
    where the schema does not allow them)."""
    found = _problems(validator, doc)
    return Checked(causes=[p.error for p in found if p.error is not None],
                   undeclared=[p.field for p in found if p.undeclared],
                   pruned=[p.field for p in found if p.error is None])


def _problems(validator: jsonschema.protocols.Validator, doc: Mapping[str, Any]) -> list[Problem]:
    found = {p for error in validator.iter_errors(doc) for p in _messages(error)}
    return sorted(found, key=str)


def _root(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema as the API server applies it to a whole object."""
    root = _structural(schema)
    properties = dict(root.get("properties", {}))
    # Every object carries these; Istio's CRDs leave them out of the schema.
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = _OBJECT_META
    root["properties"] = properties
    root["additionalProperties"] = False
    return root


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of a structural-schema node with Kubernetes extensions turned into JSON Schema.

    Recurses where the data's structure is declared (properties, items,
    additionalProperties). anyOf/oneOf/allOf/not are left as they are: in a
    structural schema they only add value checks over that structure.
    """
    out = dict(node)
    if isinstance(node.get("properties"), dict):
        out["properties"] = {name: _structural(sub) for name, sub in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = _structural(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"])

    if node.get("x-kubernetes-int-or-string"):
        # Either an integer or a string; the CRDs usually spell the anyOf out, but needn't.
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])

    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if out.get("type") == "object" and "additionalProperties" not in out and not preserve:
        # The API server prunes fields the schema does not declare, and kubectl's
        # strict field validation turns that into an error: a typo such as
        # `rout:` would otherwise vanish and the route with it.
        out["additionalProperties"] = False

    if node.get("nullable"):
        # nullable only adds null to what the field accepts.
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
    # Without nullable the API server prunes a null silently. We report it
    # instead: in our manifests it is nearly always an empty YAML key (`hosts:`).
    return out


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """x-kubernetes-list-type: `set` items and `map` keys must be unique, as the API server enforces."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen_items: list[Any] = []
        for item in instance:
            if item in seen_items:
                yield ValidationError(f"duplicate entry {item!r} in a list of unique values")
            seen_items.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[tuple[Any, ...]] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen_keys:
                shown = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
                yield ValidationError(f"duplicate entry with {shown}; entries must differ in {', '.join(keys)}")
            seen_keys.add(key)


# OpenAPI v3.0 schemas are closest to JSON Schema draft 4 (e.g. boolean
# exclusiveMinimum), and draft 4 does not treat 1.0 as an integer, as Kubernetes does not.
# Unknown keywords (x-kubernetes-validations, default, ...) are ignored by jsonschema.
_KubeValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type}
)


def _messages(error: ValidationError) -> list[Problem]:
    path = _path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and error.validator_value is False and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        return [Problem(_join(path, key), "unknown field", None, undeclared=True)
                for key in sorted(map(str, error.instance)) if key not in known]
    if kind == "required" and isinstance(error.instance, dict):
        return [Problem(_join(path, key), "required field missing",
                        FieldError(REQUIRED, _join(path, key), "Required value"))
                for key in error.validator_value if key not in error.instance]
    if kind == "type" and error.instance is None:
        # A null where the schema does not allow one: pruned, not refused.
        return [Problem(path, f"expected {_types(error.validator_value)}, got null", None)]
    if kind == "type":
        detail = f"expected {_types(error.validator_value)}, got {_json_type(error.instance)} {_short(error.instance)}"
        # The API server's words: the value is the actual type (kube-openapi pkg/validation/errors
        # InvalidType, "%s in body must be of type %s: %q", made a field.Invalid by
        # apiextensions-apiserver pkg/apiserver/validation/validation.go).
        actual = _json_type(error.instance)
        words = f'Invalid value: "{actual}": {path} in body must be of type {_types(error.validator_value)}: "{actual}"'
        return [Problem(path, detail, FieldError(INVALID, path, words))]
    if kind == "enum":
        value = _short(error.instance)
        allowed = ", ".join(_short(v) for v in error.validator_value)
        return [Problem(path, f"{value} is not one of: {allowed}",
                        FieldError(NOT_SUPPORTED, path, f"Unsupported value: {value}: supported values: {allowed}"))]
    if kind == "oneOf" and "is valid under each of" in error.message:
        # Istio writes "at most one of these fields" as a oneOf over `required` clauses.
        return [_invalid(path, "sets fields that exclude each other")]
    if kind in ("oneOf", "anyOf"):
        return [_invalid(path, f"matches none of the allowed alternatives{_best_cause(error)}")]
    return [_invalid(path, _short_message(error.message))]


def _invalid(path: str, detail: str) -> Problem:
    return Problem(path, detail, FieldError(INVALID, path, f"Invalid value: {detail}"))


def _best_cause(error: ValidationError) -> str:
    if not error.context:
        return ""
    cause = jsonschema.exceptions.best_match(error.context)
    return f" ({_short_message(cause.message)})" if cause is not None else ""


def _path(parts: Any) -> str:
    """JSON path as kubectl prints it: spec.http[0].route; <root> for the whole object."""
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, str(part))
    return text or "<root>"


def _join(path: str, key: str) -> str:
    return key if path in ("", "<root>") else f"{path}.{key}"


def _types(value: Any) -> str:
    return " or ".join(value) if isinstance(value, list) else str(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_message(message: str, limit: int = 200) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
