"""Chapter 4, the synthetic model: SAEs trained on activations with planted isolated features and low-rank groups,
scored against the ground truth per latent and per subspace, and an identifiability sweep over one knob.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import subspace
from saelib.config import SAEConfig, StabilityConfig, SyntheticConfig, TrainConfig, check_scale
from saelib.metrics import evaluate_sae
from saelib.sae import SAE
from saelib.stability import LABEL_NAMES, feature_stability, hungarian_match, null_sae
from saelib.synthetic import (
    GENERATOR_VERSION,
    ISOLATED,
    SyntheticData,
    generate,
    isolated_recovery,
    latent_assignment,
)
from saelib.train import train_cached


@dataclass(frozen=True)
class SyntheticStudy:
    """Everything the synthetic chapter runs at one scale."""

    data: SyntheticConfig
    """The synthetic activation model."""
    sae: SAEConfig
    """The SAEs trained on it."""
    train: TrainConfig
    """Their training."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """How stability is scored."""
    sweep_knob: str = "group_rank"
    """The `SyntheticConfig` field swept in the identifiability sweep."""
    sweep_values: tuple = (1, 2, 3, 4, 6)
    """Its values."""

    def __post_init__(self) -> None:
        if self.sae.d_in != self.data.d_in:
            raise ValueError(f"SyntheticStudy: sae.d_in={self.sae.d_in} differs from data.d_in={self.data.d_in}")
        if self.sweep_knob not in SyntheticConfig.__dataclass_fields__:
            raise ValueError(f"SyntheticStudy.sweep_knob={self.sweep_knob!r} is not a SyntheticConfig field")
        for v in self.sweep_values:
            replace(self.data, **{self.sweep_knob: v})  # validates each value


def synthetic_study(scale: str) -> SyntheticStudy:
    """The synthetic chapter's configuration at a named scale."""
    check_scale(scale)
    if scale == "smoke":
        data = SyntheticConfig(d_in=32, n_isolated=24, n_groups=2, group_rank=4, n_samples=30_000)
        sae = SAEConfig(d_in=32, d_sae=64, k=4, n_seeds=3)
        train = TrainConfig(n_tokens=200_000, batch_size=256, dead_after_tokens=20_000)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 4))
    if scale == "default":
        data = SyntheticConfig(n_isolated=48, n_groups=3, group_rank=6, n_samples=200_000)
        sae = SAEConfig(d_in=64, d_sae=128, k=6, n_seeds=5)
        train = TrainConfig(n_tokens=200_000 * 8, batch_size=1024, dead_after_tokens=200_000)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 2, 4, 6, 8))
    # gpu / paper: wider activations, more features, more seeds, more tokens.
    data = SyntheticConfig(d_in=256, n_isolated=512, p_isolated=0.004, n_groups=16, group_rank=4, p_group=0.03,
                           n_samples=2_000_000)
    sae = SAEConfig(d_in=256, d_sae=1024, k=8, n_seeds=10 if scale == "paper" else 8)
    train = TrainConfig(n_tokens=2_000_000 * 10, batch_size=4096, dead_after_tokens=2_000_000)
    return SyntheticStudy(data, sae, train, sweep_values=(1, 2, 4, 8, 16))


class SyntheticAnalysis(NamedTuple):
    """`analyze`'s tables."""

    latents: pd.DataFrame
    """One row per (seed, latent): kind (isolated / group / unassigned / dead), group, stability, mean max cosine."""
    groups: pd.DataFrame
    """One row per (seed, group): latents assigned, recovered rank, overlap and angles to the true subspace."""
    pairs: pd.DataFrame
    """One row per (seed pair, group or `isolated`): Hungarian matched cosine of the latents, overlap of spans."""
    isolated_recovery: Tensor
    """`(S, n_isolated)` max cosine of each true isolated feature in each seed."""
    null_stability: Tensor
    """`(S, d_sae)` stability of untrained SAEs of the same shape (the null)."""


def analyze(
    sae: SAE, data: SyntheticData, stab_cfg: StabilityConfig | None = None, *, energy: float = 0.9
) -> SyntheticAnalysis:
    """Score a trained stack against the ground truth, per latent and per subspace."""
    stab_cfg = stab_cfg or StabilityConfig()
    truth = data.truth
    ev = evaluate_sae(sae, data.x)
    alive = ev.frequency.cpu() > 0
    stab = feature_stability(sae.cpu(), stab_cfg, alive=alive)
    assign = latent_assignment(sae, truth)
    S, F = assign.shape
    kinds = np.where(assign.numpy() == ISOLATED, "isolated", np.where(assign.numpy() >= 0, "group", "unassigned"))
    kinds = np.where(alive.numpy(), kinds, "dead")
    latents = pd.DataFrame({
        "seed": np.repeat(np.arange(S), F), "latent": np.tile(np.arange(F), S), "kind": kinds.ravel(),
        "group": assign.numpy().ravel(), "stability": stab.stability.numpy().ravel(),
        "mean_max_cos": stab.mean_max_cos.numpy().ravel(), "frequency": ev.frequency.cpu().numpy().ravel(),
        "label": [LABEL_NAMES[int(v)] for v in stab.label.numpy().ravel()],
    })
    dec = sae.decoder_directions().cpu()
    G, r_true = truth.group_bases.shape[:2]
    rows, spans = [], {}
    for s, g in itertools.product(range(S), range(G)):
        members = (assign[s] == g) & alive[s]
        row = {"seed": s, "group": g, "n_latents": int(members.sum()), "true_rank": r_true}
        if members.any():
            basis = subspace.span_basis(dec[s][members], energy=energy)
            spans[s, g] = basis
            angles = torch.rad2deg(subspace.principal_angles(basis, truth.group_bases[g]))
            row |= {"rank": basis.shape[0], "overlap_truth": subspace.subspace_overlap(basis, truth.group_bases[g]),
                    "max_angle_deg": float(angles.max()), "mean_angle_deg": float(angles.mean())}
        rows.append(row)
    groups = pd.DataFrame(rows)
    pair_rows = []
    for s, t in itertools.combinations(range(S), 2):
        for g in range(G):
            ms, mt = (assign[s] == g) & alive[s], (assign[t] == g) & alive[t]
            if ms.any() and mt.any():
                pair_rows.append({
                    "seed_a": s, "seed_b": t, "set": f"group {g}",
                    "matched_cos": float(hungarian_match(dec[s][ms], dec[t][mt])[2].mean()),
                    "overlap": subspace.subspace_overlap(spans[s, g], spans[t, g]),
                })
        ms, mt = (assign[s] == ISOLATED) & alive[s], (assign[t] == ISOLATED) & alive[t]
        if ms.any() and mt.any():
            pair_rows.append({"seed_a": s, "seed_b": t, "set": "isolated",
                              "matched_cos": float(hungarian_match(dec[s][ms], dec[t][mt])[2].mean())})
    null = feature_stability(null_sae(sae.cpu()), stab_cfg).stability
    return SyntheticAnalysis(latents, groups, pd.DataFrame(pair_rows), isolated_recovery(sae, truth), null)


def random_baseline(d_in: int, rank: int, true_rank: int, n_draws: int = 200, seed: int = 0) -> float:
    """Mean overlap of a random `rank`-dimensional subspace with a `true_rank`-dimensional one in `R^d_in`."""
    return subspace.random_overlap_baseline(d_in, rank, true_rank, n_draws=n_draws, seed=seed).overlap_mean


def train_study(study: SyntheticStudy, data_cfg: SyntheticConfig | None = None, *, progress: bool = True):
    """Generate the data of `data_cfg` (default `study.data`) and train (or load from the cache) the SAEs on it."""
    data_cfg = data_cfg or study.data
    data = generate(data_cfg)
    data_key = {"synthetic": data_cfg, "generator_version": GENERATOR_VERSION}
    sae, history = train_cached("synthetic", study.sae, study.train, data.x, data_key=data_key, progress=progress)
    return data, sae, history


def summarize(analysis: SyntheticAnalysis) -> dict[str, float]:
    """Headline numbers of one analysis (means over seeds, groups and pairs)."""
    lat, grp, pairs = analysis.latents, analysis.groups, analysis.pairs
    by_kind = lat.groupby("kind")["stability"].mean()
    out = {
        "isolated_recovery": float(analysis.isolated_recovery.mean()),
        "isolated_recovered_share": float((analysis.isolated_recovery >= 0.9).float().mean()),
        "stability_isolated": float(by_kind.get("isolated", np.nan)),
        "stability_group": float(by_kind.get("group", np.nan)),
        "stability_null": float(np.nanmean(analysis.null_stability.numpy())),
        "overlap_truth": float(grp["overlap_truth"].mean()) if "overlap_truth" in grp else np.nan,
        "max_angle_deg": float(grp["max_angle_deg"].mean()) if "max_angle_deg" in grp else np.nan,
    }
    if len(pairs):
        is_group = pairs["set"].str.startswith("group")
        out["matched_cos_group"] = float(pairs.loc[is_group, "matched_cos"].mean())
        out["matched_cos_isolated"] = float(pairs.loc[~is_group, "matched_cos"].mean())
        out["overlap_cross_seed"] = float(pairs.loc[is_group, "overlap"].mean()) if is_group.any() else np.nan
    return out


def identifiability_sweep(study: SyntheticStudy, *, progress: bool = True) -> pd.DataFrame:
    """Train and analyse one stack per value of `study.sweep_knob`; one row of `summarize` numbers per value."""
    rows = []
    for value in tqdm(study.sweep_values, desc=f"sweep {study.sweep_knob}", disable=not progress):
        data_cfg = replace(study.data, **{study.sweep_knob: value})
        data, sae, _ = train_study(study, data_cfg, progress=False)
        summary = summarize(analyze(sae, data, study.stability))
        rank = data_cfg.group_rank
        summary["overlap_random"] = random_baseline(data_cfg.d_in, rank, rank) if data_cfg.n_groups else np.nan
        rows.append({study.sweep_knob: value} | summary)
    return pd.DataFrame(rows)


def claims_table(summary: dict[str, float], d_in: int, group_rank: int) -> pd.DataFrame:
    """The chapter's three claims, each with the number measured, the criterion it is held to, and the verdict."""
    base = subspace.random_overlap_baseline(d_in, group_rank, group_rank, n_draws=200)
    rows = [
        ("(a) isolated features are recovered by one latent in every seed",
         "mean max cosine of a true isolated feature", summary["isolated_recovery"], ">= 0.95",
         summary["isolated_recovery"] >= 0.95),
        ("(a) ... and those latents are stable across seeds",
         "mean stability of isolated latents", summary["stability_isolated"], ">= 0.9",
         summary["stability_isolated"] >= 0.9),
        ("(b) latents inside low-rank groups are not identifiable",
         "mean Hungarian matched cosine, group vs isolated latents",
         summary.get("matched_cos_group", np.nan), f"< isolated ({summary.get('matched_cos_isolated', np.nan):.3f})",
         summary.get("matched_cos_group", np.nan) < summary.get("matched_cos_isolated", np.nan) - 0.05),
        ("(c) the groups are recovered as subspaces",
         "mean overlap of a seed's group span with the true subspace", summary["overlap_truth"], ">= 0.9",
         summary["overlap_truth"] >= 0.9),
        ("(c) ... the same subspace in every seed",
         "mean overlap of two seeds' spans of a group", summary.get("overlap_cross_seed", np.nan),
         f">> random ({base.overlap_mean:.3f})", summary.get("overlap_cross_seed", np.nan) >= 0.9),
    ]
    return pd.DataFrame(rows, columns=["claim", "measured as", "ours", "criterion", "holds"])
