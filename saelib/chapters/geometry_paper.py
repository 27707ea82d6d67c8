"""Chapter 3, the paper's own geometry analyses on the reference SAEs (issue 14, items 4 and 5; arXiv 2606.12138 as
reported by a secondary source's reading of its body):

- **Transfer of the top singular subspace** (`transfer_table`): for seed s's unstable latents, the top-r right
  singular subspace of their decoder rows; the share of seed t's unstable decoder energy it captures, for every r,
  beside size-matched random alive latents, a random r-dimensional subspace (`r / d` expected) and seed t's own top-r
  subspace (the most any r-dimensional subspace can capture: the ceiling). `saelib.subspace.group_transfer`.
- **Predicting stability from one seed** (`prediction_table`): a logistic regression trained on the anchor's
  latents (its decoder vectors; separately, cheap statistics: log frequency, mean activation, encoder-row norm)
  against its endpoint labels, scored by F1 on every other seed's latents and labels, beside the frequency-only and
  majority baselines. `saelib.predict`.

`paper_tables` computes both, cached through `cache.cached_result`; `saelib.chapters.geometry`'s `run`, `summary`
and `claims` call `paper_tables`, `summary` and `claims` here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import pandas as pd
from scipy.stats import binomtest
from torch import Tensor

from saelib.cache import cached_result
from saelib.chapters.common import NOT_REPORTED, Claim, claim
from saelib.config import check_positive
from saelib.predict import latent_features, predict_stability
from saelib.stability import DEAD, STABLE, UNSTABLE
from saelib.subspace import group_transfer, ordered_basis, single_threaded, top_subspace_transfer

VERSION = 2
"""Bumped when `paper_tables`' computation or stored format changes (it is in its cache key)."""

SIGN_TEST_ALPHA = 0.05
"""The transfer's verdict needs the unstable latents above the random latents in more seed pairs than chance
allows: a one-sided sign test over the pairs at this level (`summary`'s `transfer_sign_p`)."""

PAIRS = ("anchor", "all")
"""Seed pairs of the transfer: the anchor to every other seed, or every ordered pair of distinct seeds."""


@dataclass(frozen=True)
class PaperConfig:
    """How chapter 3 runs the paper's transfer and prediction analyses on the reference SAEs."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    """Ranks r of the top singular subspace (those above a group's span or above d are left out)."""
    pairs: str = "anchor"
    """`anchor`: the anchor seed's subspace against every other seed (N pairs); `all`: every ordered pair."""
    n_draws: int = 20
    """Draws of each random control of the transfer, per pair."""
    seed: int = 0
    """Seed of the controls' draws."""
    C: float = 1.0
    """Inverse L2 regularisation strength of the logistic regressions."""
    class_weight: str | None = "balanced"
    """`balanced` weighs stable and unstable latents by their inverse frequency; None weighs latents equally."""

    def __post_init__(self) -> None:
        if not self.ranks or any(not isinstance(r, int) or r < 1 for r in self.ranks):
            raise ValueError(f"PaperConfig.ranks={self.ranks!r} must be non-empty positive integers")
        if self.pairs not in PAIRS:
            raise ValueError(f"PaperConfig.pairs={self.pairs!r} must be one of {', '.join(PAIRS)}")
        check_positive("PaperConfig", n_draws=self.n_draws, C=self.C)
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"PaperConfig.class_weight={self.class_weight!r} must be None or 'balanced'")


class PaperResult(NamedTuple):
    """`paper_tables`' result."""

    transfer: pd.DataFrame
    """One row per (source, target, r): `transfer` (share of the target's unstable decoder energy in the source's
    top-r unstable subspace), `random_latents` (random in both seeds), `random_source` (as many random latents of s
    into t's unstable latents), `random_subspace` (control means), `ceiling` (the target's own top-r
    share), `expected_random` (`r / d`), `n_source`, `n_target`."""
    prediction: pd.DataFrame
    """One row per (positive class, model, test seed), `predict.predict_stability`'s columns plus `positive`
    (`unstable` or `stable`); empty when the anchor lacks stable or unstable latents."""
    anchor: int
    """The seed trained on, and the source of the `anchor` pairs."""
    d_in: int
    """Width of the decoder rows."""


TRANSFER_COLUMNS = [
    "source",
    "target",
    "r",
    "transfer",
    "random_latents",
    "random_source",
    "random_subspace",
    "ceiling",
    "expected_random",
    "n_source",
    "n_target",
]
PREDICTION_COLUMNS = [
    "positive",
    "model",
    "train_seed",
    "test_seed",
    "f1",
    "macro_f1",
    "accuracy",
    "n_train",
    "n_test",
    "positive_share",
]


def empty_result(d_in: int, anchor: int = 0) -> PaperResult:
    """A `PaperResult` with nothing measured (its summary is NaN, its claims "not measured")."""
    return PaperResult(pd.DataFrame(columns=TRANSFER_COLUMNS), pd.DataFrame(columns=PREDICTION_COLUMNS), anchor, d_in)


def seed_pairs(n_seeds: int, anchor: int, pairs: str = "anchor") -> list[tuple[int, int]]:
    """Ordered `(source, target)` seed pairs: `anchor` -> every other seed, or every ordered pair (`all`)."""
    if pairs not in PAIRS:
        raise ValueError(f"pairs={pairs!r} must be one of {', '.join(PAIRS)}")
    if not 0 <= anchor < n_seeds:
        raise ValueError(f"anchor={anchor} must lie in [0, {n_seeds})")
    if pairs == "anchor":
        return [(anchor, t) for t in range(n_seeds) if t != anchor]
    return [(s, t) for s in range(n_seeds) for t in range(n_seeds) if s != t]


@single_threaded
def transfer_table(
    directions: Tensor, label: Tensor, cfg: PaperConfig | None = None, *, anchor: int = 0
) -> pd.DataFrame:
    """Cross-seed transfer of the unstable latents' top singular subspace, with its controls and ceiling.

    Args:
        directions: `(S, d_sae, d)` decoder rows.
        label: `(S, d_sae)` stability labels (`saelib.stability` codes); the random-latents control draws the alive
            (non-`DEAD`) latents.
        cfg: ranks, pairs and draws.
        anchor: the source seed of the `anchor` pairs.

    Returns:
        `PaperResult.transfer` (no row for a pair whose source or target has no unstable latent).
    """
    cfg = cfg or PaperConfig()
    if label.shape != directions.shape[:2]:
        raise ValueError(f"label shape {tuple(label.shape)} must match directions {tuple(directions.shape[:2])}")
    directions, label = directions.detach().float().cpu(), label.cpu()
    d = directions.shape[-1]
    ranks = [r for r in cfg.ranks if r <= d]
    group, alive = label == UNSTABLE, label != DEAD
    pairs = seed_pairs(len(directions), anchor, cfg.pairs)
    rows = pd.DataFrame(
        group_transfer(directions, group, alive, ranks, pairs=pairs, n_draws=cfg.n_draws, seed=cfg.seed),
        columns=["source", "target", "r", "transfer", "random_latents", "random_source", "random_subspace"],
    )
    ceiling = {}  # the target's own top-r share: the best any r-dimensional subspace can do for it
    for t in sorted(set(rows.target)):
        own = directions[t][group[t]]
        rs = sorted(r for r in set(rows.r[rows.target == t]) if r <= len(ordered_basis(own)[1]))
        if rs:  # beyond the span's rank the target's own subspace holds all of its energy: ceiling 1
            ceiling |= {(t, r): float(v) for r, v in zip(rs, top_subspace_transfer(own, own, rs), strict=True)}
    n = group.sum(1)
    rows["ceiling"] = [ceiling.get((t, r), 1.0) for t, r in zip(rows.target, rows.r, strict=True)]
    rows["expected_random"] = rows.r / d
    rows["n_source"] = [int(n[s]) for s in rows.source]
    rows["n_target"] = [int(n[t]) for t in rows.target]
    return rows[TRANSFER_COLUMNS]


def prediction_table(
    features: dict[str, Tensor], label: Tensor, cfg: PaperConfig | None = None, *, anchor: int = 0
) -> pd.DataFrame:
    """`predict.predict_stability` trained on the `anchor` seed and scored on every other seed, with each class in
    turn the positive one (the paper does not say which class its F1 counts).

    Args:
        features: name -> `(S, d_sae, p)` (`predict.latent_features`).
        label: `(S, d_sae)` endpoint labels of every seed (each seed its own anchor, as the grid's split holds them).
        cfg: the regularisation and class weights.
        anchor: the seed trained on.

    Returns:
        `PaperResult.prediction` (empty when the anchor lacks stable or unstable latents: nothing to train on).
    """
    cfg = cfg or PaperConfig()
    label = label.cpu()
    if not 0 <= anchor < len(label):
        raise ValueError(f"anchor={anchor} must lie in [0, {len(label)})")
    if not ((label[anchor] == STABLE).any() and (label[anchor] == UNSTABLE).any()):
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    frames = []
    for name, code in (("unstable", UNSTABLE), ("stable", STABLE)):
        rows = predict_stability(
            features, label, train_seed=anchor, positive=code, C=cfg.C, class_weight=cfg.class_weight
        )
        frames.append(pd.DataFrame(rows).assign(positive=name))
    return pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS]


def analyze(
    directions: Tensor,
    label: Tensor,
    frequency: Tensor,
    mean_activation: Tensor,
    encoder_norm: Tensor,
    cfg: PaperConfig | None = None,
    *,
    anchor: int = 0,
) -> PaperResult:
    """Both analyses of one stack of seeds (uncached; `paper_tables` caches it).

    Args:
        directions: `(S, d_sae, d)` decoder rows.
        label: `(S, d_sae)` endpoint labels of every seed.
        frequency, mean_activation: `(S, d_sae)` firing rate and mean activation where firing (the grid's split).
        encoder_norm: `(S, d_sae)` norm of each latent's encoder row.
        cfg: the analyses' parameters.
        anchor: the seed trained on and transferred from.
    """
    cfg = cfg or PaperConfig()
    features = latent_features(directions, frequency, mean_activation, encoder_norm)
    return PaperResult(
        transfer_table(directions, label, cfg, anchor=anchor),
        prediction_table(features, label, cfg, anchor=anchor),
        anchor,
        int(directions.shape[-1]),
    )


def paper_tables(
    directions: Tensor,
    label: Tensor,
    frequency: Tensor,
    mean_activation: Tensor,
    encoder_norm: Tensor,
    cfg: PaperConfig | None = None,
    *,
    anchor: int = 0,
    name: str | None = None,
) -> PaperResult:
    """`analyze`, cached under `geometry/<name>-paper-<hash>` when `name` is given (the hash covers the inputs'
    bytes, `cfg`, `anchor` and `VERSION`); None computes without caching."""
    cfg = cfg or PaperConfig()
    inputs = [t.detach().float().cpu().contiguous() for t in (directions, frequency, mean_activation, encoder_norm)]
    label = label.cpu()
    compute = partial(analyze, inputs[0], label, *inputs[1:], cfg, anchor=anchor)
    if name is None:
        return compute()
    digest = hashlib.sha256()
    for t in (*inputs, label.contiguous()):
        digest.update(t.numpy().tobytes())
    key = {"inputs": digest.hexdigest(), "paper": cfg, "anchor": anchor, "version": VERSION}
    return cached_result("geometry", f"{name}-paper", key, compute)


# --- The tables the chapter shows -----------------------------------------------------------------------------------

CURVES = {
    "transfer": "unstable latents",
    "random_latents": "random alive latents",
    "random_source": "random alive latents into the unstable target",
    "random_subspace": "random subspace",
    "ceiling": "target's own top-r (ceiling)",
}
"""The curves of the transfer figure and table: column of `PaperResult.transfer` -> its name."""

MODELS = {
    "decoder": "decoder vector",
    "stats": "frequency, mean activation, encoder norm",
    "frequency": "frequency only (baseline)",
    "majority": "majority class (baseline)",
}
"""The classifiers of the prediction table: `model` of `PaperResult.prediction` -> its name."""


def transfer_by_rank(transfer: pd.DataFrame) -> pd.DataFrame:
    """One row per r: the mean over seed pairs of each curve of `CURVES` (named columns), the unstable transfer's
    min and max over pairs, `r / d` and the number of pairs."""
    cols = list(CURVES) + ["expected_random"]
    if transfer.empty:
        return pd.DataFrame(columns=[*CURVES.values(), "unstable min", "unstable max", "r / d", "pairs"])
    g = transfer.groupby("r")
    out = g[cols].mean().rename(columns=CURVES | {"expected_random": "r / d"})
    out.insert(1, "unstable min", g.transfer.min())
    out.insert(2, "unstable max", g.transfer.max())
    out["pairs"] = g.size()
    return out


def prediction_by_model(prediction: pd.DataFrame) -> pd.DataFrame:
    """One row per classifier (`MODELS` order and names): the mean over test seeds of the F1 with unstable and with
    stable latents as the positive class, the unstable F1's min and max over test seeds, macro F1 and accuracy."""
    cols = ["F1 (unstable)", "F1 unstable min", "F1 unstable max", "F1 (stable)", "macro F1", "accuracy", "n_test"]
    if prediction.empty:
        return pd.DataFrame(columns=cols)
    u = prediction[prediction.positive == "unstable"].groupby("model")
    s = prediction[prediction.positive == "stable"].groupby("model")
    out = pd.DataFrame(
        {
            "F1 (unstable)": u.f1.mean(),
            "F1 unstable min": u.f1.min(),
            "F1 unstable max": u.f1.max(),
            "F1 (stable)": s.f1.mean(),
            "macro F1": u.macro_f1.mean(),
            "accuracy": u.accuracy.mean(),
            "n_test": u.n_test.mean(),
        }
    )
    return out.reindex([m for m in MODELS if m in out.index]).rename(index=MODELS)


# --- Summary and claims -----------------------------------------------------------------------------------------------


def headline_rank(transfer: pd.DataFrame, target: float) -> int:
    """The rank evaluated in `transfer` nearest `target` (the smaller on a tie); 0 when there is none."""
    ranks = sorted(set(transfer.r)) if not transfer.empty else []
    return min(ranks, key=lambda r: (abs(r - target), r)) if ranks else 0


def summary(result: PaperResult, fraction: float = 1 / 20) -> dict[str, float | int | str]:
    """The numbers the chapter glues (plain Python values; NaN where nothing was measured).

    Keys: `transfer_r` (the headline rank, the one evaluated nearest `fraction * d`), `transfer_pairs`, and at that
    rank the means over pairs `transfer_unstable`, `transfer_latents`, `transfer_subspace`, `transfer_ceiling`,
    `transfer_expected` (`r / d`), `transfer_relative` (unstable over ceiling), `transfer_min`, `transfer_max`,
    `transfer_n_beat` (pairs where the unstable transfer beats the random latents'), `transfer_sign_p`
    (`sign_test` of those pairs); `predict_anchor`,
    `predict_n_train`, `predict_n_test` (mean), `predict_unstable_share` (mean share of unstable latents among a test
    seed's endpoint latents); per classifier m in `MODELS`, `f1_<m>` (unstable positive), `f1_stable_<m>`,
    `macro_f1_<m>` (means over test seeds), and `f1_decoder_min`, `f1_decoder_max`; the prose's words (`_words`).
    """
    tr, pr = result.transfer, result.prediction
    r = headline_rank(tr, fraction * result.d_in)
    at = tr[tr.r == r]
    out: dict[str, float | int | str] = {
        "transfer_r": int(r),
        "transfer_pairs": int(len(at)),
        "transfer_unstable": _stat(at, "transfer"),
        "transfer_latents": _stat(at, "random_latents"),
        "transfer_source": _stat(at, "random_source"),
        "transfer_n_beat_source": int((at.transfer > at.random_source).sum()),
        "transfer_source_sign_p": sign_test(int((at.transfer > at.random_source).sum()), len(at)),
        "transfer_subspace": _stat(at, "random_subspace"),
        "transfer_ceiling": _stat(at, "ceiling"),
        "transfer_expected": _stat(at, "expected_random"),
        "transfer_relative": _stat(at.assign(relative=at.transfer / at.ceiling), "relative"),
        "transfer_min": _stat(at, "transfer", "min"),
        "transfer_max": _stat(at, "transfer", "max"),
        "transfer_n_beat": int((at.transfer > at.random_latents).sum()),
        "transfer_sign_p": sign_test(int((at.transfer > at.random_latents).sum()), len(at)),
        "predict_anchor": int(result.anchor),
    }
    unstable, stable = (pr[pr.positive == p] if len(pr) else pr for p in ("unstable", "stable"))
    out |= {
        "predict_n_train": int(unstable.n_train.iloc[0]) if len(unstable) else 0,
        "predict_n_test": _stat(unstable, "n_test"),
        "predict_unstable_share": _stat(unstable, "positive_share"),
    }
    for m in MODELS:
        u, st = unstable[unstable.model == m], stable[stable.model == m]
        out |= {f"f1_{m}": _stat(u, "f1"), f"f1_stable_{m}": _stat(st, "f1"), f"macro_f1_{m}": _stat(u, "macro_f1")}
    decoder = unstable[unstable.model == "decoder"]
    out |= {"f1_decoder_min": _stat(decoder, "f1", "min"), "f1_decoder_max": _stat(decoder, "f1", "max")}
    return out | _words(out)


REPORTED_F1 = (0.67, 0.73)
"""The paper's F1 range for the decoder-vector classifier (reported, secondary source)."""


def _words(s: dict) -> dict[str, str]:
    """The prose's computed comparisons: `cmp_transfer_latents`, `cmp_transfer_source`, `cmp_f1_frequency` (`above` /
    `below`, or `not comparable here`), `cmp_f1_reported` (`inside`, `below` or `above` the reported range) and
    `f1_sentence`."""
    missing = "not comparable here"

    def word(a: float, b: float) -> str:
        return missing if math.isnan(a) or math.isnan(b) else ("above" if a > b else "below")

    f1, freq = s["f1_decoder"], s["f1_frequency"]
    lo, hi = REPORTED_F1
    reported = missing if math.isnan(f1) else "below" if f1 < lo else "above" if f1 > hi else "inside"
    if math.isnan(f1) or math.isnan(freq):
        sentence = "At this scale there is nothing to compare: the anchor lacks stable or unstable latents."
    elif f1 > freq:
        sentence = "The decoder direction carries information about stability beyond how often a latent fires."
    else:
        sentence = (
            "The decoder direction adds nothing measurable here beyond how often a latent fires: the frequency "
            "alone does as well or better."
        )
    return {
        "cmp_transfer_latents": word(s["transfer_unstable"], s["transfer_latents"]),
        "cmp_transfer_source": word(s["transfer_unstable"], s["transfer_source"]),
        "cmp_f1_frequency": word(f1, freq),
        "cmp_f1_reported": reported,
        "f1_sentence": sentence,
    }


def sign_test(wins: int, n: int) -> float:
    """One-sided sign test: the chance of at least `wins` of `n` pairs coming out above if each were a coin flip
    (NaN when `n` is 0)."""
    if n == 0:
        return math.nan
    return float(binomtest(wins, n, 0.5, alternative="greater").pvalue)


def _stat(df: pd.DataFrame, col: str, how: str = "mean") -> float:
    """`df[col].<how>()` as a float, NaN for an empty frame."""
    return float(getattr(df[col], how)()) if len(df) else math.nan


def _get(s: dict, key: str) -> float:
    return float(s.get(key, math.nan))


def _beats(ours: float, *others: float) -> bool | None:
    """Whether `ours` is above every one of `others` (None when any is NaN)."""
    if any(math.isnan(x) for x in (ours, *others)):
        return None
    return all(ours > x for x in others)


def claims(summary: dict[str, float | int | str]) -> list[Claim]:
    """The verdict rows of the two analyses, from `summary`'s keys: the transfer (unstable above random latents
    above a random subspace, at the headline rank) and the prediction (F1 of the unstable class, trained on the
    anchor: decoder vectors, then cheap statistics, each above the frequency-only and majority baselines)."""
    from saelib.chapters.geometry import PAPER_TRANSFER, SECONDARY  # geometry imports this module

    s = summary
    r, n, beat = (int(s.get(k, 0)) for k in ("transfer_r", "transfer_pairs", "transfer_n_beat"))
    a, b, c, p = (_get(s, k) for k in ("transfer_unstable", "transfer_latents", "transfer_subspace", "transfer_sign_p"))
    holds = None if any(math.isnan(x) for x in (a, b, c, p)) else a > b > c and p < SIGN_TEST_ALPHA
    rows = [
        claim(
            "Unstable latents span a reproducible low-rank subspace: the top singular subspace of one seed's "
            "unstable latents transfers to other seeds",
            f"share of seed t's unstable decoder energy in the top-{r} singular subspace of seed s's unstable "
            f"latents (mean over {n} seed pairs): unstable above size-matched random alive latents, above a random "
            f"{r}-dimensional subspace; and unstable above random latents in more pairs than chance allows "
            f"(one-sided sign test, p < {SIGN_TEST_ALPHA:g})",
            f"{a:.3f} vs {b:.3f} vs {c:.3f}; above in {beat} of {n} pairs (p = {p:.2g})",
            holds,
            PAPER_TRANSFER,
        )
    ]
    src, beat_src, p_src = (
        _get(s, "transfer_source"),
        int(s.get("transfer_n_beat_source", 0)),
        _get(s, "transfer_source_sign_p"),
    )
    rows.append(
        claim(
            "... and captures more of the other seed's unstable energy than as many random alive latents do",
            f"the same share at r = {r}, the same target (seed t's unstable latents): seed s's unstable latents above "
            f"as many random alive latents of seed s (mean over {n} pairs), and above in more pairs than chance "
            f"allows (one-sided sign test, p < {SIGN_TEST_ALPHA:g})",
            f"{a:.3f} vs {src:.3f}; above in {beat_src} of {n} pairs (p = {p_src:.2g})",
            None if any(math.isnan(x) for x in (a, src, p_src)) else a > src and p_src < SIGN_TEST_ALPHA,
        )
    )
    freq, major = _get(s, "f1_frequency"), _get(s, "f1_majority")
    anchor = int(s.get("predict_anchor", 0))
    paper_f1 = f"F1 about 0.67-0.73, positive class not stated {SECONDARY}"
    for m, text, paper in (
        (
            "decoder",
            "A logistic regression on one seed's decoder vectors predicts other seeds' stability labels",
            paper_f1,
        ),
        (
            "stats",
            "... and so does one on cheap per-latent statistics (frequency, mean activation, encoder norm)",
            NOT_REPORTED,
        ),
    ):
        ours = _get(s, f"f1_{m}")
        rows.append(
            claim(
                text,
                f"F1 of the unstable class on the other seeds' latents, trained on seed {anchor}: above the "
                "frequency-only and the majority baselines",
                f"{ours:.3f} vs {freq:.3f} (frequency) vs {major:.3f} (majority)",
                _beats(ours, freq, major),
                paper,
            )
        )
    return rows
