"""Per-feature stability across seeds (book/intro.md, "Definitions used throughout") and whole-SAE consistency scores.

- `cross_seed_max_cosine`: `m_i(s->t) = max_j cos(d_i^s, d_j^t)` for every ordered pair of seeds, computed block by
  block so that memory is O(chunk_size^2) whatever d_sae is, and each unordered pair's cosine blocks only once
  (row maxima give s->t, column maxima t->s).
- `feature_stability`: `stab_i^s = (1/(S-1)) sum_{t!=s} 1[m_i(s->t) >= tau]`, its continuous variant (the mean of
  `m_i(s->t)`), and the stable / intermediate / unstable / dead label of each latent.
- `shared_fraction`: Hungarian matching of two SAEs' latents (Paulo & Belrose 2025: matched by decoder cosine, a
  latent is shared when its matched decoder and encoder cosines both exceed 0.7); dense (`linear_sum_assignment`)
  or, for large dictionaries, sparse on each latent's k nearest neighbours (`sparse_hungarian_match`).
- `pw_mcc`: mean Hungarian-matched decoder cosine averaged over seed pairs (Song et al. 2025).
- `null_sae`: the baseline for all of them, independently initialised untrained SAEs of the same shape.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
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
    """`STABLE` where stability >= cfg.stable_at, `UNSTABLE` where <= cfg.unstable_at, `DEAD` where NaN."""
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


SPARSE_MATCH_ABOVE = 4096
"""`method="auto"` matches densely up to this many latents and sparsely (k-nearest-neighbour graph) above. On a
2-core CPU the dense assignment takes ~1.5 s at 4k latents and ~35 s (and a 2 GB float64 matrix) at 16k; the
sparse one with k=16 takes 0.3 s and 4.4 s and agrees on 90-97% of the matches (benchmarks/bench_stability.py)."""


def hungarian_match(
    a: Tensor, b: Tensor, method: str = "dense", k: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of rows of `a (n, d)` to rows of `b (m, d)` maximising total cosine.

    Args:
        method: `dense` (`scipy.optimize.linear_sum_assignment` on the full cosine matrix, exact), `sparse`
            (`sparse_hungarian_match` with `k` neighbours) or `auto` (sparse above `SPARSE_MATCH_ABOVE` latents).

    Returns:
        `(rows, cols, cosines)` as from `scipy.optimize.linear_sum_assignment` on the negated cosine matrix.
    """
    if method == "auto":
        method = "sparse" if min(len(a), len(b)) > SPARSE_MATCH_ABOVE else "dense"
    if method == "sparse":
        return sparse_hungarian_match(a, b, k=k)
    if method != "dense":
        raise ValueError(f"method={method!r} must be dense, sparse or auto")
    cos = (unit_rows(a.float()) @ unit_rows(b.float()).T).cpu().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


@torch.no_grad()
def knn_cosine_graph(a: Tensor, b: Tensor, k: int = 16, chunk_size: int = 1024) -> sp.csr_matrix:
    """Sparse `(n, m)` matrix of cosines between rows of `a (n, d)` and `b (m, d)` keeping, for every row, its `k`
    most similar columns and, for every column, its `k` most similar rows (so no vertex is left without an edge).

    Computed `chunk_size` rows at a time (memory O(chunk_size * m)); every stored cosine is an explicit entry,
    including zeros, so the caller must shift them away from zero before treating the matrix as a weighted graph.
    """
    a, b = unit_rows(a.float()), unit_rows(b.float())
    n, m = len(a), len(b)
    kr, kc = min(k, m), min(k, n)
    rows, cols, vals = [], [], []
    col_val = torch.full((kc, m), -torch.inf, device=a.device)  # running top-k rows of every column
    col_idx = torch.zeros((kc, m), dtype=torch.long, device=a.device)
    for i0 in range(0, n, chunk_size):
        sim = a[i0 : i0 + chunk_size] @ b.T  # (ci, m)
        v, j = sim.topk(kr, dim=1)  # (ci, kr)
        rows.append(torch.arange(i0, i0 + len(sim), device=a.device).repeat_interleave(kr))
        cols.append(j.flatten())
        vals.append(v.flatten())
        v, i = sim.topk(min(kc, len(sim)), dim=0)  # (<=kc, m)
        v, pos = torch.cat([col_val, v]).topk(kc, dim=0)
        col_idx = torch.cat([col_idx, i + i0]).gather(0, pos)
        col_val = v
    rows.append(col_idx.flatten())
    cols.append(torch.arange(m, device=a.device).repeat(kc))
    vals.append(col_val.flatten())
    r, c, v = (torch.cat(x).cpu().numpy() for x in (rows, cols, vals))
    _, first = np.unique(r.astype(np.int64) * m + c, return_index=True)  # an edge found from both sides, once
    return sp.csr_matrix((v[first], (r[first], c[first])), shape=(n, m))


def sparse_hungarian_match(a: Tensor, b: Tensor, k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`hungarian_match` restricted to the `knn_cosine_graph` of `a` and `b`: the best one-to-one matching among
    each latent's `k` nearest neighbours (`scipy.sparse.csgraph.min_weight_full_bipartite_matching` on the cost
    `2 - cos`, which is positive as that function requires). Equal to the dense matching whenever the dense one uses
    only graph edges, as when two SAEs share their directions up to noise. When the graph has no full matching it
    logs a warning and returns the dense matching.

    Returns:
        `(rows, cols, cosines)`, rows sorted, as `hungarian_match`.
    """
    graph = knn_cosine_graph(a, b, k)
    cost = graph.copy()
    cost.data = 2.0 - cost.data
    try:
        rows, cols = min_weight_full_bipartite_matching(cost)
    except ValueError:
        log.warning(
            "the %d-nearest-neighbour graph of %d x %d latents has no full matching; matching densely",
            k,
            len(a),
            len(b),
        )
        return hungarian_match(a, b, method="dense")
    return rows, cols, np.asarray(graph[rows, cols]).ravel()


class MatchedPair(NamedTuple):
    """Two seeds' latents matched one to one by decoder cosine (Hungarian), with both cosines of every match."""

    decoder_cos: np.ndarray
    """`(d_sae,)` decoder cosine of each matched pair."""
    encoder_cos: np.ndarray
    """`(d_sae,)` encoder cosine of the same pairs."""

    def shared(self, threshold: float) -> np.ndarray:
        """`(d_sae,)` bool: the shared-feature rule of Paulo & Belrose 2025 (arXiv 2501.16615), a matched pair is
        shared when its decoder and its encoder cosines both exceed `threshold`."""
        return (self.decoder_cos > threshold) & (self.encoder_cos > threshold)


def match_seed_pair(decoder: Tensor, encoder: Tensor, s: int, t: int, method: str = "auto") -> MatchedPair:
    """Hungarian matching of seed s's latents to seed t's by decoder cosine, with the matched encoder cosines.

    Args:
        decoder, encoder: unit directions `(S, d_sae, d_in)` (`SAE.decoder_directions()`, `encoder_directions()`),
            computed once by the caller for all its pairs.
        method: as in `hungarian_match` (`auto`: dense up to `SPARSE_MATCH_ABOVE` latents).
    """
    rows, cols, dec_cos = hungarian_match(decoder[s], decoder[t], method)
    enc_cos = (encoder[s][rows] * encoder[t][cols]).sum(-1).cpu().numpy()
    return MatchedPair(np.asarray(dec_cos), enc_cos)


def shared_fraction(sae: SAE, s: int, t: int, threshold: float = 0.7, method: str = "auto") -> float:
    """Share of seed s's latents shared with seed t (Paulo & Belrose 2025): `MatchedPair.shared` over the
    `match_seed_pair` matching. `method` as in `hungarian_match`."""
    pair = match_seed_pair(sae.decoder_directions(), sae.encoder_directions(), s, t, method)
    return float(pair.shared(threshold).sum() / sae.cfg.d_sae)


def pairwise_shared_fraction(sae: SAE, threshold: float = 0.7, method: str = "auto") -> np.ndarray:
    """`(S, S)` matrix of `shared_fraction` over seed pairs (symmetric; 1 on the diagonal)."""
    S = sae.n_seeds
    out = np.eye(S)
    for s, t in itertools.combinations(range(S), 2):
        out[s, t] = out[t, s] = shared_fraction(sae, s, t, threshold, method)
    return out


def pw_mcc(sae: SAE, method: str = "auto") -> float:
    """Pairwise mean matched cosine (Song et al. 2025): the mean Hungarian-matched decoder cosine, averaged over
    all pairs of seeds. `method` as in `hungarian_match`."""
    dec = sae.decoder_directions()
    pairs = list(itertools.combinations(range(sae.n_seeds), 2))
    if not pairs:
        raise ValueError("pw_mcc needs at least 2 seeds")
    return float(np.mean([hungarian_match(dec[s], dec[t], method)[2].mean() for s, t in pairs]))


NULL_SEED_OFFSET = 1_000_003
"""Seed offset of `null_sae`, far from any seed a trained stack uses."""


def null_sae(sae_or_cfg: SAE | SAEConfig, device: str | torch.device | None = None) -> SAE:
    """Independently initialised, untrained SAEs of the same shape and number of seeds: the null baseline."""
    cfg = sae_or_cfg.cfg if isinstance(sae_or_cfg, SAE) else sae_or_cfg
    if device is None:
        device = sae_or_cfg.W_dec.device if isinstance(sae_or_cfg, SAE) else "cpu"
    return SAE(replace(cfg, seed=cfg.seed + NULL_SEED_OFFSET), device=device).eval()


def seed_pair_scores(sae: SAE, threshold: float = 0.7, method: str = "auto") -> pd.DataFrame:
    """Whole-SAE consistency of every pair of seeds from one Hungarian matching per pair: the shared fraction (Paulo
    & Belrose 2025: matched decoder and encoder cosines both above `threshold`) and the mean matched decoder cosine
    (its mean over pairs is `pw_mcc`, Song et al. 2025).

    Returns:
        One row per pair `s < t`: `s`, `t`, `shared_fraction`, `matched_cosine`, and the two halves of the
        shared rule on their own: `decoder_shared` and `encoder_shared` (matched pairs whose decoder, resp. encoder,
        cosine exceeds `threshold`).
    """
    dec, enc = sae.decoder_directions(), sae.encoder_directions()
    rows_out = []
    for s, t in itertools.combinations(range(sae.n_seeds), 2):
        pair = match_seed_pair(dec, enc, s, t, method)
        rows_out.append(
            {
                "s": s,
                "t": t,
                "shared_fraction": float(pair.shared(threshold).sum() / sae.cfg.d_sae),
                "matched_cosine": float(pair.decoder_cos.mean()),
                "decoder_shared": float((pair.decoder_cos > threshold).mean()),
                "encoder_shared": float((pair.encoder_cos > threshold).mean()),
            }
        )
    if not rows_out:
        raise ValueError("seed_pair_scores needs at least 2 seeds")
    return pd.DataFrame(rows_out)


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
    `feature_stability`, in blocks of `chunk_size` rows (memory O(chunk_size * F)).

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
        for lo in range(0, F, chunk_size):
            best[n, lo : lo + chunk_size] = (dirs[anchor, lo : lo + chunk_size] @ other.T).amax(1)  # (B,)
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
