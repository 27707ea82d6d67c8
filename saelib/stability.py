"""Per-feature stability across seeds (book/intro.md, "Definitions used throughout").

- `cross_seed_max_cosine`: `m_i(s->t) = max_j cos(d_i^s, d_j^t)` for every ordered pair of seeds, computed block by
  block so that memory is O(chunk_size^2) whatever d_sae is, and each unordered pair's cosine blocks only once
  (row maxima give s->t, column maxima t->s).
- `feature_stability`: `stab_i^s = (1/(S-1)) sum_{t!=s} 1[m_i(s->t) >= tau]`, its continuous variant (the mean of
  `m_i(s->t)`), and the stable / intermediate / unstable / dead label of each latent.
- `anchor_stability`, `endpoint_labels`: the paper's estimator, one anchor seed against N others, and its epsilon
  endpoint labels; `blockwise_row_max`, its kernel, tiled over both seeds' latents (memory O(block^2)).
- `null_sae`: the baseline, independently initialised untrained SAEs of the same shape (whole-SAE matching scores,
  shared fraction and PW-MCC, live in `saelib.matching`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor

from saelib.config import SAEConfig, StabilityConfig
from saelib.sae import SAE
from saelib.subspace import unit_rows

log = logging.getLogger(__name__)

UNSTABLE, INTERMEDIATE, STABLE, DEAD = 0, 1, 2, -1
"""Integer codes of `FeatureStability.label`."""
LABEL_NAMES = {UNSTABLE: "unstable", INTERMEDIATE: "intermediate", STABLE: "stable", DEAD: "dead"}


def feature_directions(sae: SAE, similarity: str = "decoder") -> list[Tensor]:
    """The direction sets `(S, d_sae, d_in)` that a similarity compares: decoder rows, encoder columns, or both."""
    if similarity == "decoder":
        return [sae.decoder_directions()]
    if similarity == "encoder":
        return [sae.encoder_directions()]
    if similarity == "min":
        return [sae.decoder_directions(), sae.encoder_directions()]
    raise ValueError(f"similarity={similarity!r} must be decoder, encoder or min")


CPU_BLOCK = 1024
"""Largest block edge on CPU. The column maxima reduce along the strided axis of a block, which is several times
slower once a block falls out of cache: blocks of 1024 keep the whole function within ~1.3x of its bare matmuls,
4096 would cost ~1.6x (benchmarks/bench_stability.py). On GPU the blocks are `chunk_size`."""


def _keep_larger(best: Tensor, arg: Tensor, val: Tensor, ind: Tensor, offset: int) -> None:
    """In place: where `val` beats `best`, take it and its index `ind + offset` (earlier blocks win ties)."""
    upd = val > best
    arg.copy_(torch.where(upd, ind + offset, arg))
    torch.maximum(best, val, out=best)


@torch.no_grad()
def blockwise_row_max(
    rows: Tensor, cols: Tensor, row_block: int = 4096, col_block: int = 4096, buf: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Max and argmax over j of `rows @ cols.T`, tiled over both: at most `row_block x col_block` products exist at
    once (memory independent of the number of rows and columns), reduced along the contiguous axis only.

    Args:
        rows: `(R, d)`; cols: `(C, d)`, C >= 1 (e.g. unit decoder rows of two seeds).
        row_block, col_block: the block's edges.
        buf: optional scratch of at least `min(row_block, R) * min(col_block, C)` floats, reused across calls.

    Returns:
        `max (R,)` and `argmax (R,)` (long); ties go to the earliest column block.
    """
    R, C = len(rows), len(cols)
    if C == 0:
        raise ValueError("cols must hold at least one row")
    if row_block < 1 or col_block < 1:
        raise ValueError(f"row_block={row_block} and col_block={col_block} must be >= 1")
    rb, cb = min(row_block, R), min(col_block, C)
    if buf is None or buf.numel() < rb * cb:
        buf = torch.empty(rb * cb, device=rows.device)
    best = torch.empty(R, device=rows.device)
    arg = torch.empty(R, dtype=torch.long, device=rows.device)
    val = torch.empty(rb, device=rows.device)
    ind = torch.empty(rb, dtype=torch.long, device=rows.device)
    for i0 in range(0, R, rb):
        i1 = min(R, i0 + rb)
        for j0 in range(0, C, cb):
            j1 = min(C, j0 + cb)
            sim = torch.mm(rows[i0:i1], cols[j0:j1].T, out=buf[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0))
            if j0 == 0:  # the first column block fills the running maxima directly
                torch.max(sim, 1, out=(best[i0:i1], arg[i0:i1]))
                continue
            torch.max(sim, 1, out=(val[: i1 - i0], ind[: i1 - i0]))
            _keep_larger(best[i0:i1], arg[i0:i1], val[: i1 - i0], ind[: i1 - i0], j0)
    return best, arg


def _in_block(idx: Tensor, lo: int, hi: int) -> Tensor:
    """The entries of sorted `idx` in `[lo, hi)`, shifted to start at 0."""
    a, b = torch.searchsorted(idx, torch.tensor([lo, hi], device=idx.device)).tolist()
    return idx[a:b] - lo


@torch.no_grad()
def cross_seed_max_cosine(
    directions: Tensor | list[Tensor],
    *,
    alive: Tensor | None = None,
    chunk_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Max cosine of every latent of every seed to the latents of every other seed.

    Each unordered pair of seeds costs one `(F, d) x (d, F)` product, computed block by block into one reused
    buffer; the row maxima of a block give s->t, its column maxima t->s. Dead latents are masked in place and only
    where there are some, so the work beyond the matmuls is two reductions per block (see CPU_BLOCK).

    Args:
        directions: `(S, F, d)`, or a list of such tensors (then the similarity of two latents is the minimum of
            their cosines over the list, e.g. decoder and encoder). Computed in float32.
        alive: `(S, F)` bool; dead latents are never a match (their own rows are still computed).
        chunk_size: at most this many rows and columns per block (memory O(chunk_size^2)); on CPU at most
            `CPU_BLOCK`.

    Returns:
        `max_cos (S, S, F)` with `max_cos[s, t, i] = m_i(s->t)` (NaN on the diagonal s == t) and `argmax (S, S, F)`
        (-1 on the diagonal, and where seed t has no live latent).
    """
    dirs = [unit_rows(d.float()) for d in (directions if isinstance(directions, (list, tuple)) else [directions])]
    S, F, _ = dirs[0].shape
    if S < 2:
        raise ValueError("stability needs at least 2 seeds")
    dev = dirs[0].device
    block = min(chunk_size, CPU_BLOCK) if dev.type == "cpu" else chunk_size
    best = torch.full((S, S, F), -torch.inf, device=dev)
    arg = torch.full((S, S, F), -1, dtype=torch.long, device=dev)
    # Sorted indices of each seed's dead latents; empty (no masking at all) when all are alive.
    dead = [torch.zeros(0, dtype=torch.long, device=dev)] * S
    if alive is not None:
        dead = [torch.nonzero(~a.to(dev)).flatten() for a in alive]
    buf = torch.empty(min(block, F) ** 2, device=dev)  # the one block of cosines, reused
    other = torch.empty_like(buf) if len(dirs) > 1 else None
    for s, t in itertools.combinations(range(S), 2):
        for i0 in range(0, F, block):
            i1 = min(F, i0 + block)
            dead_rows = _in_block(dead[s], i0, i1)
            for j0 in range(0, F, block):
                j1 = min(F, j0 + block)
                sim = buf[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0)  # (ci, cj)
                torch.mm(dirs[0][s, i0:i1], dirs[0][t, j0:j1].T, out=sim)
                for d in dirs[1:]:
                    assert other is not None  # allocated whenever there is a second direction set
                    o = other[: sim.numel()].view_as(sim)
                    torch.mm(d[s, i0:i1], d[t, j0:j1].T, out=o)
                    torch.minimum(sim, o, out=sim)
                dead_cols = _in_block(dead[t], j0, j1)
                saved = None
                if len(dead_cols):
                    saved = sim[:, dead_cols]  # (ci, n_dead): a copy, to restore for the column maxima
                    sim.index_fill_(1, dead_cols, -torch.inf)
                val, ind = sim.max(1)  # s -> t
                _keep_larger(best[s, t, i0:i1], arg[s, t, i0:i1], val, ind, j0)
                if saved is not None:
                    sim.index_copy_(1, dead_cols, saved)
                if len(dead_rows):
                    sim.index_fill_(0, dead_rows, -torch.inf)
                val, ind = sim.max(0)  # t -> s
                _keep_larger(best[t, s, j0:j1], arg[t, s, j0:j1], val, ind, i0)
    eye = torch.eye(S, dtype=torch.bool, device=dev).unsqueeze(-1).expand(S, S, F)
    return best.masked_fill(eye, torch.nan), arg.masked_fill(eye, -1)


class FeatureStability(NamedTuple):
    """Per-latent stability of a stack of S seeds."""

    stability: Tensor
    """`(S, d_sae)`: share of the other seeds holding a latent with similarity >= threshold (NaN if dead)."""
    mean_max_cos: Tensor
    """`(S, d_sae)`: the continuous variant, mean over other seeds of the max similarity (NaN if dead)."""
    max_cos: Tensor
    """`(S, S, d_sae)`: `m_i(s->t)` (NaN on the diagonal, and in the rows `max_cos[s, :, i]` of dead latents)."""
    label: Tensor
    """`(S, d_sae)` int: `STABLE`, `INTERMEDIATE`, `UNSTABLE` or `DEAD`."""
    threshold: float
    """The similarity threshold tau used."""


def stability_from_max_cos(max_cos: Tensor, threshold: float, alive: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`(stability, mean_max_cos)`, each `(S, F)`, from `max_cos (S, S, F)`; optionally over a subset of reference
    seeds by passing `max_cos[:, refs]` (rows whose own seed is among the refs then average over the others).

    NaN for the latents that `alive` marks dead and for those with no comparison at all (a `max_cos` row that is
    NaN everywhere, as `feature_stability` leaves a dead latent's), so that a dead latent is NaN, never 0.
    """
    valid = ~torch.isnan(max_cos)
    n_ref = valid.sum(1)  # (S, F)
    hits = ((max_cos >= threshold) & valid).sum(1)
    undefined = n_ref == 0 if alive is None else (n_ref == 0) | ~alive
    stab = (hits.float() / n_ref.clamp_min(1)).masked_fill(undefined, torch.nan)
    mean = (torch.where(valid, max_cos, torch.zeros_like(max_cos)).sum(1) / n_ref.clamp_min(1)).masked_fill(
        undefined, torch.nan
    )
    return stab, mean


def stability_labels(stability: Tensor, cfg: StabilityConfig) -> Tensor:
    """The labels of `cfg.estimator`: `STABLE` where stability >= `cfg.stable_cut`, `UNSTABLE` where <=
    `cfg.unstable_cut` (`anchor`: the endpoints `1 - epsilon` and `epsilon`; `all_pairs`: `stable_at` and
    `unstable_at`), `INTERMEDIATE` between, `DEAD` where NaN."""
    if cfg.estimator == "anchor":
        return endpoint_labels(stability, cfg.epsilon)
    label = torch.full(stability.shape, INTERMEDIATE, dtype=torch.int8, device=stability.device)
    label[stability >= cfg.stable_at] = STABLE
    label[stability <= cfg.unstable_at] = UNSTABLE
    label[torch.isnan(stability)] = DEAD
    return label


def feature_stability(
    sae: SAE,
    cfg: StabilityConfig | None = None,
    *,
    alive: Tensor | None = None,
) -> FeatureStability:
    """Per-feature stability of every latent of every seed of `sae` (book/intro.md, "Definitions used throughout").

    Args:
        sae: a stack of S >= 2 seeds.
        cfg: threshold tau, similarity (decoder, encoder, min), label cut-offs, chunk size.
        alive: `(S, d_sae)` bool of latents that fire on the evaluation set; dead ones get NaN and label `DEAD`
            and are never matched.
    """
    cfg = cfg or StabilityConfig()
    max_cos, _ = cross_seed_max_cosine(feature_directions(sae, cfg.similarity), alive=alive, chunk_size=cfg.chunk_size)
    if alive is not None:  # a dead latent's own row is computed, but it has no stability: NaN like its scores
        max_cos = max_cos.masked_fill(~alive.to(max_cos.device).unsqueeze(1), torch.nan)
    return _stability(max_cos, cfg, alive)


def _stability(max_cos: Tensor, cfg: StabilityConfig, alive: Tensor | None = None) -> FeatureStability:
    stab, mean = stability_from_max_cos(max_cos, cfg.threshold, alive)
    return FeatureStability(stab, mean, max_cos, stability_labels(stab, cfg), cfg.threshold)


NULL_SEED_OFFSET = 1_000_003
"""Seed offset of `null_sae`, far from any seed a trained stack uses."""


def null_sae(sae_or_cfg: SAE | SAEConfig, device: str | torch.device | None = None) -> SAE:
    """Independently initialised, untrained SAEs of the same shape and number of seeds: the null baseline."""
    cfg = sae_or_cfg.cfg if isinstance(sae_or_cfg, SAE) else sae_or_cfg
    if device is None:
        device = sae_or_cfg.W_dec.device if isinstance(sae_or_cfg, SAE) else "cpu"
    return SAE(replace(cfg, seed=cfg.seed + NULL_SEED_OFFSET), device=device).eval()


def direction_stability(directions: Tensor, cfg: StabilityConfig | None = None) -> FeatureStability:
    """`feature_stability` of bare direction sets `(S, F, d)` (e.g. random draws: the null baselines)."""
    cfg = cfg or StabilityConfig()
    max_cos, _ = cross_seed_max_cosine([directions], chunk_size=cfg.chunk_size)
    return _stability(max_cos, cfg)


# --- The paper's estimator: one anchor seed against N others ------------------------------------------------------


class AnchorStability(NamedTuple):
    """`anchor_stability`'s result for the anchor seed's latents."""

    p: Tensor
    """`(F,)` share of the N comparison seeds holding a match (NaN for a dead anchor latent)."""
    max_cos: Tensor
    """`(N, F)` the anchor latent's best decoder cosine in each comparison seed (many-to-one argmax)."""
    label: Tensor
    """`(F,)` int8 endpoint labels (`endpoint_labels`)."""
    comparisons: list[int]
    """The N comparison seeds, in the order of `max_cos`'s rows."""


def anchor_stability(
    directions: Tensor,
    anchor: int = 0,
    *,
    threshold: float = 0.7,
    epsilon: float = 0.05,
    alive: Tensor | None = None,
    chunk_size: int = 4096,
) -> AnchorStability:
    """The paper's per-feature estimator (arXiv 2606.12138, as reported by a secondary source): each latent of the
    `anchor` seed is matched in each of the other N seeds by its argmax decoder cosine (many-to-one: two anchor
    latents may share a partner), a match when that cosine is >= `threshold`; `p_i = matches / N`.

    Cost: N products of `(F, d) x (d, F)`, against `S (S - 1) / 2` for the all-pairs estimator of
    `feature_stability`, in blocks of `chunk_size x chunk_size` cosines (`blockwise_row_max`: memory O(chunk_size^2)
    whatever F is).

    Args:
        directions: `(S, F, d)` decoder rows of S >= 2 seeds (`SAE.decoder_directions()`).
        anchor: the anchor seed's position.
        threshold: tau.
        epsilon: endpoint labels: stable when `p >= 1 - epsilon`, unstable when `p <= epsilon`.
        alive: `(S, F)` bool; dead latents are never a match, and a dead anchor latent gets NaN and `DEAD`.
    """
    S, F, _ = directions.shape
    if S < 2:
        raise ValueError("anchor_stability needs at least 2 seeds")
    if not 0 <= anchor < S:
        raise ValueError(f"anchor={anchor} must lie in [0, {S})")
    dirs = unit_rows(directions.float())
    comparisons = [t for t in range(S) if t != anchor]
    best = torch.full((len(comparisons), F), -torch.inf, device=dirs.device)
    for n, t in enumerate(comparisons):
        other = dirs[t] if alive is None else dirs[t][alive[t].to(dirs.device)]
        if len(other) == 0:
            continue
        best[n] = blockwise_row_max(dirs[anchor], other, chunk_size, chunk_size)[0]  # (F,)
    p = (best >= threshold).float().mean(0)
    if alive is not None:
        dead = ~alive[anchor].to(p.device)
        p[dead] = torch.nan
        best[:, dead] = torch.nan
    return AnchorStability(p, best, endpoint_labels(p, epsilon), comparisons)


def endpoint_labels(p: Tensor, epsilon: float = 0.05) -> Tensor:
    """The paper's endpoint binarisation: `STABLE` where `p >= 1 - epsilon`, `UNSTABLE` where `p <= epsilon`,
    `INTERMEDIATE` (left out of stable-vs-unstable comparisons) in between, `DEAD` where p is NaN."""
    if not 0 <= epsilon < 0.5:
        raise ValueError(f"epsilon={epsilon} must lie in [0, 0.5)")
    label = torch.full(p.shape, INTERMEDIATE, dtype=torch.int8, device=p.device)
    label[p >= 1 - epsilon - 1e-9] = STABLE
    label[p <= epsilon + 1e-9] = UNSTABLE
    label[torch.isnan(p)] = DEAD
    return label


def score_saes(paths, anchor: int = 0, threshold: float = 0.7, epsilon: float = 0.05, **kwargs):
    """Per-feature stability of SAEs saved by SAELens, sparsify, dictionary_learning or saelib: a thin wrapper of
    `saelib.external.score_saes` (see there for the arguments and the report folder it writes)."""
    from saelib.external import score_saes as _score_saes

    return _score_saes(paths, anchor=anchor, threshold=threshold, epsilon=epsilon, **kwargs)
