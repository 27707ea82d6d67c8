"""Per-feature stability across seeds (PAPER.md, "Definitions") and whole-SAE consistency scores.

- `cross_seed_max_cosine`: `m_i(s->t) = max_j cos(d_i^s, d_j^t)` for every ordered pair of seeds, computed block by
  block so that memory is O(chunk_size^2) whatever d_sae is, and each unordered pair's cosine blocks only once
  (row maxima give s->t, column maxima t->s).
- `feature_stability`: `stab_i^s = (1/(S-1)) sum_{t!=s} 1[m_i(s->t) >= tau]`, its continuous variant (the mean of
  `m_i(s->t)`), and the stable / intermediate / unstable / dead label of each latent.
- `shared_fraction`: Hungarian matching of two SAEs' latents (Paulo & Belrose 2025: matched by decoder cosine, a
  latent is shared when its matched decoder and encoder cosines both exceed 0.7).
- `pw_mcc`: mean Hungarian-matched decoder cosine averaged over seed pairs (Song et al. 2025).
- `null_sae`: the baseline for all of them, independently initialised untrained SAEs of the same shape.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from saelib.config import StabilityConfig
from saelib.sae import SAE

UNSTABLE, INTERMEDIATE, STABLE, DEAD = 0, 1, 2, -1
"""Integer codes of `FeatureStability.label`."""
LABEL_NAMES = {UNSTABLE: "unstable", INTERMEDIATE: "intermediate", STABLE: "stable", DEAD: "dead"}


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def feature_directions(sae: SAE, similarity: str = "decoder") -> list[Tensor]:
    """The direction sets `(S, d_sae, d_in)` that a similarity compares: decoder rows, encoder columns, or both."""
    if similarity == "decoder":
        return [sae.decoder_directions()]
    if similarity == "encoder":
        return [sae.encoder_directions()]
    if similarity == "min":
        return [sae.decoder_directions(), sae.encoder_directions()]
    raise ValueError(f"similarity={similarity!r} must be decoder, encoder or min")


@torch.no_grad()
def cross_seed_max_cosine(
    directions: Tensor | list[Tensor],
    *,
    alive: Tensor | None = None,
    chunk_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Max cosine of every latent of every seed to the latents of every other seed.

    Args:
        directions: `(S, F, d)`, or a list of such tensors (then the similarity of two latents is the minimum of
            their cosines over the list, e.g. decoder and encoder).
        alive: `(S, F)` bool; dead latents are never a match (their own rows are still computed).
        chunk_size: rows and columns per block.

    Returns:
        `max_cos (S, S, F)` with `max_cos[s, t, i] = m_i(s->t)` (NaN on the diagonal s == t) and `argmax (S, S, F)`.
    """
    dirs = [_unit(d.float()) for d in (directions if isinstance(directions, (list, tuple)) else [directions])]
    S, F, _ = dirs[0].shape
    if S < 2:
        raise ValueError("stability needs at least 2 seeds")
    dev = dirs[0].device
    best = torch.full((S, S, F), -torch.inf, device=dev)
    arg = torch.full((S, S, F), -1, dtype=torch.long, device=dev)
    alive = torch.ones(S, F, dtype=torch.bool, device=dev) if alive is None else alive.to(dev)
    for s, t in itertools.combinations(range(S), 2):
        for i0 in range(0, F, chunk_size):
            i1 = min(F, i0 + chunk_size)
            for j0 in range(0, F, chunk_size):
                j1 = min(F, j0 + chunk_size)
                sim = torch.stack([d[s, i0:i1] @ d[t, j0:j1].T for d in dirs]).amin(0)  # (ci, cj)
                row = sim.masked_fill(~alive[t, j0:j1].unsqueeze(0), -torch.inf).max(1)  # s -> t
                upd = row.values > best[s, t, i0:i1]
                best[s, t, i0:i1] = torch.where(upd, row.values, best[s, t, i0:i1])
                arg[s, t, i0:i1] = torch.where(upd, row.indices + j0, arg[s, t, i0:i1])
                col = sim.masked_fill(~alive[s, i0:i1].unsqueeze(1), -torch.inf).max(0)  # t -> s
                upd = col.values > best[t, s, j0:j1]
                best[t, s, j0:j1] = torch.where(upd, col.values, best[t, s, j0:j1])
                arg[t, s, j0:j1] = torch.where(upd, col.indices + i0, arg[t, s, j0:j1])
    eye = torch.eye(S, dtype=torch.bool, device=dev).unsqueeze(-1).expand(S, S, F)
    return best.masked_fill(eye, torch.nan), arg.masked_fill(eye, -1)


class FeatureStability(NamedTuple):
    """Per-latent stability of a stack of S seeds."""

    stability: Tensor
    """`(S, d_sae)`: share of the other seeds holding a latent with similarity >= threshold (NaN if dead)."""
    mean_max_cos: Tensor
    """`(S, d_sae)`: the continuous variant, mean over other seeds of the max similarity (NaN if dead)."""
    max_cos: Tensor
    """`(S, S, d_sae)`: `m_i(s->t)` (NaN on the diagonal)."""
    label: Tensor
    """`(S, d_sae)` int: `STABLE`, `INTERMEDIATE`, `UNSTABLE` or `DEAD`."""
    threshold: float
    """The similarity threshold tau used."""


def stability_from_max_cos(max_cos: Tensor, threshold: float, alive: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`(stability, mean_max_cos)`, each `(S, F)`, from `max_cos (S, S, F)`; optionally over a subset of reference
    seeds by passing `max_cos[:, refs]` (rows whose own seed is among the refs then average over the others)."""
    valid = ~torch.isnan(max_cos)
    n_ref = valid.sum(1).clamp_min(1)
    hits = ((max_cos >= threshold) & valid).sum(1)
    stab = hits.float() / n_ref
    mean = torch.where(valid, max_cos, torch.zeros_like(max_cos)).sum(1) / n_ref
    if alive is not None:
        stab = stab.masked_fill(~alive, torch.nan)
        mean = mean.masked_fill(~alive, torch.nan)
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
    """Per-feature stability of every latent of every seed of `sae` (PAPER.md, "Per-feature stability").

    Args:
        sae: a stack of S >= 2 seeds.
        cfg: threshold tau, similarity (decoder, encoder, min), label cut-offs, chunk size.
        alive: `(S, d_sae)` bool of latents that fire on the evaluation set; dead ones get NaN and label `DEAD`
            and are never matched.
    """
    cfg = cfg or StabilityConfig()
    max_cos, _ = cross_seed_max_cosine(feature_directions(sae, cfg.similarity), alive=alive, chunk_size=cfg.chunk_size)
    stab, mean = stability_from_max_cos(max_cos, cfg.threshold, alive)
    return FeatureStability(stab, mean, max_cos, stability_labels(stab, cfg), cfg.threshold)


def hungarian_match(a: Tensor, b: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of rows of `a (n, d)` to rows of `b (m, d)` maximising total cosine.

    Returns:
        `(rows, cols, cosines)` as from `scipy.optimize.linear_sum_assignment` on the negated cosine matrix.
    """
    cos = (_unit(a.float()) @ _unit(b.float()).T).cpu().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return rows, cols, cos[rows, cols]


def shared_fraction(sae: SAE, s: int, t: int, threshold: float = 0.7) -> float:
    """Share of seed s's latents shared with seed t (Paulo & Belrose 2025): match by decoder cosine with the
    Hungarian algorithm; a matched pair is shared when its decoder and its encoder cosines both exceed `threshold`."""
    dec, enc = sae.decoder_directions(), sae.encoder_directions()
    rows, cols, dec_cos = hungarian_match(dec[s], dec[t])
    enc_cos = (enc[s][rows] * enc[t][cols]).sum(-1).cpu().numpy()
    return float(((dec_cos > threshold) & (enc_cos > threshold)).sum() / dec.shape[1])


def pairwise_shared_fraction(sae: SAE, threshold: float = 0.7) -> np.ndarray:
    """`(S, S)` matrix of `shared_fraction` over seed pairs (symmetric; 1 on the diagonal)."""
    S = sae.n_seeds
    out = np.eye(S)
    for s, t in itertools.combinations(range(S), 2):
        out[s, t] = out[t, s] = shared_fraction(sae, s, t, threshold)
    return out


def pw_mcc(sae: SAE) -> float:
    """Pairwise mean matched cosine (Song et al. 2025): the mean Hungarian-matched decoder cosine, averaged over
    all pairs of seeds."""
    dec = sae.decoder_directions()
    pairs = list(itertools.combinations(range(sae.n_seeds), 2))
    if not pairs:
        raise ValueError("pw_mcc needs at least 2 seeds")
    return float(np.mean([hungarian_match(dec[s], dec[t])[2].mean() for s, t in pairs]))


NULL_SEED_OFFSET = 1_000_003
"""Seed offset of `null_sae`, far from any seed a trained stack uses."""


def null_sae(sae_or_cfg, device: str | torch.device | None = None) -> SAE:
    """Independently initialised, untrained SAEs of the same shape and number of seeds: the null baseline."""
    cfg = sae_or_cfg.cfg if isinstance(sae_or_cfg, SAE) else sae_or_cfg
    if device is None:
        device = sae_or_cfg.W_dec.device if isinstance(sae_or_cfg, SAE) else "cpu"
    return SAE(replace(cfg, seed=cfg.seed + NULL_SEED_OFFSET), device=device).eval()
