"""The sharded on-disk store of collected activations: what `saelib.lm.activations.collect_activations` writes and
the trainer reads.

Layout (`artifacts/activations/<model>-<hash>/`): `info.json`; `contexts_{train,eval}.npy` (token ids, one row per
context); `{train,eval}/acts_NNNNN.npy` `(rows, d_in)`, `meta_NNNNN.npy` `(rows, 3)` int32 (token id, context,
position) and `shard_NNNNN.json`, the completion record written last, holding both files' sha256. A shard without
its record, or whose files do not match it, was interrupted and is never read as whole.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from saelib.cache import cached_artifact
from saelib.paths import atomic_write_bytes, atomic_write_json, file_sha256
from saelib.subspace import Covariance, stream_covariance


class ShardError(ValueError):
    """A store shard that is missing, incomplete, or of the wrong width."""


def save_npy(path: Path, array: np.ndarray) -> str:
    """Save atomically (temporary name, fsync, rename); return the file's sha256."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def shard_complete(folder: Path, i: int) -> bool:
    """A shard counts only when its record exists and both files match the record's sha256."""
    try:
        rec = json.loads((folder / f"shard_{i:05d}.json").read_text())
        return all(file_sha256(folder / f"{k}_{i:05d}.npy") == rec[f"{k}_sha256"] for k in ("acts", "meta"))
    except (OSError, ValueError, KeyError):
        return False


class TokenMetadata(NamedTuple):
    """Per-row metadata of a store split, aligned with its rows."""

    token_id: np.ndarray
    """`(N,)` int32 token at the row's position."""
    context: np.ndarray
    """`(N,)` int32 row of `store.contexts()` the token comes from."""
    position: np.ndarray
    """`(N,)` int32 position in that context (BOS is position 0, never stored)."""


class ActivationStore:
    """A collected split of activations on disk; what the trainer consumes (`batches`, `d_in`, `n_tokens`)."""

    def __init__(self, path: str | Path, split: str = "train", expected_d_in: int | None = None) -> None:
        self.path, self.split = Path(path), split
        try:
            self.info = json.loads((self.path / "info.json").read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{self.path} is not a complete activation store (no readable info.json)") from e
        self.d_in = int(self.info["d_in"])
        if expected_d_in is not None and expected_d_in != self.d_in:
            raise ShardError(f"store {self.path} has width {self.d_in}, but the model's width is {expected_d_in}")
        folder = self.path / split
        self._rows: list[int] = []
        self._scales: list[float] = []
        for i, acts in enumerate(sorted(folder.glob("acts_*.npy"))):
            if acts.name != f"acts_{i:05d}.npy" or not (folder / f"shard_{i:05d}.json").is_file():
                raise ShardError(f"shard {acts} has no completion record: it may be partially written; collect again")
            rec = json.loads((folder / f"shard_{i:05d}.json").read_text())
            shape = np.load(acts, mmap_mode="r").shape
            if len(shape) != 2 or shape[1] != self.d_in:
                raise ShardError(f"shard {acts} has width {shape[-1]}, but the store's width d_in is {self.d_in}")
            if shape[0] != rec["rows"]:
                raise ShardError(f"shard {acts} has {shape[0]} rows, its record says {rec['rows']}; collect again")
            self._rows.append(shape[0])
            self._scales.append(float(rec.get("scale", 1.0)))
        if not self._rows:
            raise ShardError(f"store {self.path} has no {split} shards")
        self.n_tokens = int(sum(self._rows))

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"ActivationStore({self.path.name}, split={self.split}, n_tokens={self.n_tokens}, d_in={self.d_in})"

    @property
    def n_shards(self) -> int:
        return len(self._rows)

    @property
    def eval(self) -> ActivationStore:
        """The held-out split (same layout)."""
        return ActivationStore(self.path, "eval")

    def _file(self, kind: str, i: int) -> Path:
        return self.path / self.split / f"{kind}_{i:05d}.npy"

    def shard(self, i: int) -> torch.Tensor:
        """Shard `i` as float32 `(rows, d_in)` (undoing the storage scale of float16 shards)."""
        x = torch.from_numpy(np.load(self._file("acts", i)).astype(np.float32))
        return x if self._scales[i] == 1.0 else x / self._scales[i]

    def contexts(self) -> np.ndarray:
        """`(n_contexts, context_len)` int32 token ids of this split; `metadata().context` indexes its rows."""
        return np.load(self.path / f"contexts_{self.split}.npy")

    def metadata(self) -> TokenMetadata:
        """Token id, context index and position of every row, in row order."""
        meta = np.concatenate([np.load(self._file("meta", i)) for i in range(self.n_shards)])
        return TokenMetadata(meta[:, 0], meta[:, 1], meta[:, 2])

    def load_all(self, max_tokens: int | None = None) -> torch.Tensor:
        """The first `max_tokens` rows (all by default) as one float32 `(N, d_in)` tensor; for small sizes only."""
        want = self.n_tokens if max_tokens is None else min(max_tokens, self.n_tokens)
        parts, have = [], 0
        for i in range(self.n_shards):
            if have >= want:
                break
            parts.append(self.shard(i)[: want - have])
            have += len(parts[-1])
        return torch.cat(parts)

    def batches(
        self, batch_size: int, *, seed: int, buffer_shards: int = 4, drop_last: bool = False
    ) -> Iterator[torch.Tensor]:
        """One shuffled pass as float32 `(B, d_in)` batches, holding at most `buffer_shards` shards in memory.

        Shards come in a random order; rows are shuffled within a buffer of `buffer_shards` shards (plus the rows
        left over from the previous buffer). The same `seed` gives the same batches.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        rng = np.random.default_rng(seed)
        order = rng.permutation(self.n_shards)
        carry = torch.empty(0, self.d_in)
        for start in range(0, len(order), buffer_shards):
            buf = torch.cat([carry] + [self.shard(int(i)) for i in order[start : start + buffer_shards]])
            buf = buf[torch.from_numpy(rng.permutation(len(buf)))]
            n_full = len(buf) // batch_size * batch_size
            if n_full:  # (splitting an empty tensor would yield one empty batch)
                yield from buf[:n_full].split(batch_size)
            carry = buf[n_full:]
        if len(carry) and not drop_last:
            yield carry


def load_covariance(store: ActivationStore, max_tokens: int = 200_000) -> Covariance:
    """`stream_covariance` of the first `max_tokens` rows of `store`, cached under `covariance/`."""

    def build(work: Path) -> None:
        c = stream_covariance((store.shard(i) for i in range(store.n_shards)), max_tokens)
        save_file({"mean": c.mean, "cov": c.cov}, str(work / "covariance.safetensors"))
        atomic_write_json(work / "covariance.json", {"n_tokens": c.n_tokens})

    key = {"store": store.path.name, "split": store.split, "info": store.info, "max_tokens": max_tokens}
    folder = cached_artifact("covariance", f"{store.path.name}-{store.split}", key, build)
    t = load_file(str(folder / "covariance.safetensors"))
    return Covariance(t["mean"], t["cov"], json.loads((folder / "covariance.json").read_text())["n_tokens"])
