"""Functional asymmetry of stable and unstable latents (PAPER.md, claim 2; chapter 2).

`feature_cuts` builds the masks of the experiments: keep or remove the stable / unstable latents, beside random
controls of each matched in size (`size_matched_subset`) or in activation mass (`mass_matched_subset`);
`metrics.masked_explained_variance` and `metrics.masked_spliced_ce` then measure every cut at once.
`feature_ablation_effects` measures the loss change when a single latent is removed (on the contexts where it fires,
`firing_contexts`, for latents drawn per stability level by `sample_per_bin`). `cut_summary`, `asymmetry_summary` and
`asymmetry_claims` turn the tables into the chapter's numbers and verdicts. The chapter's budgets are
`config.AsymmetryConfig`; `asymmetry_key` keys its cached steps (`cache.cached_result`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib.config import check_scale
from saelib.sae import SAE


@dataclass(frozen=True)
class AsymmetryConfig:
    """Budgets and choices of the functional-asymmetry chapter (book/methods.md, chapter 2; `saelib.asymmetry`)."""

    control_draws: int = 5
    """Random control subsets drawn per (group, control kind) for explained variance (cheap)."""
    ce_control_draws: int = 2
    """How many of those draws are also spliced into the model (each costs a forward pass per context)."""
    mass_tolerance: float = 0.05
    """A mass-matched control's total activation mass lies within this relative distance of its group's."""
    control_pool: str = "complement"
    """Where controls are drawn from: `complement` (alive latents outside the group; all alive latents when the
    complement cannot match the group) or `all` (all alive latents)."""
    ce_seeds: int = 1
    """Seeds (the first ones of the stack) spliced into the model for the CE experiments."""
    ce_context_len: int | None = None
    """Tokens kept of each CE context (None: all); the model is causal, so a prefix is a shorter context."""
    marginal_per_bin: int = 6
    """Latents per stability level ablated one at a time."""
    marginal_contexts: int = 2
    """Held-out contexts (among those where the latent fires) per ablated latent."""
    n_top: int = 20
    """Top-activating tokens kept per latent (surface-form statistics, explanations)."""
    top_max_tokens: int | None = 300_000
    """Training-split tokens scanned for top activations (None: all)."""
    interp_seeds: int = 1
    """Seeds whose latents get top contexts and trigger statistics."""
    n_random: int = 500
    """Random tokens whose latents are recorded, as non-activating examples for explanation scoring."""
    explain_per_bin: int = 5
    """Latents per stability label (stable, unstable) explained and scored, when an endpoint is configured."""
    seed: int = 0
    """Seed of every random draw of the chapter."""

    def __post_init__(self) -> None:
        if not 1 <= self.ce_control_draws <= self.control_draws:
            raise ValueError(f"AsymmetryConfig.ce_control_draws={self.ce_control_draws} must lie in [1, control_draws]")
        for name in ("control_draws", "ce_seeds", "marginal_per_bin", "marginal_contexts", "n_top", "interp_seeds",
                     "n_random", "explain_per_bin"):
            if getattr(self, name) < 1:
                raise ValueError(f"AsymmetryConfig.{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.mass_tolerance < 1:
            raise ValueError(f"AsymmetryConfig.mass_tolerance={self.mass_tolerance} must lie in (0, 1)")
        if self.control_pool not in ("complement", "all"):
            raise ValueError(f"AsymmetryConfig.control_pool={self.control_pool!r} must be 'complement' or 'all'")
        for name in ("ce_context_len", "top_max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"AsymmetryConfig.{name}={getattr(self, name)} must be None or >= 2")


def asymmetry_config(scale: str, **overrides) -> AsymmetryConfig:
    """The chapter's budgets at a named scale; keyword overrides whose value is None are ignored."""
    check_scale(scale)
    base = {
        "smoke": AsymmetryConfig(control_draws=2, ce_control_draws=1, ce_context_len=12, marginal_per_bin=1,
                                 marginal_contexts=1, n_top=8, top_max_tokens=None, n_random=100, explain_per_bin=1),
        "default": AsymmetryConfig(),
        "gpu": AsymmetryConfig(control_draws=10, ce_control_draws=5, ce_seeds=5, marginal_per_bin=32,
                               marginal_contexts=4, top_max_tokens=None, interp_seeds=5, explain_per_bin=25),
        "paper": AsymmetryConfig(control_draws=20, ce_control_draws=10, ce_seeds=5, marginal_per_bin=64,
                                 marginal_contexts=8, top_max_tokens=None, interp_seeds=5, explain_per_bin=50),
    }[scale]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


ASYMMETRY_VERSION = 1
"""Bumped when a cached chapter-2 result would be computed differently."""


def asymmetry_key(study, entry, **params) -> dict:
    """Cache key of one chapter-2 step on a grid point: the grid point's own key (its SAEs and split) and `params`."""
    from saelib.chapters import grid

    return {"grid": grid.score_key(study, entry), "params": params, "version": ASYMMETRY_VERSION}


# --- Cuts and their random controls -----------------------------------------------------------------------------------


def size_matched_subset(size: int, candidates: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random subset `(F,)` bool of `size` latents among `candidates` `(F,)` bool."""
    pool = candidates.nonzero()[:, 0]
    if size > len(pool):
        raise ValueError(f"size={size} exceeds the {len(pool)} candidates")
    out = torch.zeros_like(candidates)
    out[pool[torch.randperm(len(pool), generator=generator)[:size]]] = True
    return out


def mass_matched_subset(mass: Tensor, target: float, candidates: Tensor, generator: torch.Generator, *,
                        tol: float = 0.05, max_tries: int = 20) -> Tensor:
    """A random subset `(F,)` bool of `candidates` whose total `mass` lies within `tol * target` of `target`.

    Randomised greedy: walk the candidates in a random order and take each one that does not push the running mass
    above `target * (1 + tol)`, until it reaches `target * (1 - tol)`; retry with a new order when a walk ends short.

    Args:
        mass: `(F,)` non-negative activation mass of each latent.
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


class FeatureCuts(NamedTuple):
    """The masks of the asymmetry experiments and what each one is."""

    masks: Tensor
    """`(M, S, d_sae)` bool, True for the latents kept."""
    table: pd.DataFrame
    """One row per mask: `cut` (name), `op` (keep / remove), `group` (stable / unstable / all / none), `control`
    (group / size / mass), `draw`, `pool` (where the control was drawn from, per seed), `n_latents` and
    `mass_share` (kept, mean over seeds)."""


def feature_cuts(label: Tensor, mass: Tensor, cfg: AsymmetryConfig | None = None) -> FeatureCuts:
    """Full and empty SAE; keep or remove the stable / unstable latents; and random controls for each of the four.

    A control of a group is a random set of alive latents of the same size, or of the same total activation mass
    (within `cfg.mass_tolerance`); "remove control" removes it, as "remove stable" removes the stable latents. Every
    seed draws its own controls. Labels are `saelib.stability` codes; dead latents are never drawn.

    Args:
        label: `(S, d_sae)` stability labels (`STABLE`, `INTERMEDIATE`, `UNSTABLE`, `DEAD`).
        mass: `(S, d_sae)` activation mass of each latent (`metrics.feature_activation_stats(...).mass`).
        cfg: draws, tolerance and pool.
    """
    from saelib.stability import DEAD, STABLE, UNSTABLE

    cfg = cfg or AsymmetryConfig()
    label, mass = label.cpu(), mass.double().cpu()
    S, F = label.shape
    gen = torch.Generator().manual_seed(cfg.seed)
    alive = label != DEAD
    rows: list[dict] = []
    masks: list[Tensor] = []

    def add(cut, op, group, control, draw, keep, pool="-"):
        masks.append(keep)
        share = (mass * keep).sum(-1) / mass.sum(-1).clamp_min(1e-30)
        rows.append({"cut": cut, "op": op, "group": group, "control": control, "draw": draw, "pool": pool,
                     "n_latents": float(keep.sum(-1).double().mean()), "mass_share": float(share.mean())})

    add("full SAE", "keep", "all", "group", 0, torch.ones(S, F, dtype=torch.bool))
    add("no latent", "keep", "none", "group", 0, torch.zeros(S, F, dtype=torch.bool))
    for name, code in (("stable", STABLE), ("unstable", UNSTABLE)):
        group = label == code
        add(f"keep {name}", "keep", name, "group", 0, group)
        add(f"remove {name}", "remove", name, "group", 0, ~group)
        for control in ("size", "mass"):
            for d in range(cfg.control_draws):
                subset, pools = torch.zeros(S, F, dtype=torch.bool), []
                for s in range(S):
                    pool = alive[s] & ~group[s] if cfg.control_pool == "complement" else alive[s]
                    try:
                        subset[s] = _draw_control(control, group[s], mass[s], pool, gen, cfg.mass_tolerance)
                        pools.append(cfg.control_pool)
                    except ValueError:  # the complement is too small or too light: draw from all alive latents
                        subset[s] = _draw_control(control, group[s], mass[s], alive[s], gen, cfg.mass_tolerance)
                        pools.append("all")
                pool = pools[0] if len(set(pools)) == 1 else "+".join(sorted(set(pools)))
                add(f"keep {control}-matched to {name}", "keep", name, control, d, subset, pool)
                add(f"remove {control}-matched to {name}", "remove", name, control, d, ~subset, pool)
    return FeatureCuts(torch.stack(masks), pd.DataFrame(rows))


def _draw_control(control: str, group: Tensor, mass: Tensor, pool: Tensor, gen: torch.Generator, tol: float):
    if control == "size":
        return size_matched_subset(int(group.sum()), pool, gen)
    return mass_matched_subset(mass, float(mass[group].sum()), pool, gen, tol=tol)


# --- Single-latent ablations ------------------------------------------------------------------------------------------


def firing_contexts(sae: SAE, x: Tensor, context: np.ndarray, features, seed: int = 0) -> dict[int, np.ndarray]:
    """The contexts in which each of `features` of seed `seed` fires at least once.

    Args:
        sae: the stack.
        x: activations `(N, d_in)` of a store split (`store.eval.load_all()`).
        context: `(N,)` context index of each row (`store.eval.metadata().context`).
        features: latent indices.
        seed: seed position.
    """
    feats = torch.as_tensor(list(features), dtype=torch.long)
    one = sae.select([seed])
    hits = []
    with torch.no_grad():
        for xb in x.split(4096):
            hits.append((one.encode(xb.to(one.W_dec.device, torch.float32))[0][:, feats.to(one.W_dec.device)] > 0)
                        .cpu())
    fired = torch.cat(hits).numpy()  # (N, n_features)
    return {int(f): np.unique(np.asarray(context)[fired[:, j]]) for j, f in enumerate(feats.tolist())}


def sample_per_bin(bins: np.ndarray, n_per_bin: int, rng: np.random.Generator,
                   eligible: np.ndarray | None = None) -> dict:
    """Up to `n_per_bin` random indices for every distinct value of `bins` `(F,)` (NaN bins and ineligible left out)."""
    bins = np.asarray(bins, dtype=float)
    ok = ~np.isnan(bins) if eligible is None else (~np.isnan(bins) & np.asarray(eligible, dtype=bool))
    out = {}
    for b in np.unique(bins[ok]):
        idx = np.flatnonzero(ok & (bins == b))
        out[float(b)] = np.sort(rng.choice(idx, size=min(n_per_bin, len(idx)), replace=False))
    return out


def _choose_contexts(firing: dict[int, np.ndarray], n: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Up to n firing contexts per latent, preferring contexts already chosen for another one (fewer clean passes)."""
    chosen: dict[int, list[int]] = {}
    used: set[int] = set()
    for f, ctxs in firing.items():
        ctxs = rng.permutation(np.asarray(ctxs, dtype=int))
        shared = [c for c in ctxs if c in used][:n]
        pick = shared + [c for c in ctxs if c not in shared][: n - len(shared)]
        chosen[f] = [int(c) for c in pick]
        used.update(chosen[f])
    return chosen


@torch.inference_mode()
def feature_ablation_effects(lm, contexts, sae: SAE, firing: dict[int, np.ndarray], *, layer: int,
                             hook: str = "resid_post", seed: int = 0, n_contexts: int = 2, batch_size: int = 2,
                             rng_seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Marginal effect of single latents: the loss change when one latent's contribution is removed from the model.

    For latent f of seed `seed` the activation at every real position becomes `x - z_f(x) d_f` (the SAE's error and
    every other latent are kept), on up to `n_contexts` contexts in which f fires; since the model is causal and f
    is silent elsewhere, other contexts are unchanged. Each context's clean pass runs once, shared by the latents
    ablated in it.

    Args:
        lm: the language model.
        contexts: `(N, T)` token ids (`store.eval.contexts()`).
        sae: the stack.
        firing: latent -> contexts where it fires (`firing_contexts`); latents with none get zero effect.
        layer, hook: where the SAE reads the model.
        seed: seed position of the latents.
        n_contexts: contexts per latent.
        batch_size: rows (one context with one latent ablated, or clean) per forward pass.
        rng_seed: seed of the context choice.
        progress: show a tqdm bar.

    Returns:
        One row per latent: `feature`, `n_contexts`, `n_firing` (tokens where it fires in them), `n_tokens`
        (predicted tokens in them), `delta_loss_sum` and `kl_sum` (summed over those tokens), and
        `delta_loss_per_firing` (`delta_loss_sum / n_firing`, NaN when it never fires).
    """
    from tqdm.auto import tqdm

    from saelib.lm.activations import valid_positions

    lm.check_layer(layer, hook)
    ctx = torch.as_tensor(np.asarray(contexts), dtype=torch.long)
    valid = torch.from_numpy(valid_positions(ctx.numpy(), lm.pad_id))
    one = sae.select([seed]).to(lm.device)
    chosen = _choose_contexts(firing, n_contexts, np.random.default_rng(rng_seed))
    by_ctx: dict[int, list[int]] = {}
    for f, cs in chosen.items():
        for c in cs:
            by_ctx.setdefault(c, []).append(f)
    acc = {f: np.zeros(5) for f in firing}  # n_contexts, n_firing, n_tokens, delta_sum, kl_sum
    for c, feats in tqdm(sorted(by_ctx.items()), desc="ablations", disable=not progress, leave=False):
        mask = valid[c].to(lm.device)  # (T,)
        tmask = mask[1:]
        ids = ctx[c : c + 1].to(lm.device)
        store: dict[str, Tensor] = {}

        def capture(act: Tensor, store=store, mask=mask) -> Tensor:
            store["z"] = one.encode(act[0][mask].float())[0]  # (n_real, d_sae)
            return act

        clean = torch.log_softmax(lm.logits(ids, layer, hook, edit=capture)[0, :-1][tmask].float(), -1)  # (n, V)
        targets = ids[0, 1:][tmask]
        clean_ce = -clean.gather(1, targets[:, None])[:, 0]
        z = store["z"]
        for b0 in range(0, len(feats), batch_size):
            fb = feats[b0 : b0 + batch_size]
            delta = z[:, fb].T[:, :, None] * one.W_dec[0, fb][:, None, :]  # (b, n_real, d_in)

            def ablate(act: Tensor, delta=delta, mask=mask) -> Tensor:
                act = act.clone()
                act[:, mask] -= delta.to(act.dtype)
                return act

            logp = torch.log_softmax(lm.logits(ids.expand(len(fb), -1), layer, hook, edit=ablate)[:, :-1][:, tmask]
                                     .float(), -1)  # (b, n, V)
            ce = -logp.gather(2, targets[None, :, None].expand(len(fb), -1, 1))[..., 0]  # (b, n)
            kl = (clean.exp()[None] * (clean[None] - logp)).sum(-1)  # (b, n)
            for j, f in enumerate(fb):
                acc[f] += [1, float((z[:, f] > 0).sum()), len(targets), float((ce[j] - clean_ce).double().sum()),
                           float(kl[j].double().sum())]
            del logp
    df = pd.DataFrame([[f, *v] for f, v in acc.items()],
                      columns=["feature", "n_contexts", "n_firing", "n_tokens", "delta_loss_sum", "kl_sum"])
    df = df.astype({"feature": int, "n_contexts": int, "n_firing": int, "n_tokens": int})
    df["delta_loss_per_firing"] = df.delta_loss_sum / df.n_firing.where(df.n_firing > 0)
    return df


# --- The chapter's numbers and verdicts -------------------------------------------------------------------------------

CUT_METRICS = ("ev", "ce_loss_score", "delta_loss", "kl_div")
"""Columns of a cut table that `asymmetry_summary` reads (when present)."""


def cut_summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`metric` per (op, group) for the group itself and the mean (and std) of its size- and mass-matched controls."""
    t = table[table.group.isin(["stable", "unstable"])]
    mean = t.pivot_table(index=["op", "group"], columns="control", values=metric, aggfunc="mean")
    std = t[t.control != "group"].pivot_table(index=["op", "group"], columns="control", values=metric, aggfunc="std")
    out = mean.reindex(columns=["group", "size", "mass"])
    for c in ("size", "mass"):
        out[f"{c} (std)"] = std[c] if c in std else np.nan
    return out


def asymmetry_summary(cuts: pd.DataFrame, latents: pd.DataFrame, marginal: pd.DataFrame | None = None,
                      triggers: pd.DataFrame | None = None, explanations: pd.DataFrame | None = None) -> dict:
    """The chapter's headline numbers as a flat dict (for `myst_nb.glue` and `asymmetry_claims`).

    Args:
        cuts: `feature_cuts(...).table` with any of `CUT_METRICS` added (means over seeds).
        latents: one row per alive latent: `label`, `frequency`, `mean_activation`, `max_activation`, `mass_share`.
        marginal: one row per ablated latent: `label`, `delta_loss_per_token`, `delta_loss_per_firing`.
        triggers: one row per latent with statistics: `label`, `top_share`, `entropy_bits`.
        explanations: one row per explained latent: `label`, `explanation`, `surface_form`, `balanced_accuracy`.
    """
    out: dict = {}
    for metric in CUT_METRICS:
        if metric not in cuts:
            continue
        for cut, v in cuts[cuts.control == "group"].groupby("cut")[metric].mean().items():
            out[f"{metric}_{cut.replace(' ', '_').replace('_SAE', '').replace('no_latent', 'none')}"] = float(v)
        ctrl = cuts[cuts.control != "group"].groupby(["op", "control", "group"])[metric].mean()
        for (op, control, group), v in ctrl.items():
            out[f"{metric}_{op}_{control}_{group}"] = float(v)
    for name in ("stable", "unstable"):
        row = cuts[(cuts.cut == f"keep {name}")]
        if len(row):
            out[f"mass_share_{name}"] = float(row.mass_share.iloc[0])
        lat = latents[latents.label == name]
        out[f"share_{name}"] = len(lat) / max(len(latents), 1)
        for col in ("frequency", "mean_activation", "max_activation", "mass_share"):
            if col in lat:
                out[f"{col}_median_{name}"] = float(lat[col].median())
        if marginal is not None:
            m = marginal[marginal.label == name]
            out[f"marginal_per_token_{name}"] = float(m.delta_loss_per_token.mean())
            out[f"marginal_per_firing_{name}"] = float(m.delta_loss_per_firing.mean())
            out[f"marginal_n_{name}"] = len(m)
        if triggers is not None:
            t = triggers[(triggers.label == name)].dropna(subset=["top_share"])
            out[f"top_share_{name}"] = float(t.top_share.mean())
            out[f"entropy_{name}"] = float(t.entropy_bits.mean())
            out[f"trigger_n_{name}"] = len(t)
        if explanations is not None:
            e = explanations[explanations.label == name]
            out[f"detection_{name}"] = float(e.balanced_accuracy.astype(float).mean())
            tagged = e.surface_form.dropna().astype(float)
            out[f"surface_share_{name}"] = float(tagged.mean()) if len(tagged) else np.nan
            out[f"explained_n_{name}"] = len(e.dropna(subset=["explanation"]))
    return out


def asymmetry_claims(summary: dict) -> pd.DataFrame:
    """Each part of claim 2 (PAPER.md), the number that tests it for stable and unstable latents, the criterion and
    whether it holds in this run (`holds`: "yes", "no", or "not measured" for a part with a NaN number, e.g. the
    explainer when no endpoint is configured, or whose stable or unstable group is empty: `share_*` of 0)."""
    g = summary.get
    nan = np.nan
    empty = {name: g(f"share_{name}", 1.0) == 0 for name in ("stable", "unstable")}

    def row(claim, measure, stable, unstable, criterion, holds):
        stable, unstable = (nan if empty["stable"] else stable), (nan if empty["unstable"] else unstable)
        measured = bool(np.isfinite([stable, unstable]).all())
        return (claim, measure, stable, unstable, criterion, ("yes" if holds else "no") if measured else "not measured")

    rows = [
        row("stable latents carry more of the reconstruction", "EV keeping only the group",
            g("ev_keep_stable", nan), g("ev_keep_unstable", nan), "stable > unstable",
            g("ev_keep_stable", nan) > g("ev_keep_unstable", nan)),
        row("... more than their activation mass explains", "EV keeping the group minus its mass-matched control",
            g("ev_keep_stable", nan) - g("ev_keep_mass_stable", nan),
            g("ev_keep_unstable", nan) - g("ev_keep_mass_unstable", nan), "stable > unstable",
            g("ev_keep_stable", nan) - g("ev_keep_mass_stable", nan)
            > g("ev_keep_unstable", nan) - g("ev_keep_mass_unstable", nan)),
        row("removing stable latents hurts reconstruction more", "EV lost when the group is removed",
            g("ev_full", nan) - g("ev_remove_stable", nan), g("ev_full", nan) - g("ev_remove_unstable", nan),
            "stable > unstable", g("ev_remove_stable", nan) < g("ev_remove_unstable", nan)),
        row("stable latents carry more of the prediction signal", "CE score keeping only the group",
            g("ce_loss_score_keep_stable", nan), g("ce_loss_score_keep_unstable", nan), "stable > unstable",
            g("ce_loss_score_keep_stable", nan) > g("ce_loss_score_keep_unstable", nan)),
        row("... more than their activation mass explains", "CE score keeping the group minus its mass-matched control",
            g("ce_loss_score_keep_stable", nan) - g("ce_loss_score_keep_mass_stable", nan),
            g("ce_loss_score_keep_unstable", nan) - g("ce_loss_score_keep_mass_unstable", nan), "stable > unstable",
            g("ce_loss_score_keep_stable", nan) - g("ce_loss_score_keep_mass_stable", nan)
            > g("ce_loss_score_keep_unstable", nan) - g("ce_loss_score_keep_mass_unstable", nan)),
        row("unstable latents have weak marginal impact", "mean loss increase per token when one latent is ablated",
            g("marginal_per_token_stable", nan), g("marginal_per_token_unstable", nan), "unstable < stable",
            g("marginal_per_token_unstable", nan) < g("marginal_per_token_stable", nan)),
        row("unstable latents are low-frequency", "median firing frequency", g("frequency_median_stable", nan),
            g("frequency_median_unstable", nan), "unstable < stable",
            g("frequency_median_unstable", nan) < g("frequency_median_stable", nan)),
        row("unstable latents are dominated by surface-form triggers", "mean share of top activations on one token",
            g("top_share_stable", nan), g("top_share_unstable", nan), "unstable > stable",
            g("top_share_unstable", nan) > g("top_share_stable", nan)),
        row("... also in automatic explanations", "share of explanations tagged as a surface form (TOKEN:)",
            g("surface_share_stable", nan), g("surface_share_unstable", nan), "unstable > stable",
            g("surface_share_unstable", nan) > g("surface_share_stable", nan)),
    ]
    return pd.DataFrame(rows, columns=["claim", "measured as", "stable", "unstable", "criterion", "holds"])
