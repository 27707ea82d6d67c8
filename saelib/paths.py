"""Repository-relative paths, so that nothing depends on the working directory (no `../data`)."""

from __future__ import annotations

import os
from pathlib import Path

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
