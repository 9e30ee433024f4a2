"""Reading a conformance report back (`meshconf gate`): the YAML, checked against the JSON Schema of
its apiVersion, shipped beside this module (schema/<group>_<version>.json, one file per apiVersion).

A report that does not validate is refused with every problem named by its field's path
(features[3].outcome), so an edited or truncated report never reaches the comparison.
"""

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from conformance.errors import ConformanceError

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
# Listed by path: a report with many problems names the first few; the rest are counted.
MAX_PROBLEMS = 10


def schema_file(api_version: str) -> Path:
    """The schema of an apiVersion: meshconf.dev/v1alpha1 -> schema/meshconf.dev_v1alpha1.json."""
    return SCHEMA_DIR / f"{api_version.replace('/', '_')}.json"


def known_api_versions() -> list[str]:
    return sorted(path.stem.replace("_", "/", 1) for path in SCHEMA_DIR.glob("*.json"))


@cache
def validator(api_version: str) -> Draft202012Validator:
    path = schema_file(api_version)
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def load(path: Path) -> dict[str, Any]:
    """A conformance report from its YAML file, valid against its apiVersion's schema; else a
    ConformanceError naming the file and what is wrong (a missing file, bad YAML, each bad field)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConformanceError(f"report {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConformanceError(f"report {path}: cannot be read: {exc}") from None
    try:
        report = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConformanceError(f"report {path}: not valid YAML: {one_line(exc)}") from None
    if not isinstance(report, dict):
        raise ConformanceError(f"report {path}: not a conformance report (expected a mapping with apiVersion "
                               f"and kind ConformanceReport, got {type(report).__name__})")
    api_version = report.get("apiVersion")
    known = known_api_versions()
    if api_version not in known:
        raise ConformanceError(f"report {path}: apiVersion {api_version!r} is not one this meshconf knows "
                               f"(known: {', '.join(known)}); a newer meshconf may read it")
    found = problems(validator(api_version), report) + duplicate_features(report)
    if found:
        shown = "\n".join(f"  {p}" for p in found[:MAX_PROBLEMS])
        more = f"\n  ... and {len(found) - MAX_PROBLEMS} more" if len(found) > MAX_PROBLEMS else ""
        raise ConformanceError(f"report {path} does not match the {api_version} schema "
                               f"({schema_file(api_version).name}):\n{shown}{more}")
    return report


def problems(check: Draft202012Validator, report: Mapping[str, Any]) -> list[str]:
    """Each problem as "<field path>: <what is wrong>", in the order of the paths."""
    found = {line for error in check.iter_errors(report) for line in describe(error)}
    return sorted(found)


def describe(error: ValidationError) -> list[str]:
    """A missing or unexpected field is named by its own path, not by its parent's."""
    where = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        return [f"{field_path([*where, name])}: required, missing" for name in missing]
    if error.validator == "additionalProperties" and error.validator_value is False and isinstance(instance, dict):
        declared = error.schema.get("properties", {})
        return [f"{field_path([*where, name])}: not a field of this apiVersion" for name in instance
                if name not in declared]
    return [f"{field_path(where)}: {error.message}"]


def duplicate_features(report: Mapping[str, Any]) -> list[str]:
    """The gate compares feature by feature: a name twice would hide one of them."""
    names = [f.get("name") for f in report.get("features", []) if isinstance(f, dict)]
    twice = {name for name, count in Counter(names).items() if count > 1}
    return [f"{field_path(['features', i, 'name'])}: {name!r} appears more than once"
            for i, name in enumerate(names) if name in twice]


def field_path(parts: Iterable[Any]) -> str:
    """features[3].outcome; <root> for the report itself."""
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else f"{text}.{part}" if text else str(part)
    return text or "<root>"


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
