"""The artifact cache: every expensive result lives in `artifacts_root()/<kind>/<name>-<hash of its config>/`.

A changed parameter gives a new hash, so a stale artifact is never reused. An artifact is built inside
`<dir>.partial/` (which a resumable build may use for checkpoints and which survives an interruption), then
sealed with `cfg.json` and `MANIFEST.json` (size and sha256 of every file) and renamed into place. A folder whose
manifest is missing or does not match its files is treated as corrupt: it is deleted and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from saelib.paths import artifacts_root, atomic_write_json, file_sha256, to_jsonable

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
CONFIG = "cfg.json"


def config_hash(cfg: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of `cfg` (a dataclass or a mapping)."""
    text = json.dumps(to_jsonable(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def artifact_dir(kind: str, name: str, cfg: Any, root: Path | None = None) -> Path:
    """`root/kind/name-<hash>`; `root` defaults to `artifacts_root()`."""
    for label, value in (("kind", kind), ("name", name)):
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"{label} must be a plain folder name, got {value!r}")
    return (root or artifacts_root()) / kind / f"{name}-{config_hash(cfg)}"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file under `folder` in `folder/MANIFEST.json`."""
    folder = Path(folder)
    entries = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(folder)
    }
    atomic_write_json(folder / MANIFEST, entries)


def verify_manifest(folder: Path) -> bool:
    """True when `folder/MANIFEST.json` exists and every file it names is present with its size and sha256."""
    folder = Path(folder)
    try:
        entries = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(entries, dict) or not entries:
        return False
    for rel, meta in entries.items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != meta.get("size") or file_sha256(p) != meta.get("sha256"):
            return False
    return True


def partial_dir(final: Path) -> Path:
    """Where `final` is built before it is sealed; kept after an interruption so that a build can resume."""
    return final.with_name(final.name + ".partial")


class DiskFullError(OSError):
    """The disk filled up while an artifact was written; the message is one line naming the path."""


def disk_full_error(path: Path | str, cause: BaseException | None = None) -> DiskFullError:
    """The one-line `DiskFullError` for `path` (`cause`: the error raised by the write, for its file name)."""
    where = getattr(cause, "filename", None) or path
    return DiskFullError(errno.ENOSPC, f"no space left on device while writing {where}; free some space and rerun")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says that the disk is full: an `OSError(ENOSPC)`, or torch's `RuntimeError` from a
    serialiser whose write came up short (`unexpected pos`, `file write failed`)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error)
    return isinstance(error, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


@contextlib.contextmanager
def disk_full_is_one_line(path: Path | str) -> Iterator[None]:
    """Turn a disk-full error raised inside the block into a one-line `DiskFullError` naming `path`."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise


def clear_partial(work: Path, keep: Sequence[str]) -> None:
    """Delete everything in the build folder `work` except the files named in `keep` (paths relative to it)."""
    kept = {Path(k) for k in keep}
    parents = {p for k in kept for p in k.parents}
    for path in sorted(work.rglob("*"), reverse=True):  # children before their folders
        rel = path.relative_to(work)
        if rel in kept and path.is_file():
            continue
        if rel in parents and path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # removed when nothing kept is left under it
            continue
        log.warning("removing stale %s from an earlier attempt", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _replace_corrupt(final: Path) -> None:
    try:
        shutil.rmtree(final)
    except PermissionError as e:
        raise PermissionError(
            e.errno, f"cannot delete the corrupt artifact {final} ({e.strerror}: {e.filename}); delete it by hand"
        ) from None


def cached_artifact(
    kind: str,
    name: str,
    cfg: Any,
    build: Callable[[Path], None],
    *,
    root: Path | None = None,
    force: bool = False,
    keep: Sequence[str] | None = None,
) -> Path:
    """Return the sealed artifact folder for `(kind, name, cfg)`, building it with `build(work_dir)` when needed.

    `build` writes its files into `work_dir` (which may hold a previous interrupted attempt's files, e.g.
    checkpoints). On success the folder gets `cfg.json` and a manifest and is renamed into place; on failure it
    stays as `<dir>.partial` for the next attempt. A sealed folder that fails verification is rebuilt.

    Args:
        keep: the files (relative to `work_dir`) that a resumable build reuses from an earlier attempt; everything
            else in `work_dir` is deleted before `build` runs, so that stale files are never sealed into the
            artifact. `None` keeps everything (a build that checks its own leftovers, e.g. activation shards).

    Raises:
        DiskFullError: the disk filled up (one line naming the path).
    """
    final = artifact_dir(kind, name, cfg, root)
    if not force and final.exists() and verify_manifest(final):
        log.debug("cache hit %s", final)
        return final
    with _build_lock(final):  # another process building the same artifact: wait for it, then read its result
        if final.exists():
            if not force and verify_manifest(final):
                return final
            log.warning("artifact %s is %s; recomputing", final, "forced" if force else "corrupt or incomplete")
            _replace_corrupt(final)
        work = partial_dir(final)
        with disk_full_is_one_line(work):
            work.mkdir(parents=True, exist_ok=True)
            if keep is not None:
                clear_partial(work, keep)
            log.info("building %s", final)
            build(work)
            atomic_write_json(work / CONFIG, {"kind": kind, "name": name, "config": cfg})
            write_manifest(work)
            os.replace(work, final)
    return final


@contextlib.contextmanager
def _build_lock(final: Path):
    """An exclusive advisory lock (`fcntl.flock` on `<root>/.locks/<kind>--<artifact>.lock`, beside the cache so
    that its folders hold artifacts only) held while `final` is built, so that two processes asking for the same
    artifact never write into the same `.partial` folder at once."""
    locks = final.parent.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(locks / f"{final.parent.name}--{final.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_result(kind: str, name: str, key: Any, compute: Callable[[], Any]) -> Any:
    """`compute()` once per `(kind, name, key)`: the result is kept in the artifact cache and read back afterwards.

    The value is stored with `torch.save` as `result.pt` in the folder `cached_artifact(kind, name, key, ...)` and
    loaded with `weights_only=False`, so anything picklable round-trips (tensors, numbers, NamedTuples,
    DataFrames); load only caches this project wrote.

    Args:
        kind, name: the artifact's folder, as in `cached_artifact`.
        key: what identifies the result (hashed into the folder name): every input that changes it.
        compute: a callable without arguments, e.g. `functools.partial(metrics.masked_explained_variance, sae, x,
            masks)`.

    Returns:
        What `compute()` returned (on a cache hit, the stored copy).
    """
    import torch  # here, so that the cache itself stays importable without loading torch

    def build(work: Path) -> None:
        torch.save(compute(), work / "result.pt")

    folder = cached_artifact(kind, name, key, build, keep=())
    try:
        return torch.load(folder / "result.pt", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError, pickle.UnpicklingError, EOFError) as e:
        # Written by an older saelib whose classes have since moved or changed: recompute, never fail the page.
        log.warning("cached result %s no longer loads (%s); recomputing", folder, e)
        folder = cached_artifact(kind, name, key, build, keep=(), force=True)
        return torch.load(folder / "result.pt", weights_only=False)


def load_config(folder: Path) -> dict:
    """The `config` recorded in a sealed artifact's `cfg.json`."""
    return json.loads((Path(folder) / CONFIG).read_text())["config"]
