"""Loading the project's manifests (manifests/ in the repo) by name.

Every problem becomes a one-line ManifestError naming the file, so the CLI can
print it as is and the user can jump to the spot.
"""

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import ManifestError

MANIFESTS_ENV = "MESHCONF_MANIFESTS"
# Pods the suites only send through admission as a server-side dry run (dryRun=All): never created.
DRY_RUN_ONLY = ("injection/dry-run-pod.yaml",)
YAML_SUFFIXES = (".yaml", ".yml")

# libyaml is much faster on the large CRD files; fall back to the pure-Python loader.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses duplicate mapping keys.

    PyYAML silently keeps the last of two equal keys; kubectl's strict decoding
    rejects them. A duplicated `route:` would otherwise drop a route unnoticed.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping below reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def manifests_dir() -> Path:
    """The manifests that ship with meshconf (manifests/ in a checkout), or $MESHCONF_MANIFESTS."""
    override = os.environ.get(MANIFESTS_ENV)
    if override:
        return Path(override)
    import conformance.manifests_data

    return Path(conformance.manifests_data.__file__).resolve().parent


def load(name: str) -> list[dict[str, Any]]:
    """Documents of a manifest given by name under manifests_dir(), or by a path to a file."""
    return load_file(_resolve(name))


def _resolve(name: str) -> Path:
    given = Path(name)
    if given.is_absolute():
        return given
    # A name under manifests/ wins over a same-named file in the working directory.
    under_dir = manifests_dir() / given
    if under_dir.is_file():
        return under_dir
    if given.is_file():
        return given
    raise ManifestError(f"manifest not found: {name} (looked in {manifests_dir()} and {Path.cwd()})")


def load_file(path: Path) -> list[dict[str, Any]]:
    """Non-empty documents of a multi-document YAML file, each checked to be a k8s object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest: {_one_line(str(e))}") from None
    docs: list[dict[str, Any]] = []
    for number, line, doc in _parse(path, text):
        if doc is None:  # empty document, e.g. after a trailing `---`
            continue
        _check_object(path, number, line, doc)
        docs.append(doc)
    return docs


def all_files() -> list[Path]:
    """Every YAML file under manifests_dir(), sorted, for tests that check them all."""
    root = manifests_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)


def _parse(path: Path, text: str) -> list[tuple[int, int, Any]]:
    """(1-based document number, 1-based start line, data) for each document."""
    loader = _StrictLoader(text)
    out: list[tuple[int, int, Any]] = []
    try:
        # Composing node by node (what load_all does inside) keeps each document's start line.
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else 0
            out.append((len(out) + 1, line, loader.construct_document(node)))
    except yaml.MarkedYAMLError as e:
        raise ManifestError(_yaml_error(path, e)) from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: malformed YAML: {_one_line(str(e))}") from None
    finally:
        loader.dispose()
    return out


def _yaml_error(path: Path, e: yaml.MarkedYAMLError) -> str:
    # problem_mark is where the parser gave up, which is where the user should look.
    mark = e.problem_mark or e.context_mark
    problem = e.problem or e.context or "unknown problem"
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: malformed YAML: {_one_line(problem)}"


def _check_object(path: Path, number: int, line: int, doc: Any) -> None:
    where = f"{path}:{line}" if line else str(path)
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: document {number} is a {type(doc).__name__}, not a mapping")
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ManifestError(f"{where}: document {number} lacks {key}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise ManifestError(f"{where}: document {number} ({doc['kind']}) lacks metadata.name")


def _one_line(text: str) -> str:
    return " ".join(text.split())
