"""Masking as the paper does it, and the firing rates of stable and unstable latents (chapter 2).

As a third-party reading of arXiv 2606.12138 reports it (secondary source): removing 4N unstable latents costs little
explained variance while removing N stable ones costs much; unstable latents fire on about 0.18% of tokens, stable ones
on about 0.44%.

- `removal_cuts`: the masks of that experiment for a stack of S seeds: nothing removed; N random stable latents
  removed; `ratio * N` random unstable latents removed; and for each group random alive latents of the same count
  and of the same activation mass (mass = summed activation over the tokens), several draws each.
- `masking_effects`: explained variance, and with a callable the CE-loss score, of each cut, and their losses against
  the full SAE. Removing a latent zeros its activation after encoding; the others keep their values and `b_dec` stays
  (`saelib.metrics.masked_explained_variance`).
- `masking_summary`: the mean and spread of the losses per cut, over draws and seeds.
- `reconstruct_without`: one batch's reconstruction with a set of latents removed (the dense reference).
- `firing_rate_summary`: medians and means of the firing rates of stable and unstable latents.

Labels are `saelib.stability` codes (`STABLE`, `INTERMEDIATE`, `UNSTABLE`, `DEAD`); dead latents are never drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from saelib.metrics import check_masks, masked_explained_variance
from saelib.sae import SAE
from saelib.stability import DEAD, STABLE, UNSTABLE

GROUPS = {"stable": STABLE, "unstable": UNSTABLE}
"""The two groups the paper masks, by name."""


# --- Random subsets -----------------------------------------------------------------------------------------------


def random_subset(size: int, candidates: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random subset `(F,)` bool of `size` latents among `candidates` `(F,)` bool."""
    pool = candidates.nonzero()[:, 0]
    if size > len(pool):
        raise ValueError(f"size={size} exceeds the {len(pool)} candidates")
    out = torch.zeros_like(candidates)
    out[pool[torch.randperm(len(pool), generator=generator)[:size]]] = True
    return out


def mass_matched_subset(
    mass: Tensor,
    target: float,
    candidates: Tensor,
    generator: torch.Generator,
    *,
    tol: float = 0.05,
    max_tries: int = 20,
) -> Tensor:
    """A random subset `(F,)` bool of `candidates` whose total `mass` lies within `tol * target` of `target`.

    Randomised greedy: walk the candidates in a random order and take each one that does not push the running mass
    above `target * (1 + tol)`, until it reaches `target * (1 - tol)`; retry with a new order when a walk ends short.

    Args:
        mass: `(F,)` non-negative activation mass of each latent (`FeatureActivationStats.mass`).
        target: the mass to match (a group's total).
        candidates: `(F,)` bool of latents that may be drawn.
        generator: the random stream.
        tol: relative tolerance.
        max_tries: random orders tried before giving up.

    Raises:
        ValueError: when the candidates cannot reach the target within the tolerance.
    """
    out = torch.zeros_like(candidates)
    if target <= 0:
        return out
    lo, hi = target * (1 - tol), target * (1 + tol)
    pool = candidates.nonzero()[:, 0]
    m = mass.double().cpu()
    if float(m[pool.cpu()].sum()) < lo:
        raise ValueError(f"candidates hold mass {float(m[pool.cpu()].sum()):.4g} < target {target:.4g} * (1 - tol)")
    for _ in range(max_tries):
        order = pool[torch.randperm(len(pool), generator=generator)].cpu()
        vals = m[order].tolist()
        total, taken = 0.0, []
        for i, v in zip(order.tolist(), vals):
            if total + v <= hi:
                total += v
                taken.append(i)
                if total >= lo:
                    out[taken] = True
                    return out
    raise ValueError(f"no subset of the candidates matched mass {target:.4g} within tol={tol} in {max_tries} tries")


# --- The cuts -----------------------------------------------------------------------------------------------------


class RemovalCuts(NamedTuple):
    """The masks of the paper's masking experiment and what each one is."""

    removed: Tensor
    """`(M, S, d_sae)` bool, True for the latents removed (row 0 removes nothing: the full SAE)."""
    cut: list[str]
    """`(M,)` names: `full`, `remove N stable`, `remove 4N unstable`, `count-matched to ...`, `mass-matched to ...`."""
    group: list[str]
    """`(M,)` the group a cut removes or is matched to: `none`, `stable` or `unstable`."""
    control: list[str]
    """`(M,)` `group` (the group's own latents), `count` or `mass` (random alive latents), or `none`."""
    draw: list[int]
    """`(M,)` the draw's index."""
    n: int
    """N: the stable latents removed per seed (the unstable cut removes `ratio * N`)."""
    mass_removed: Tensor
    """`(M, S)` float64 the removed latents' share of their seed's activation mass."""


def largest_n(label: Tensor, ratio: int = 4) -> int:
    """The largest N for which every seed has N stable and `ratio * N` unstable latents (`label (S, d_sae)`)."""
    label = label.reshape(-1, label.shape[-1])
    n_stable = (label == STABLE).sum(-1)
    n_unstable = (label == UNSTABLE).sum(-1)
    return int(torch.minimum(n_stable, n_unstable // ratio).min())


def removal_cuts(
    label: Tensor,
    mass: Tensor,
    n: int | None = None,
    *,
    ratio: int = 4,
    draws: int = 5,
    pool: str = "alive",
    mass_tolerance: float = 0.05,
    seed: int = 0,
) -> RemovalCuts:
    """Remove N stable latents, remove `ratio * N` unstable latents, and random controls of each (per seed).

    Each draw takes its own random N stable (`ratio * N` unstable) latents of every seed, and its own controls: as
    many random latents (`count`), and random latents of the same total activation mass within `mass_tolerance`
    (`mass`), drawn from `pool`: `alive` (every alive latent, the group's own included) or `complement` (alive
    latents outside the group; all alive latents when the complement cannot match the mass).

    Args:
        label: `(S, d_sae)` stability labels.
        mass: `(S, d_sae)` activation mass (`metrics.feature_activation_stats(...).mass`).
        n: N (default `largest_n(label, ratio)`).
        ratio: unstable latents removed per stable one (the paper's 4).
        draws: draws of each random cut.
        pool: where the controls are drawn from.
        mass_tolerance: relative tolerance of the mass-matched controls.
        seed: seed of the draws.
    """
    if label.ndim != 2 or mass.shape != label.shape:
        raise ValueError(f"label and mass must both be (S, d_sae), got {tuple(label.shape)}, {tuple(mass.shape)}")
    if pool not in ("alive", "complement"):
        raise ValueError(f"pool={pool!r} must be 'alive' or 'complement'")
    if ratio < 1 or draws < 1:
        raise ValueError(f"ratio={ratio} and draws={draws} must be >= 1")
    label, mass = label.cpu(), mass.double().cpu()
    n = largest_n(label, ratio) if n is None else n
    if not 1 <= n <= largest_n(label, ratio):
        raise ValueError(f"n={n} must lie in [1, {largest_n(label, ratio)}] (stable and {ratio}x unstable per seed)")
    S, F = label.shape
    gen = torch.Generator().manual_seed(seed)
    alive = label != DEAD
    cuts: list[tuple[str, str, str, int, Tensor]] = [("full", "none", "none", 0, torch.zeros(S, F, dtype=torch.bool))]
    for name, code in GROUPS.items():
        size = n if code == STABLE else ratio * n
        title = f"{'N' if code == STABLE else f'{ratio}N'} {name}"
        for d in range(draws):
            group = torch.stack([random_subset(size, label[s] == code, gen) for s in range(S)])
            cuts.append((f"remove {title}", name, "group", d, group))
            for control in ("count", "mass"):
                picked = torch.zeros(S, F, dtype=torch.bool)
                for s in range(S):
                    candidates = alive[s] & (label[s] != code) if pool == "complement" else alive[s]
                    try:
                        picked[s] = _control(control, group[s], mass[s], candidates, gen, mass_tolerance)
                    except ValueError:
                        if pool == "alive":
                            raise
                        picked[s] = _control(control, group[s], mass[s], alive[s], gen, mass_tolerance)
                cuts.append((f"{control}-matched to {title}", name, control, d, picked))
    removed = torch.stack([c[4] for c in cuts])  # (M, S, F)
    share = (mass * removed).sum(-1) / mass.sum(-1).clamp_min(1e-30)  # (M, S)
    return RemovalCuts(
        removed, [c[0] for c in cuts], [c[1] for c in cuts], [c[2] for c in cuts], [c[3] for c in cuts], n, share
    )


def _control(kind: str, group: Tensor, mass: Tensor, candidates: Tensor, gen: torch.Generator, tol: float) -> Tensor:
    if kind == "count":
        return random_subset(int(group.sum()), candidates, gen)
    return mass_matched_subset(mass, float(mass[group].sum()), candidates, gen, tol=tol)


# --- Effects ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct_without(sae: SAE, x: Tensor, removed: Tensor) -> Tensor:
    """Reconstructions `(S, B, d_in)` of `x (B, d_in)` with the latents in `removed (S, d_sae)` bool zeroed after
    encoding (dense decoding: the reference for `masking_effects`)."""
    removed = check_masks(removed, sae.n_seeds, sae.cfg.d_sae)[0].to(sae.W_dec.device)
    z = sae.encode(x.to(sae.W_dec.device, torch.float32))  # (S, B, d_sae)
    return sae.decode(z * ~removed.unsqueeze(1))


class MaskingEffects(NamedTuple):
    """What removing each cut's latents costs, per seed."""

    ev_full: Tensor
    """`(S,)` explained variance of the whole SAE."""
    ev: Tensor
    """`(M, S)` explained variance with the cut's latents removed."""
    ev_loss: Tensor
    """`(M, S)` `ev_full - ev`: the explained variance lost."""
    ce_score: Tensor | None
    """`(M, S)` CE-loss score with the cut's latents removed (None without `ce_score`)."""
    ce_loss: Tensor | None
    """`(M, S)` the full SAE's CE-loss score minus `ce_score`: the CE score lost."""
    n_tokens: int
    """Tokens of the explained-variance evaluation."""


def masking_effects(
    sae: SAE,
    batches: Tensor | Iterable[Tensor],
    removed: Tensor,
    *,
    ce_score: Callable[[Tensor], Tensor] | None = None,
    max_tokens: int | None = None,
) -> MaskingEffects:
    """Explained variance and (optionally) CE-loss score of each cut, and what each loses against the full SAE.

    Args:
        sae: the stack (S seeds).
        batches: activations `(N, d_in)` or an iterable of batches `(B, d_in)` (held-out tokens).
        removed: `(M, S, d_sae)` bool, True for the latents removed (`RemovalCuts.removed`).
        ce_score: maps masks of latents KEPT `(M', S, d_sae)` bool to CE-loss scores `(M', S)`, e.g.
            `lambda keep: splice.masked_spliced_ce(lm, contexts, sae, keep, layer=layer).ce_loss_score`;
            it is called once, with the all-kept mask first.
        max_tokens: stop the explained-variance stream after this many tokens.
    """
    S, F = sae.n_seeds, sae.cfg.d_sae
    keep = ~check_masks(removed, S, F)
    ev = masked_explained_variance(sae, batches, keep, max_tokens=max_tokens)
    ce = ce_loss = None
    if ce_score is not None:
        full_keep = torch.ones(1, S, F, dtype=torch.bool, device=keep.device)
        scores = torch.as_tensor(ce_score(torch.cat([full_keep, keep]))).double().cpu()  # (1 + M, S)
        if scores.shape != (len(keep) + 1, S):
            raise ValueError(f"ce_score returned shape {tuple(scores.shape)}, expected ({len(keep) + 1}, {S})")
        ce, ce_loss = scores[1:], scores[:1] - scores[1:]
    return MaskingEffects(ev.full.cpu(), ev.masked.cpu(), ev.full.cpu() - ev.masked.cpu(), ce, ce_loss, ev.n_tokens)


def masking_summary(cuts: RemovalCuts, effects: MaskingEffects) -> list[dict]:
    """One row per cut name: `cut`, `group`, `control`, `n_removed` (per seed), `mass_removed` (share), and the
    mean and standard deviation over draws and seeds of `ev_loss` (and of `ce_loss` when measured), in the order of
    first appearance."""
    names = list(dict.fromkeys(cuts.cut))
    counts = cuts.removed.sum(-1).double()  # (M, S)
    rows = []
    for name in names:
        idx = torch.tensor([m for m, c in enumerate(cuts.cut) if c == name])
        row = {
            "cut": name,
            "group": cuts.group[int(idx[0])],
            "control": cuts.control[int(idx[0])],
            "n_removed": float(counts[idx].mean()),
            "mass_removed": float(cuts.mass_removed[idx].mean()),
        }
        metrics = {"ev_loss": effects.ev_loss}
        if effects.ce_loss is not None:
            metrics["ce_loss"] = effects.ce_loss
        for key, value in metrics.items():
            v = value[idx].double().flatten()
            row[key] = float(v.mean())
            row[f"{key}_std"] = float(v.std()) if len(v) > 1 else 0.0
        rows.append(row)
    return rows


# --- Firing rates -------------------------------------------------------------------------------------------------


def firing_rate_summary(frequency: Tensor, label: Tensor) -> dict[str, dict[str, float]]:
    """Medians and means of the firing rates of stable and unstable latents, pooled over seeds.

    Reported (secondary source): unstable latents fire on about 0.18% of tokens, stable ones on about 0.44%.

    Args:
        frequency: `(S, d_sae)` or `(d_sae,)` share of tokens on which each latent fires
            (`metrics.feature_activation_stats(...).frequency`).
        label: stability labels of the same shape (`saelib.stability` codes; the anchor's alone is `(d_sae,)`).

    Returns:
        `{"stable": {...}, "unstable": {...}}`, each with `n`, `median`, `mean` (shares, not percent) and
        `median_per_seed` (the median of the seeds' medians, over the seeds that hold the group).
    """
    if frequency.shape != label.shape:
        raise ValueError(f"frequency {tuple(frequency.shape)} and label {tuple(label.shape)} must have one shape")
    freq, label = frequency.double().cpu().reshape(-1, frequency.shape[-1]), label.cpu().reshape(-1, label.shape[-1])
    nan = float("nan")
    out = {}
    for name, code in GROUPS.items():
        group = label == code  # (S', d_sae)
        values = freq[group]
        per_seed = [_median(freq[s][group[s]]) for s in range(len(freq)) if group[s].any()]
        out[name] = {
            "n": int(group.sum()),
            "median": _median(values) if len(values) else nan,
            "mean": float(values.mean()) if len(values) else nan,
            "median_per_seed": _median(torch.tensor(per_seed, dtype=torch.float64)) if per_seed else nan,
        }
    return out


def _median(v: Tensor) -> float:
    """The median, averaging the two middle values of an even count (`Tensor.median` returns the lower one)."""
    return float(v.double().quantile(0.5))
