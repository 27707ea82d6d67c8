"""Where files live (repository-relative paths, so that nothing depends on the working directory) and how they are
written (atomically, so that a reader never sees half a file)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

ARTIFACTS_ENV = "SAELIB_ARTIFACTS"
"""Environment variable that moves the artifact cache (tests point it at a temporary folder)."""


def repo_root() -> Path:
    """The repository root: the folder that holds `saelib/`."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """`data/` at the repository root (committed inputs and their provenance)."""
    return repo_root() / "data"


def artifacts_root() -> Path:
    """Where generated artifacts live: `$SAELIB_ARTIFACTS`, else `data/artifacts/`."""
    env = os.environ.get(ARTIFACTS_ENV)
    return Path(env).expanduser().resolve() if env else data_dir() / "artifacts"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, mappings, sequences, paths and enums as plain JSON values (keys sorted on dump)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot hash a config value of type {type(obj).__name__}: {obj!r}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """`atomic_write_bytes` of indented JSON."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
