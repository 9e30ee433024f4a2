"""The package's data files (targets/data/*.yaml), read and refused one way.

Each file holds one top-level entry that meshconf reads, and comments naming its upstream source.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import ConformanceError

DATA_DIR = Path(__file__).resolve().parent / "data"


def load(path: Path, key: str, what: str, shape: str, valid: Callable[[Any], bool]) -> Any:
    """The `key` entry of the data file at `path` (`what` it is, for messages), refused unless
    `valid` accepts it; `shape` says what it must be."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConformanceError(f"cannot read {what} {path}: {' '.join(str(exc).split())}") from None
    value = data.get(key) if isinstance(data, dict) else None
    if not valid(value):
        raise ConformanceError(f"{what} {path}: `{key}` must be {shape}")
    return value
