"""CustomResourceDefinitions in the fake Kubernetes API (tests/fakeapi.py): what they make it serve.

A kind of a CRD-backed group is served (discovery, and its resource paths) only while its CRD
is applied; objects of it are validated against the CRD's openAPIV3Schema with the code of
conformance/targets/crd_schema.py, and answered as the API server answers (kubernetes/kubernetes: staging/
src/k8s.io/apiextensions-apiserver/pkg/registry/customresource/validator.go for the checks,
staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go NewInvalid for the Status):
- a schema error is 422 Invalid, `<Kind>.<group> "<name>" is invalid: <field>: <detail>` (a list
  in brackets when there are several), one details.causes entry per field;
- fields the schema does not declare, and nulls where it does not allow them, are pruned;
  with fieldValidation=Strict an undeclared field is a 400 "strict decoding error", and with
  the server's default (Warn) a `Warning: 299` header names it.
"""

import re
from dataclasses import dataclass
from typing import Any

from conformance.targets import crd_schema
from conformance.targets.crd_schema import Checked
from conformance.targets.field_errors import INVALID, REQUIRED, FieldError, invalid_message

CRD_GV = "apiextensions.k8s.io/v1"
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Resource:
    """One served resource: a kind in a group/version (what discovery lists)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status_subresource: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the API server names the resource in messages: `pods`, `virtualservices.networking.istio.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> dict[str, Any]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        entry = {"name": self.plural, "singularName": self.singular or self.kind.lower(),
                 "kind": self.kind, "namespaced": self.namespaced, "verbs": verbs}
        return {**entry, "shortNames": list(self.short_names)} if self.short_names else entry


class Crds:
    """The applied CRDs, their served resources, and validation of their objects."""

    def __init__(self) -> None:
        self.by_name: dict[str, dict[str, Any]] = {}
        self._validators: dict[tuple[str, str, str], Any] = {}

    def problems(self, crd: dict[str, Any]) -> list[FieldError]:
        """What apiextensions' validation refuses in a v1 CRD that meshconf could meet."""
        spec = crd.get("spec") or {}
        causes = []
        for field in ("group", "names", "scope", "versions"):
            if not spec.get(field):
                causes.append(FieldError(REQUIRED, f"spec.{field}", "Required value"))
        for index, version in enumerate(spec.get("versions") or []):
            if not (version.get("schema") or {}).get("openAPIV3Schema"):
                causes.append(FieldError(REQUIRED, f"spec.versions[{index}].schema.openAPIV3Schema",
                                         "Required value: schemas are required"))
        expected = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
        name = (crd.get("metadata") or {}).get("name")
        if not causes and name != expected:
            causes.append(FieldError(INVALID, "metadata.name",
                                     f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
        return causes

    def store(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Record an applied CRD as established: the server serves its kinds from now on."""
        names = crd["spec"]["names"]
        conditions = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ]
        stored = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
        crd["status"] = {"conditions": conditions, "acceptedNames": names, "storedVersions": stored}
        self.by_name[crd["metadata"]["name"]] = crd
        self._validators = {k: v for k, v in self._validators.items() if k[0] != crd["spec"]["group"]}
        return crd

    def remove(self, name: str) -> dict[str, Any] | None:
        return self.by_name.pop(name, None)

    def served(self) -> list[Resource]:
        found = []
        for crd in self.by_name.values():
            spec = crd["spec"]
            names = spec["names"]
            found += [Resource(spec["group"], v["name"], names["plural"], names["kind"],
                               spec["scope"] == "Namespaced", names.get("singular", ""),
                               tuple(names.get("shortNames") or ()), "status" in (v.get("subresources") or {}))
                      for v in spec["versions"] if v.get("served", True)]
        return found

    def crd_of(self, resource: Resource) -> dict[str, Any] | None:
        return self.by_name.get(f"{resource.plural}.{resource.group}")

    def check(self, resource: Resource, obj: dict[str, Any]) -> Checked:
        """The object against its version's schema: what is refused, and what is pruned."""
        return crd_schema.check(self._validator(resource), obj)

    def _validator(self, resource: Resource) -> Any:
        key = (resource.group, resource.version, resource.kind)
        if key not in self._validators:
            crd = self.crd_of(resource) or {}
            version = next(v for v in crd["spec"]["versions"] if v["name"] == resource.version)
            self._validators[key] = crd_schema.schema_validator(version["schema"]["openAPIV3Schema"])
        return self._validators[key]


def invalid(resource: Resource, name: str, causes: list[FieldError]) -> dict[str, Any]:
    """The 422 Status of an object that fails validation, as the API server words it."""
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": invalid_message(resource.kind, resource.group, name, causes), "reason": "Invalid",
        "details": {"name": name, "group": resource.group, "kind": resource.kind,
                    "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]},
        "code": 422,
    }


def strict_decoding(resource: Resource, fields: list[str]) -> dict[str, Any]:
    """The 400 of fieldValidation=Strict for undeclared fields."""
    unknown = ", ".join(f'unknown field "{f}"' for f in fields)
    message = (f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: '
               f"strict decoding error: {unknown}")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "BadRequest", "code": 400}


def prune(obj: dict[str, Any], field: str) -> None:
    """Remove one field, written as crd_schema writes paths (spec.http[0].rout), from obj."""
    parts: list[str | int] = [int(index) if index else key for key, index in _PATH_PART.findall(field)]
    node: Any = obj
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)
