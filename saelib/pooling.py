"""Pooled SAEs: the unique features of several seeds, merged, selected and fine-tuned (chapter 5 of the book).

The paper's abstract leaves the method open; ours (each choice a `PoolingConfig` field, see the methods page):
`latent_mass` measures each latent's activation mass; `pool_features` pools a group's alive unit decoder rows, merges
near-duplicates by greedy leader clustering (`merge_near_duplicates`: the member of largest mass represents its
cluster, and no two representatives pass the cosine threshold) and ranks the clusters by how many seeds hold them,
then by mass; `build_pooled_sae` copies the first `d_sae` representatives' latents whole into one SAE per group,
stacked as the seeds of one `SAE`, so that two disjoint groups are compared by `stability.feature_stability` as two
seeds are; `pooled_sae` fine-tunes that stack briefly (`train.train_saes(init=...)`, decoder frozen by default).
Scoring the pooled SAEs against standard ones, and the chapter's numbers and verdicts, are `saelib.chapters.pooling`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelib.cache import cached_artifact
from saelib.config import PoolingConfig, TrainConfig, resolve_device
from saelib.metrics import evaluate_sae
from saelib.paths import atomic_write_json
from saelib.sae import SAE, load_sae, save_sae
from saelib.train import TRAIN_VERSION, batch_stream, train_key, train_saes

POOLING_VERSION = 1
"""Bumped when the same configs would pool, build, fine-tune or score differently; part of every cached key."""


# --- Merging near-duplicates -----------------------------------------------------------------------------------------


@torch.no_grad()
def near_duplicate_graph(directions: Tensor, threshold: float, chunk_size: int = 1024) -> sp.csr_matrix:
    """Sparse symmetric `(P, P)` matrix of the cosines `>= threshold` between distinct rows of `directions (P, d)`.

    Computed `chunk_size` rows at a time (memory O(chunk_size * P)).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must lie in (0, 1]")
    u = directions.float()
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    P = len(u)
    rows, cols, vals = [], [], []
    for i0 in range(0, P, chunk_size):
        sim = u[i0 : i0 + chunk_size] @ u.T  # (c, P)
        sim[torch.arange(len(sim)), torch.arange(i0, i0 + len(sim))] = -1.0  # not its own duplicate
        i, j = torch.nonzero(sim >= threshold, as_tuple=True)
        rows.append(i + i0)
        cols.append(j)
        vals.append(sim[i, j])
    r, c, v = (torch.cat(x).cpu().numpy() for x in (rows, cols, vals))
    return sp.csr_matrix((v.astype(np.float64), (r, c)), shape=(P, P))


class Merge(NamedTuple):
    """What `merge_near_duplicates` returns."""

    representative: Tensor
    """`(P,)` long: the row representing each row (itself for a representative)."""
    is_representative: Tensor
    """`(P,)` bool."""


def merge_near_duplicates(directions: Tensor, priority: Tensor, threshold: float, chunk_size: int = 1024) -> Merge:
    """Greedy leader clustering of `directions (P, d)` at cosine `threshold`.

    Rows are visited by decreasing `priority (P,)` (ties: lower index first). A row that has no near-duplicate
    (cosine >= threshold) among the representatives chosen so far becomes one; otherwise it joins its most similar
    such representative. Hence no two representatives have cosine >= threshold, every other row has cosine >=
    threshold with its representative, and a representative has the highest priority of its cluster.
    """
    if directions.ndim != 2 or priority.shape != directions.shape[:1]:
        raise ValueError(f"directions {tuple(directions.shape)}, priority {tuple(priority.shape)}: want (P, d), (P,)")
    graph = near_duplicate_graph(directions, threshold, chunk_size)
    P = directions.shape[0]
    order = np.lexsort((np.arange(P), -priority.detach().double().cpu().numpy()))
    rep = np.full(P, -1, dtype=np.int64)
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    for node in order:
        nb, cos = indices[indptr[node] : indptr[node + 1]], data[indptr[node] : indptr[node + 1]]
        is_rep = rep[nb] == nb  # unvisited rows hold -1
        rep[node] = nb[is_rep][np.argmax(cos[is_rep])] if is_rep.any() else node
    rep_t = torch.from_numpy(rep)
    return Merge(rep_t, rep_t == torch.arange(P))


# --- Pooling, selecting and building ---------------------------------------------------------------------------------


class LatentMass(NamedTuple):
    """What `latent_mass` returns."""

    mass: Tensor
    """`(S, d_sae)`: mean activation per token (firing rate times mean activation when firing)."""
    alive: Tensor
    """`(S, d_sae)` bool: fired at least once on the tokens measured."""


def latent_mass(sae: SAE, data: Any, n_tokens: int, *, batch_size: int = 4096, data_seed: int = 0) -> LatentMass:
    """Activation mass and liveness of every latent of every seed on the first `n_tokens` of a shuffled stream.

    Args:
        data: activations `(N, d_in)` or an object with `batches(batch_size, *, seed)` (an `ActivationStore`).
    """
    ev = evaluate_sae(sae, batch_stream(data, batch_size, data_seed), max_tokens=n_tokens)
    return LatentMass((ev.frequency * ev.mean_activation).cpu(), (ev.frequency > 0).cpu())


class PooledFeatures(NamedTuple):
    """The ranked clusters of one group's pooled features (one row per cluster, best first)."""

    group: tuple[int, ...]
    """Stack positions of the seeds pooled."""
    seed: Tensor
    """`(n,)` long: stack position of each cluster's representative."""
    latent: Tensor
    """`(n,)` long: its latent index."""
    n_seeds: Tensor
    """`(n,)` long: how many of the group's seeds have a latent in the cluster."""
    n_members: Tensor
    """`(n,)` long: latents in the cluster."""
    mass: Tensor
    """`(n,)`: summed activation mass of the members, divided by the number of seeds in the group."""
    n_pooled: int
    """Alive latents pooled."""


def pool_features(
    sae: SAE,
    group: list[int] | tuple[int, ...],
    mass: Tensor,
    threshold: float,
    *,
    alive: Tensor | None = None,
    rank_by: str = "seeds",
) -> PooledFeatures:
    """Pool the alive decoder rows of the seeds `group` of `sae`, merge near-duplicates and rank the clusters.

    Args:
        sae: a stack; `group` names stack positions.
        mass: `(S, d_sae)` activation mass (`latent_mass`), the merge priority and the ranking's tie-breaker.
        threshold: cosine at or above which two rows are near-duplicates.
        alive: `(S, d_sae)` bool; dead latents are not pooled (all pooled when None).
        rank_by: `seeds` (clusters holding more seeds first, then by mass) or `mass`.
    """
    group = tuple(int(g) for g in group)
    if not group or len(set(group)) != len(group) or any(not 0 <= g < sae.n_seeds for g in group):
        raise ValueError(f"group={group} must be distinct stack positions in [0, {sae.n_seeds})")
    if rank_by not in ("seeds", "mass"):
        raise ValueError(f"rank_by={rank_by!r} must be 'seeds' or 'mass'")
    S, F = sae.n_seeds, sae.cfg.d_sae
    if mass.shape != (S, F):
        raise ValueError(f"mass has shape {tuple(mass.shape)}, expected (S={S}, d_sae={F})")
    keep = torch.ones(S, F, dtype=torch.bool) if alive is None else alive.cpu().bool()
    g = torch.tensor(group)
    seed = g.view(-1, 1).expand(-1, F)[keep[g]]  # (P,)
    latent = torch.arange(F).expand(len(group), -1)[keep[g]]  # (P,)
    if len(seed) == 0:
        raise ValueError(f"group {group} has no alive latent to pool")
    dirs = sae.decoder_directions().cpu()[seed, latent]  # (P, d_in)
    m = mass.cpu().double()[seed, latent]  # (P,)
    merge = merge_near_duplicates(dirs, m, threshold)
    reps = torch.nonzero(merge.is_representative).flatten()  # (n,)
    cluster = torch.searchsorted(reps, merge.representative)  # (P,) cluster of each row, 0..n-1
    n = len(reps)
    n_members = torch.bincount(cluster, minlength=n)
    in_seed = torch.zeros(n, S, dtype=torch.bool)
    in_seed[cluster, seed] = True
    n_seeds = in_seed.sum(1)
    c_mass = torch.zeros(n, dtype=torch.float64).index_add_(0, cluster, m) / len(group)
    keys = [np.arange(n), -c_mass.numpy()] + ([-n_seeds.numpy()] if rank_by == "seeds" else [])
    order = torch.from_numpy(np.lexsort(keys))  # last key is the primary one
    return PooledFeatures(
        group,
        seed[reps][order],
        latent[reps][order],
        n_seeds[order],
        n_members[order],
        c_mass[order].float(),
        len(seed),
    )


@torch.no_grad()
def build_pooled_sae(sae: SAE, pools: list[PooledFeatures], d_sae: int) -> SAE:
    """A stack with one SAE per pool, each made of the first `d_sae` clusters' representative latents.

    Latent j of pooled SAE g is copied from its source latent (decoder row, encoder column, threshold); the decoder
    bias is the mean of the group's and the encoder bias is shifted by `(b_dec_new - b_dec_src) @ w_enc`, so that
    every latent's pre-activation equals its source's. BatchTopK: the mean of the group's thresholds.
    """
    if not pools:
        raise ValueError("pools is empty")
    short = min(len(p.seed) for p in pools)
    if not 0 < d_sae <= short:
        raise ValueError(f"d_sae={d_sae} must lie in [1, {short}] (the fewest clusters of a pool)")
    cfg = replace(sae.cfg, d_sae=d_sae, n_seeds=len(pools))
    out = SAE(cfg, device=sae.W_dec.device)
    dev = sae.W_dec.device
    for g, pool in enumerate(pools):
        s, j = pool.seed[:d_sae].to(dev), pool.latent[:d_sae].to(dev)
        b_dec = sae.b_dec[list(pool.group)].mean(0)  # (d_in,)
        w_enc = sae.W_enc[s, :, j]  # (d_sae, d_in): advanced indices around a slice come first
        out.W_dec[g] = sae.W_dec[s, j]
        out.W_enc[g] = w_enc.T
        out.b_dec[g] = b_dec
        out.b_enc[g] = sae.b_enc[s, j] + ((b_dec - sae.b_dec[s]) * w_enc).sum(-1)
        if cfg.variant == "jumprelu":
            out.log_threshold[g] = sae.log_threshold[s, j]
        elif cfg.variant == "batchtopk":
            out.threshold[g] = sae.threshold[list(pool.group)].nanmean()
    return out.eval()


def disjoint_groups(seeds_per_group: int, n_groups: int = 2) -> list[list[int]]:
    """`[[0..n-1], [n..2n-1], ...]`: disjoint groups of stack positions."""
    if seeds_per_group < 1 or n_groups < 1:
        raise ValueError(f"seeds_per_group={seeds_per_group} and n_groups={n_groups} must be >= 1")
    return [list(range(i * seeds_per_group, (i + 1) * seeds_per_group)) for i in range(n_groups)]


def pooled_sizes(pools: list[PooledFeatures], d_sae: int, cfg: PoolingConfig) -> dict[str, int]:
    """Sizes of the pooled SAEs: `same` (the standard `d_sae`) and `large` (`large_factor` times it), each capped
    by the fewest clusters a pool has."""
    cap = min(len(p.seed) for p in pools)
    return {"same": min(d_sae, cap), "large": min(round(cfg.large_factor * d_sae), cap)}


def pool_summary(pools: list[PooledFeatures]) -> pd.DataFrame:
    """One row per pool: seeds pooled, alive latents pooled, clusters, and clusters by how many seeds they hold."""
    rows = []
    for i, p in enumerate(pools):
        row = {"pool": i, "seeds": ",".join(map(str, p.group)), "latents pooled": p.n_pooled, "clusters": len(p.seed)}
        for n in range(1, len(p.group) + 1):
            row[f"in {n} seed{'s' if n > 1 else ''}"] = int((p.n_seeds == n).sum())
        rows.append(row)
    return pd.DataFrame(rows)


# --- Cached pooling and fine-tuning ----------------------------------------------------------------------------------


def seed_digests(sae: SAE, seeds: list[int] | None = None) -> list[str]:
    """sha256 (16 hex digits) of each seed's weights: identifies a source stack in cache keys."""
    state = sae.state_dict()
    out = []
    for s in range(sae.n_seeds) if seeds is None else seeds:
        h = hashlib.sha256(json.dumps(sae.cfg.variant).encode())
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name][s].detach().cpu().contiguous().numpy().tobytes())
        out.append(h.hexdigest()[:16])
    return out


def _pool_key(cfg: PoolingConfig) -> dict:
    return {
        k: getattr(cfg, k)
        for k in ("threshold", "rank_by", "mass_tokens", "finetune_frac", "finetune_lr", "train_decoder")
    }


def pool_groups(
    sae: SAE, groups: list[list[int]], cfg: PoolingConfig, data: Any, *, data_key: Any, data_seed: int = 0
) -> list[PooledFeatures]:
    """`pool_features` of each group, with the activation mass of every seed of `sae` measured on `data` once
    (cached, so that every grouping of the same stack reuses it)."""
    key = {
        "source": seed_digests(sae),
        "data": data_key,
        "mass_tokens": cfg.mass_tokens,
        "data_seed": data_seed,
        "version": POOLING_VERSION,
    }

    def build(work: Path) -> None:
        lm = latent_mass(sae, data, cfg.mass_tokens, data_seed=data_seed)
        save_file({"mass": lm.mass.contiguous(), "alive": lm.alive.contiguous()}, str(work / "mass.safetensors"))

    folder = cached_artifact("pool-mass", f"{sae.cfg.variant}-{sae.cfg.d_sae}", key, build)
    saved = load_file(str(folder / "mass.safetensors"))
    return [
        pool_features(sae, g, saved["mass"], cfg.threshold, alive=saved["alive"], rank_by=cfg.rank_by) for g in groups
    ]


def finetune_config(train: TrainConfig, cfg: PoolingConfig) -> TrainConfig:
    """The standard training's settings with `finetune_frac` of its tokens (at least one batch) and `finetune_lr`."""
    n_tokens = max(train.batch_size, round(cfg.finetune_frac * train.n_tokens))
    return replace(train, n_tokens=n_tokens, lr=cfg.finetune_lr if cfg.finetune_lr is not None else train.lr)


class PooledSAE(NamedTuple):
    """What `pooled_sae` returns."""

    sae: SAE
    """The fine-tuned stack, one seed per group (inference mode)."""
    initial: SAE
    """The same stack before fine-tuning."""
    history: dict
    """Fine-tuning curves (`train.TrainResult.history`)."""


def pooled_sae(
    sae: SAE,
    pools: list[PooledFeatures],
    d_sae: int,
    cfg: PoolingConfig,
    train: TrainConfig,
    data: Any,
    *,
    data_key: Any,
    progress: bool = True,
) -> PooledSAE:
    """Build the pooled stack of `d_sae` latents per pool and fine-tune it (cached under `pooled/`).

    Args:
        train: the standard SAEs' training; `finetune_config` derives the fine-tuning from it.
        data, data_key: the training activations and what identifies them (as for `train.train_cached`).
    """
    tune = finetune_config(train, cfg)
    key = {
        "source": [seed_digests(sae, list(p.group)) for p in pools],
        "d_sae": d_sae,
        "pooling": _pool_key(cfg),
        "train": train_key(tune),
        "data": data_key,
        "train_version": TRAIN_VERSION,
        "version": POOLING_VERSION,
    }

    def build(work: Path) -> None:
        initial = build_pooled_sae(sae, pools, d_sae)
        result = train_saes(initial.cfg, tune, data, progress=progress, init=initial, train_decoder=cfg.train_decoder)
        save_sae(initial, work / "initial")
        save_sae(result.sae, work / "sae")
        atomic_write_json(work / "history.json", result.history)

    name = f"{sae.cfg.variant}-{sae.cfg.d_sae}-{len(pools)}x{len(pools[0].group)}-{d_sae}"
    folder = cached_artifact("pooled", name, key, build)
    device = resolve_device(train.device)
    return PooledSAE(
        load_sae(folder / "sae", device),
        load_sae(folder / "initial", device),
        json.loads((folder / "history.json").read_text()),
    )
