"""Chapter 4, the synthetic model: SAEs trained on activations with planted isolated features and low-rank groups,
scored against the ground truth per latent and per subspace, and an identifiability sweep over one knob.

The chapter's contract (`saelib.chapters.common`): `study(scale, device)` -> `SyntheticStudy`; `run(study)` trains
(or loads) the stack and every sweep point through the artifact cache and analyses them; `summary(result)` gives the
numbers the prose glues; `claims(summary)` the verdicts the chapter ends with.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib import subspace
from saelib.cache import cached_result
from saelib.chapters.common import NOT_REPORTED, Claim, claim, preset
from saelib.config import SAEConfig, StabilityConfig, SyntheticConfig, TrainConfig
from saelib.matching import hungarian_match
from saelib.metrics import evaluate_sae
from saelib.sae import SAE
from saelib.stability import LABEL_NAMES, feature_stability, null_sae
from saelib.subspace import RandomBaseline
from saelib.synthetic import (
    GENERATOR_VERSION,
    ISOLATED,
    GroundTruth,
    SyntheticData,
    generate,
    isolated_recovery,
    latent_assignment,
)
from saelib.train import TRAIN_VERSION, train_cached, train_key

VERSION = 1
"""Bumped when `analyze` or `identifiability_sweep` would give other numbers (part of the cached sweep's key)."""

CLAIMED = "claimed (abstract)"
"""The `paper` cell of a claim the paper's abstract states without a number (it reports none for this model)."""


@dataclass(frozen=True)
class SyntheticStudy:
    """Everything the synthetic chapter runs at one scale."""

    data: SyntheticConfig
    """The synthetic activation model."""
    sae: SAEConfig
    """The SAEs trained on it."""
    train: TrainConfig
    """Their training (its `device` is where they train; it is not part of any cache key)."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """How stability is scored."""
    sweep_knob: str = "group_rank"
    """The `SyntheticConfig` field swept in the identifiability sweep."""
    sweep_values: tuple = (1, 2, 3, 4, 6)
    """Its values (a list given as an override is kept as a tuple)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sweep_values", tuple(self.sweep_values))
        if self.sae.d_in != self.data.d_in:
            raise ValueError(f"SyntheticStudy: sae.d_in={self.sae.d_in} differs from data.d_in={self.data.d_in}")
        if self.sae.n_seeds < 2:
            raise ValueError(f"SyntheticStudy: sae.n_seeds={self.sae.n_seeds} must be >= 2 (seeds are compared)")
        if self.sweep_knob not in SyntheticConfig.__dataclass_fields__:
            raise ValueError(f"SyntheticStudy.sweep_knob={self.sweep_knob!r} is not a SyntheticConfig field")
        if not self.sweep_values:
            raise ValueError("SyntheticStudy.sweep_values is empty")
        for v in self.sweep_values:
            replace(self.data, **{self.sweep_knob: v})  # validates each value


def study(scale: str = "default", device: str = "auto", **overrides) -> SyntheticStudy:
    """The synthetic chapter at a named scale (`smoke`, `default`, `gpu`, `paper`), its SAEs trained on `device`;
    `overrides` replace fields of the study (None keeps the scale's value)."""
    return preset(_preset, scale, device, **overrides)


def _preset(scale: str, device: str) -> SyntheticStudy:
    if scale == "smoke":
        data = SyntheticConfig(d_in=32, n_isolated=24, n_groups=2, group_rank=4, n_samples=30_000)
        sae = SAEConfig(d_in=32, d_sae=64, k=4, n_seeds=3)
        train = TrainConfig(n_tokens=200_000, batch_size=256, dead_window=0.1, device=device)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 4))
    if scale == "default":
        data = SyntheticConfig(n_isolated=48, n_groups=3, group_rank=6, n_samples=200_000)
        sae = SAEConfig(d_in=64, d_sae=128, k=6, n_seeds=5)
        train = TrainConfig(n_tokens=200_000 * 8, batch_size=1024, dead_window=0.1, device=device)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 2, 4, 6, 8))
    # gpu / paper: wider activations, more features, more seeds, more tokens.
    data = SyntheticConfig(
        d_in=256, n_isolated=512, p_isolated=0.004, n_groups=16, group_rank=4, p_group=0.03, n_samples=2_000_000
    )
    sae = SAEConfig(d_in=256, d_sae=1024, k=8, n_seeds=10 if scale == "paper" else 8)
    train = TrainConfig(n_tokens=2_000_000 * 10, batch_size=4096, dead_window=0.1, device=device)
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
    latents = pd.DataFrame(
        {
            "seed": np.repeat(np.arange(S), F),
            "latent": np.tile(np.arange(F), S),
            "kind": kinds.ravel(),
            "group": assign.numpy().ravel(),
            "stability": stab.stability.numpy().ravel(),
            "mean_max_cos": stab.mean_max_cos.numpy().ravel(),
            "frequency": ev.frequency.cpu().numpy().ravel(),
            "label": [LABEL_NAMES[int(v)] for v in stab.label.numpy().ravel()],
        }
    )
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
            row |= {
                "rank": basis.shape[0],
                "overlap_truth": subspace.subspace_overlap(basis, truth.group_bases[g]),
                "max_angle_deg": float(angles.max()),
                "mean_angle_deg": float(angles.mean()),
            }
        rows.append(row)
    groups = pd.DataFrame(rows)
    pair_rows = []
    for s, t in itertools.combinations(range(S), 2):
        for g in range(G):
            ms, mt = (assign[s] == g) & alive[s], (assign[t] == g) & alive[t]
            if ms.any() and mt.any():
                pair_rows.append(
                    {
                        "seed_a": s,
                        "seed_b": t,
                        "set": f"group {g}",
                        "matched_cos": float(hungarian_match(dec[s][ms], dec[t][mt])[2].mean()),
                        "overlap": subspace.subspace_overlap(spans[s, g], spans[t, g]),
                    }
                )
        ms, mt = (assign[s] == ISOLATED) & alive[s], (assign[t] == ISOLATED) & alive[t]
        if ms.any() and mt.any():
            pair_rows.append(
                {
                    "seed_a": s,
                    "seed_b": t,
                    "set": "isolated",
                    "matched_cos": float(hungarian_match(dec[s][ms], dec[t][mt])[2].mean()),
                }
            )
    null = feature_stability(null_sae(sae.cpu()), stab_cfg).stability
    return SyntheticAnalysis(latents, groups, pd.DataFrame(pair_rows), isolated_recovery(sae, truth), null)


def random_baseline(d_in: int, rank: int, true_rank: int, n_draws: int = 200, seed: int = 0) -> float:
    """Mean overlap of a random `rank`-dimensional subspace with a `true_rank`-dimensional one in `R^d_in`."""
    return subspace.random_overlap_baseline(d_in, rank, true_rank, n_draws=n_draws, seed=seed).overlap_mean


class TrainedStack(NamedTuple):
    """`train_study`'s output."""

    data: SyntheticData
    """The generated activations `(n_samples, d_in)` and their ground truth."""
    sae: SAE
    """The trained stack of `n_seeds` SAEs (inference mode, on `train.device`)."""
    history: dict
    """Its training history (`tokens`, and per-seed curves such as `fvu` `(n_logs, S)`)."""


def train_study(
    study: SyntheticStudy, data_cfg: SyntheticConfig | None = None, *, progress: bool = True
) -> TrainedStack:
    """Generate the data of `data_cfg` (default `study.data`) and train (or load from the cache) the SAEs on it.

    The cache key (`saes/synthetic-<hash>`) is the SAE and training configs (device excluded) and the data config
    with the generator's version, so the notebook, the CLI and the sweep share stacks.
    """
    data_cfg = data_cfg or study.data
    data = generate(data_cfg)
    data_key = {"synthetic": data_cfg, "generator_version": GENERATOR_VERSION}
    sae, history = train_cached("synthetic", study.sae, study.train, data.x, data_key=data_key, progress=progress)
    return TrainedStack(data, sae, history)


def summarize_analysis(analysis: SyntheticAnalysis) -> dict[str, float]:
    """Headline numbers of one analysis (means over seeds, groups and pairs; NaN where a set is empty)."""
    lat, grp, pairs = analysis.latents, analysis.groups, analysis.pairs
    by_kind = lat.groupby("kind")["stability"].mean()
    out = {
        "isolated_recovery": float(analysis.isolated_recovery.mean()),
        "isolated_recovered_share": float((analysis.isolated_recovery >= 0.9).float().mean()),
        "stability_isolated": float(by_kind.get("isolated", np.nan)),
        "stability_group": float(by_kind.get("group", np.nan)),
        "stability_null": float(np.nanmean(analysis.null_stability.numpy())),
        "overlap_truth": float(grp["overlap_truth"].mean()) if "overlap_truth" in grp else math.nan,
        "max_angle_deg": float(grp["max_angle_deg"].mean()) if "max_angle_deg" in grp else math.nan,
        "matched_cos_group": math.nan,
        "matched_cos_isolated": math.nan,
        "overlap_cross_seed": math.nan,
    }
    if len(pairs):
        is_group = pairs["set"].str.startswith("group")
        out["matched_cos_group"] = float(pairs.loc[is_group, "matched_cos"].mean())
        out["matched_cos_isolated"] = float(pairs.loc[~is_group, "matched_cos"].mean())
        out["overlap_cross_seed"] = float(pairs.loc[is_group, "overlap"].mean()) if is_group.any() else math.nan
    return out


def identifiability_sweep(study: SyntheticStudy, *, progress: bool = True) -> pd.DataFrame:
    """Train (through the cache) and analyse one stack per value of `study.sweep_knob`.

    Returns:
        One row per value: the knob, `summarize_analysis`'s numbers, and `overlap_random`, the mean overlap of two
        random subspaces of the groups' rank (NaN without groups).
    """
    rows = []
    for value in tqdm(study.sweep_values, desc=f"sweep {study.sweep_knob}", disable=not progress):
        data_cfg = replace(study.data, **{study.sweep_knob: value})
        data, sae, _ = train_study(study, data_cfg, progress=False)
        numbers = summarize_analysis(analyze(sae, data, study.stability))
        rank = data_cfg.group_rank
        numbers["overlap_random"] = random_baseline(data_cfg.d_in, rank, rank) if data_cfg.n_groups else math.nan
        rows.append({study.sweep_knob: value} | numbers)
    return pd.DataFrame(rows)


def sweep_key(study: SyntheticStudy) -> dict:
    """What identifies the sweep's table: every config that changes it (not the device), the versions."""
    return {
        "data": study.data,
        "sae": study.sae,
        "train": train_key(study.train),
        "stability": study.stability,
        "knob": study.sweep_knob,
        "values": list(study.sweep_values),
        "generator_version": GENERATOR_VERSION,
        "train_version": TRAIN_VERSION,
        "version": VERSION,
    }


class GroupExample(NamedTuple):
    """The latents of one planted group in a few seeds (figure 4)."""

    group: int
    seeds: tuple[int, ...]
    directions: list[Tensor]
    """Per seed, the unit decoder rows `(n_s, d_in)` assigned to `group`."""
    basis: Tensor
    """The group's true orthonormal basis `(group_rank, d_in)`."""


class SyntheticResult(NamedTuple):
    """Everything chapter 4 shows, from `run`."""

    truth: GroundTruth
    """The planted isolated directions and group subspaces of `study.data`."""
    sae: SAE
    """The trained stack of `n_seeds` SAEs."""
    history: dict
    """Its training history (figure 1)."""
    analysis: SyntheticAnalysis
    """Per-latent, per-group and per-pair tables, recovery of the isolated features, the untrained null."""
    assignment: Tensor
    """`(S, d_sae)` int: `ISOLATED`, a group index, or `UNASSIGNED` (`saelib.synthetic.latent_assignment`)."""
    pair_means: pd.DataFrame
    """Per set (`isolated`, `group g`): the mean over seed pairs of the matched cosine and the span overlap."""
    baseline: RandomBaseline
    """Overlap and principal angles of two random subspaces of the groups' rank in `R^d_in` (200 draws)."""
    example: GroupExample
    """Group 0's latents in seeds 0 and 1."""
    sweep: pd.DataFrame
    """`identifiability_sweep`'s table; its first column is the knob."""


def run(study: SyntheticStudy, *, progress: bool = True) -> SyntheticResult:
    """Train (or load) the study's stack, analyse it against the ground truth, and run the identifiability sweep.

    The stacks are cached by `train_cached` (`saes/synthetic-<hash>`, one per sweep point too), the sweep's table by
    `cached_result` (`synthetic/sweep-<hash>`); the analysis of one stack takes seconds and is recomputed.
    """
    data, sae, history = train_study(study, progress=progress)
    analysis = analyze(sae, data, study.stability)
    assignment = latent_assignment(sae, data.truth)
    pairs = analysis.pairs if len(analysis.pairs) else pd.DataFrame(columns=["set", "matched_cos", "overlap"])
    pair_means = pairs.groupby("set")[["matched_cos", "overlap"]].mean()
    rank = study.data.group_rank
    baseline = subspace.random_overlap_baseline(study.data.d_in, rank, rank, n_draws=200)
    dirs = sae.decoder_directions().cpu()  # (S, d_sae, d_in)
    if study.data.n_groups:
        example = GroupExample(0, (0, 1), [dirs[s][assignment[s] == 0] for s in (0, 1)], data.truth.group_bases[0])
    else:  # no group to draw
        empty = torch.zeros(0, study.data.d_in)
        example = GroupExample(0, (0, 1), [empty, empty], empty)
    sweep = cached_result(
        "synthetic", "sweep", sweep_key(study), functools.partial(identifiability_sweep, study, progress=progress)
    )
    return SyntheticResult(data.truth, sae, history, analysis, assignment, pair_means, baseline, example, sweep)


def summary(result: SyntheticResult) -> dict[str, float | int | str]:
    """Every number chapter 4's prose glues and its claims test.

    `summarize_analysis`'s headline numbers of the main stack; the random-subspace baseline (`overlap_random`,
    `random_max_angle_deg`); the shape of the study (`d_in`, `group_rank`, `n_seeds`, `d_sae`); and the sweep's ends:
    `sweep_knob`, `sweep_first` / `sweep_last` (its values) and, at each end, the group latents' stability and
    matched cosine; `sweep_overlap_excess_min` is the smallest margin of the cross-seed span overlap over random.
    """
    out: dict[str, float | int | str] = dict(summarize_analysis(result.analysis))
    S, d_sae = result.assignment.shape
    out |= {
        "overlap_random": float(result.baseline.overlap_mean),
        "random_max_angle_deg": float(result.baseline.max_angle_deg),
        "d_in": int(result.truth.group_bases.shape[-1]),
        "group_rank": int(result.truth.group_bases.shape[1]),
        "n_seeds": int(S),
        "d_sae": int(d_sae),
    }
    sweep = result.sweep
    knob = str(sweep.columns[0])
    first, last = sweep.iloc[0], sweep.iloc[-1]
    excess = sweep["overlap_cross_seed"] - sweep["overlap_random"]
    out |= {
        "sweep_knob": knob.replace("_", " "),
        "sweep_first": _plain(sweep[knob].iloc[0]),
        "sweep_last": _plain(sweep[knob].iloc[-1]),
        "sweep_stability_group_first": float(first["stability_group"]),
        "sweep_stability_group_last": float(last["stability_group"]),
        "sweep_matched_cos_group_first": float(first["matched_cos_group"]),
        "sweep_matched_cos_group_last": float(last["matched_cos_group"]),
        "sweep_overlap_excess_min": float(excess.min()) if excess.notna().any() else math.nan,
    }
    return out


def _plain(value) -> float | int | str:
    """A numpy scalar as the Python number (or string) it holds."""
    return value.item() if hasattr(value, "item") else value


def claims(s: dict[str, float | int | str]) -> list[Claim]:
    """Chapter 4's claims, each held to a criterion on `summary`'s numbers (NaN: not measured).

    The paper reports no number for its synthetic model; (b) and (c) are its abstract's qualitative statement,
    (a) is the control that the setup recovers what is recoverable.
    """

    def nan(*keys: str) -> bool:
        return any(isinstance(s.get(k), float) and math.isnan(s[k]) for k in keys) or any(k not in s for k in keys)

    def gate(keys: tuple[str, ...], holds: bool) -> bool | None:
        return None if nan(*keys) else holds

    iso, grp = s.get("matched_cos_isolated", math.nan), s.get("matched_cos_group", math.nan)
    cross, rand = s.get("overlap_cross_seed", math.nan), s.get("overlap_random", math.nan)
    first, last = s.get("sweep_matched_cos_group_first", math.nan), s.get("sweep_matched_cos_group_last", math.nan)
    return [
        claim(
            "(a) isolated features are recovered by one latent in every seed",
            "mean max cosine of a true isolated feature to a seed's decoder rows >= 0.95",
            s["isolated_recovery"],
            gate(("isolated_recovery",), s["isolated_recovery"] >= 0.95),
        ),
        claim(
            "(a) ... and those latents are stable across seeds",
            "mean per-feature stability of the latents assigned to isolated features >= 0.9",
            s["stability_isolated"],
            gate(("stability_isolated",), s["stability_isolated"] >= 0.9),
        ),
        claim(
            "(b) latents inside low-rank groups are not identifiable across seeds",
            f"Hungarian matched cosine of group latents < that of isolated latents ({iso:.3f}) - 0.05",
            grp,
            gate(("matched_cos_group", "matched_cos_isolated"), grp < iso - 0.05),
            CLAIMED,
        ),
        claim(
            "(c) the groups are recovered as subspaces",
            "mean overlap of a seed's span of a group with the true subspace >= 0.9",
            s["overlap_truth"],
            gate(("overlap_truth",), s["overlap_truth"] >= 0.9),
            CLAIMED,
        ),
        claim(
            "(c) ... the same subspace in every seed",
            f"mean overlap of two seeds' spans of a group >= 0.9 (random subspaces: {rand:.3f})",
            cross,
            gate(("overlap_cross_seed",), cross >= 0.9),
            CLAIMED,
        ),
        claim(
            f"(d) across the sweep over {s.get('sweep_knob', '?')}, the spans stay reproducible",
            "smallest margin of the cross-seed span overlap over random subspaces, over the sweep, >= 0.5",
            s.get("sweep_overlap_excess_min", math.nan),
            gate(("sweep_overlap_excess_min",), s.get("sweep_overlap_excess_min", math.nan) >= 0.5),
            NOT_REPORTED,
        ),
        claim(
            f"(d) group latents are less identifiable at {s.get('sweep_knob', '?')} = {s.get('sweep_last', '?')} "
            f"than at {s.get('sweep_first', '?')}",
            "Hungarian matched cosine of group latents drops by > 0.05 from the first to the last value",
            f"{first:.3f} -> {last:.3f}",
            gate(("sweep_matched_cos_group_first", "sweep_matched_cos_group_last"), last < first - 0.05),
            NOT_REPORTED,
        ),
    ]
