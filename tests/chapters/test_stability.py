import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from saelib import stability as st
from saelib.chapters import common, grid
from saelib.chapters import stability as chapter
from saelib.chapters.grid import FeatureSplit, GridEntry
from saelib.config import SAEConfig, StabilityConfig
from saelib.plots.stability import plot_stability_distribution
from saelib.plots.theme import NULL_KIND, plot_stability_hist
from saelib.sae import SAE


def test_threshold_sweep_is_monotone_and_agrees_with_feature_stability():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, k=4, n_seeds=4, seed=1))  # 32 random directions in 8-d: many near matches
    cfg = StabilityConfig(threshold=0.6)
    fs = st.feature_stability(sae, cfg)
    df = chapter.threshold_sweep(fs.max_cos, [0.3, 0.6, 0.9], cfg)
    assert df.mean_stability.is_monotonic_decreasing and df.unstable_share.is_monotonic_increasing
    assert df.mean_stability[1] == pytest.approx(float(fs.stability.mean()))
    assert df.stable_share[1] == pytest.approx(float((fs.label == st.STABLE).float().mean()))


def test_reference_seed_sweep_all_references_reproduce_the_full_estimate():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, k=4, n_seeds=4, seed=2))
    cfg = StabilityConfig(threshold=0.6)
    fs = st.feature_stability(sae, cfg)
    df = chapter.reference_seed_sweep(fs.max_cos, cfg, n_draws=3)
    assert list(df.n_reference) == [1, 2, 3]
    last = df.iloc[-1]
    assert last.label_agreement == 1.0 and last.mean_stability == pytest.approx(float(fs.stability.mean()))
    # With one reference seed, stability is 0 or 1: the expected value is unchanged, labels are coarser.
    assert df.mean_stability[0] == pytest.approx(float(fs.stability.mean()), abs=0.1)
    assert df.stable_share[0] + df.unstable_share[0] == pytest.approx(1.0)


def test_bimodality_known_shapes():
    two_peaks = torch.tensor([0.0] * 50 + [1.0] * 50)
    flat = torch.linspace(0, 1, 101)
    b = chapter.bimodality(two_peaks)
    assert b["share_zero"] == 0.5 and b["share_one"] == 0.5 and b["share_between"] == 0
    assert b["bimodality_coefficient"] == pytest.approx(1.0)
    assert chapter.bimodality(flat)["bimodality_coefficient"] == pytest.approx(5 / 9, abs=0.02)
    assert chapter.bimodality(torch.tensor([0.1, 0.2, float("nan"), 0.3, 0.4]))["share_between"] == 1.0
    with pytest.raises(ValueError, match="at least 4"):
        chapter.bimodality(torch.tensor([0.0, float("nan")]))


# --- The chapter's study, summary and claims -------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["smoke", "default", "gpu", "paper"])
def test_named_scales_build_valid_studies(scale):
    s = chapter.study(scale, "cpu")
    assert 0 < s.compare_k < min(s.grid.sizes) and s.compare_k != s.grid.k
    assert s.grid.train.device == "cpu"
    assert chapter.study(scale, "cpu", compare_k=None) == s  # a None notebook parameter keeps the scale's value
    assert chapter.study(scale, "cpu", compare_k=0).compare_k == 0


def test_study_rejects_a_compare_k_above_the_dictionary_sizes():
    with pytest.raises(ValueError, match="compare_k"):
        chapter.study("smoke", "cpu", compare_k=128)
    with pytest.raises(ValueError, match="n_draws"):
        chapter.study("smoke", "cpu", n_draws=0)


def _split(stab, freq=None):
    """A `FeatureSplit` of hand-given stability `(S, F)` (NaN: dead), labelled with the default cut-offs."""
    cfg = StabilityConfig()
    stab = torch.as_tensor(stab, dtype=torch.float32)
    S, F = stab.shape
    dead = torch.isnan(stab)
    freq = torch.full((S, F), 0.01) if freq is None else torch.as_tensor(freq, dtype=torch.float32)
    max_cos = torch.full((S, S, F), 0.5).masked_fill(dead.unsqueeze(1), torch.nan)
    return FeatureSplit(
        stab,
        stab,
        max_cos,
        st.stability_labels(stab, cfg),
        cfg.threshold,
        freq.masked_fill(dead, 0.0),
        torch.ones(S, F),
        cfg.stable_at,
        cfg.unstable_at,
    )


def _result(table_changes=None, **changes):
    """A `StabilityResult` of hand-built numbers: two sizes at one layer and variant, reference at the larger."""
    s = chapter.study("smoke", "cpu")
    table = pd.DataFrame(
        {
            "layer": [6, 6],
            "variant": ["topk", "topk"],
            "d_sae": [128, 256],
            "explained_variance": [0.7, 0.8],
            "l0": [8.0, 8.0],
            "dead_fraction": [0.0, 0.1],
            "ce_loss_score": [0.5, 0.6],
            "mean_stability": [0.6, 0.4],
            "stable_share": [0.5, 0.3],
            "unstable_share": [0.2, 0.5],
            "shared_fraction": [0.3, 0.45],
            "pw_mcc": [0.6, 0.75],
            "null_stability": [0.1, 0.05],
            "null_cov_stability": [0.2, 0.5],
            "null_shared_fraction": [0.0, 0.0],
            "null_pw_mcc": [0.3, 0.25],
        }
        | (table_changes or {})
    )
    # Seed 0: two unstable (frequency 0.001, 0.003), one stable (0.02), one dead; seed 1: stable (0.04), 3 unstable.
    split = _split(
        [[0.0, 0.0, 1.0, float("nan")], [1.0, 0.0, 0.0, 0.0]], [[0.001, 0.003, 0.02, 0.0], [0.04, 0.002, 0.002, 0.002]]
    )
    entry = GridEntry(6, "topk", 256)
    # Mean stability 0.2 at 100k tokens, 0.4 at 1M: +0.2 per tenfold, 1.0 at 1B on that line.
    curve = pd.DataFrame(
        {c: [0.5, 0.5] for c in chapter.CURVE_COLUMNS}
        | {"tokens": [100_000, 1_000_000], "epochs": [0.5, 5.0], "mean_stability": [0.2, 0.4]}
    )
    fields = dict(
        study=s,
        activations=pd.DataFrame(),
        table=table,
        reference=entry,
        split=split,
        null=chapter.ReferenceNull(torch.tensor([[0.0, 0.0, 0.5, 0.0]]), 0.6, 0.1),
        shape=chapter.bimodality(split.stability),
        top_dimensions=pd.DataFrame(
            {
                "layer": [3, 3, 6, 6],
                "rank": [0, 1, 0, 1],
                "dimension": [1, 2, 3, 4],
                "variance_share": [0.3, 0.1, 0.6, 0.2],
            }
        ),
        by_threshold=pd.DataFrame({"threshold": [0.5, 0.9], "mean_stability": [0.8, 0.1]}),
        by_reference_seeds=pd.DataFrame({"label_agreement": [0.7, 0.9, 1.0]}),
        latents=grid.latent_table(entry, split),
        frequency_rho=0.3,
        by_k=pd.DataFrame(
            {"k": [8, 32], "mean_stability": [0.4, 0.1], "stable_share": [0.3, 0.05], "explained_variance": [0.8, 0.9]}
        ).set_index("k"),
        whole=pd.DataFrame(),
        counts=pd.DataFrame(),
        ref_row=table.iloc[-1].to_dict(),
        confusion=chapter.label_confusion(split.stability, StabilityConfig(), StabilityConfig(estimator="all_pairs")),
        curve=curve,
        curve_fit={c: chapter.log_fit(curve.tokens, curve[c], chapter.PAPER_TOKENS) for c in chapter.FIT_COLUMNS},
    )
    return chapter.StabilityResult(**(fields | changes))


def test_summary_known_answers():
    s = chapter.summary(_result())
    assert all(type(v) in (int, float, str) for v in s.values()), {k: type(v) for k, v in s.items()}
    assert s["ref_name"] == "L6-topk-256" and s["ref_mean_stability"] == 0.4 and s["ref_pw_mcc"] == 0.75
    assert s["n_points"] == 2 and s["n_above_null"] == 2 and s["n_above_cov"] == 1
    assert s["size_trend_min"] == s["size_trend_max"] == pytest.approx(-0.2)
    assert s["freq_unstable"] == pytest.approx(0.002) and s["freq_stable"] == pytest.approx(0.03)  # medians of alive
    assert s["shape_share_zero"] == pytest.approx(5 / 7) and s["shape_share_one"] == pytest.approx(2 / 7)
    assert s["ref_null_share_zero"] == 0.75 and s["ref_decoder_shared"] == 0.6
    assert s["top_dim_share_min"] == 0.3 and s["top_dim_share_max"] == 0.6
    assert s["agree_one_ref"] == 0.7 and s["agree_last_but_one"] == 0.9
    assert s["stab_tau_lo"] == 0.8 and s["tau_hi"] == 0.9
    assert s["k_grid"] == 8 and s["k_other"] == 32 and s["stab_k_other"] == 0.1
    assert s["model"] == "gemma3-270m" and s["sizes"] == "128, 256"
    # the paper's endpoints and the all-pairs cut-offs agree on these 0/1 stabilities
    assert s["label_agreement"] == 1.0 and s["stable_at"] == 0.95 and s["all_pairs_stable_at"] == 0.8
    assert s["fit_mean_stability_slope"] == pytest.approx(0.2) and s["fit_mean_stability_at_value"] == pytest.approx(
        1.0
    )
    assert s["curve_mean_stability_lo"] == 0.2 and s["budget_span"] == 10 and s["curve_tokens_hi"] == "1,000,000"


def test_label_confusion_counts_each_latent_once():
    p = torch.tensor([[0.0, 0.125, 0.875, 1.0, 0.5, float("nan")]])  # N = 8: 0, 1, 7, 8 matches, 4, dead
    table = chapter.label_confusion(p, StabilityConfig(), StabilityConfig(estimator="all_pairs"))
    assert int(table.values.sum()) == 5 and list(table.index) == ["unstable", "intermediate", "stable"]
    # endpoints: unstable {0}, stable {1}; cut-offs 0.8 / 0.2: unstable {0, 1/8}, stable {7/8, 1}
    assert table.loc["unstable", "unstable"] == 1 and table.loc["intermediate", "unstable"] == 1
    assert table.loc["intermediate", "stable"] == 1 and table.loc["stable", "stable"] == 1
    assert table.loc["intermediate", "intermediate"] == 1


def test_log_fit_known_line_and_its_extrapolation():
    fit = chapter.log_fit([1e3, 1e4, 1e5], [0.1, 0.2, 0.3], at=1e9)
    assert fit["slope"] == pytest.approx(0.1) and fit["r2"] == pytest.approx(1.0)
    assert fit["last_slope"] == pytest.approx(0.1) and fit["at_value"] == pytest.approx(0.7)
    assert fit["bound_tokens"] == pytest.approx(1e12)  # 0.1 per decade from 0.1 at 1k: 1 at 10^12
    steep = chapter.log_fit([1e3, 1e4], [0.5, 0.9], at=1e9)
    assert steep["at_value"] == 1.0 and steep["bound_tokens"] == pytest.approx(10**4.25)  # clipped; leaves [0, 1]
    falling = chapter.log_fit([1e3, 1e4], [0.5, 0.25], at=1e9)
    assert falling["at_value"] == 0.0 and falling["bound_tokens"] == pytest.approx(1e5)
    assert chapter._tokens_text(3.2e6) == "3.2M" and chapter._tokens_text(float("inf")) == "never"
    with pytest.raises(ValueError, match="2 finite"):
        chapter.log_fit([1e3, 1e4], [0.1, float("nan")], at=1e9)


def _verdicts(s):
    return {c.claim: c.verdict for c in chapter.claims(s)}


def test_claims_follow_the_numbers():
    s = chapter.summary(_result())
    rows = chapter.claims(s)
    frame = common.claims_frame(rows)  # checks the verdict vocabulary
    assert list(frame.columns) == ["claim", "criterion", "ours", "paper", "verdict"]
    v = [r.verdict for r in rows]
    # bimodal (coefficient of a 0/1 split is high), above the untrained null everywhere, not above the covariance
    # null at one point, one sign of the size trend, unstable rarer, rho 0.3 > 0.1, shared 45% within 10 points of
    # 41.6%, PW-MCC 0.75 within 0.10 of 0.80.
    assert v == ["holds", "holds", "does not hold", "holds", "holds", "holds", "holds", "holds"]
    assert "related work" in rows[-1].paper and "related work" in rows[-2].paper
    assert "(reported, secondary source)" in rows[4].paper
    flipped = s | {
        "shape_bimodality_coefficient": 0.4,
        "n_above_null": 1,
        "n_above_cov": 2,
        "size_trend_max": 0.1,
        "freq_unstable": 0.05,
        "freq_rho": -0.2,
        "ref_shared_fraction": 0.1,
        "ref_pw_mcc": 0.5,
    }
    assert [r.verdict for r in chapter.claims(flipped)] == [
        "holds" if x == "does not hold" else "does not hold" for x in v
    ]
    unmeasured = s | {
        "size_trend_min": float("nan"),
        "size_trend_max": float("nan"),
        "freq_stable": float("nan"),
        "freq_rho": float("nan"),
    }
    assert [r.verdict for r in chapter.claims(unmeasured)][3:6] == ["not measured"] * 3


def test_summary_of_one_dictionary_size_leaves_the_size_claim_unmeasured():
    one = {"d_sae": [256, 256], "layer": [3, 6]}
    s = chapter.summary(_result(table_changes=one, top_dimensions=pd.DataFrame({"rank": [0], "variance_share": [0.5]})))
    assert math.isnan(s["size_trend_min"])
    assert _verdicts(s)["Stability moves with dictionary size"] == "not measured"


# --- Figure 1 (issue: shares per label were 1 by construction) --------------------------------------------------------


def _bar_heights(ax):
    """Per legend label, the plotted bar heights (one per stability level)."""
    return {c.get_label(): np.array([p.get_height() for p in c]) for c in ax.containers}


def test_figure_one_shows_shares_of_all_alive_latents():
    matplotlib.use("Agg")
    split = _split([[0.0, 0.0, 0.5, 1.0, float("nan")], [0.0, 1.0, 1.0, 0.5, 0.5]])
    null = torch.tensor([[0.0, 0.0, 0.0, 0.5]])
    ax = plot_stability_distribution(split.stability, split.label, null)
    bars = _bar_heights(ax)
    assert set(bars) == {"unstable", "intermediate", "stable", NULL_KIND}
    trained = sum(h for k, h in bars.items() if k != NULL_KIND)
    assert trained.sum() == pytest.approx(1.0) and bars[NULL_KIND].sum() == pytest.approx(1.0)
    # 9 alive latents: 3 at 0, 3 at 0.5, 3 at 1; the untrained null: 3 of 4 at 0.
    np.testing.assert_allclose(trained, [3 / 9, 3 / 9, 3 / 9])
    np.testing.assert_allclose(bars[NULL_KIND], [0.75, 0.25, 0.0])
    # Every value stability can take with S seeds gets a bar, empty or not (3 seeds: 0, 0.5, 1).
    three = _split([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    ax = plot_stability_distribution(three.stability, three.label)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.00", "0.50", "1.00"]
    np.testing.assert_allclose(sum(_bar_heights(ax).values()), [0.5, 0.0, 0.5])
    # Per-kind normalisation (chapter 4's isolated vs group) is still available: each kind then sums to 1.
    per_kind = _bar_heights(plot_stability_hist(split.stability.flatten(), ["a"] * 5 + ["b"] * 5, normalize="kind"))
    assert all(h.sum() == pytest.approx(1.0) for h in per_kind.values())
    plt.close("all")


# --- run() on a tiny offline GPT-2 grid ------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_on_a_tiny_grid(tmp_path):
    from helpers import make_tiny_model, tiny_grid_study

    folder = str(make_tiny_model(tmp_path / "gpt2", "gpt2", n_layers=3, d=32))
    g = tiny_grid_study(folder, layers=(2,), thresholds=(0.5, 0.9))
    result = chapter.run(chapter.StabilityStudy(g, compare_k=8, n_draws=2), progress=False)
    split, table = result.split, result.table
    assert len(table) == 2 and result.reference == GridEntry(2, "topk", 48)
    # The reference SAEs: the reference point trained in depth (4 seeds, the largest budget).
    assert split.stability.shape == (4, 48) and result.null.null_stability.shape == (4, 48)
    assert float(result.null.null_stability.mean()) == pytest.approx(result.ref_row["null_stability"], abs=1e-6)
    # The k comparison stays at the grid's budget: its first row is the grid's own reference point.
    ref = table[(table.layer == 2) & (table.d_sae == 48)].iloc[0]
    assert list(result.by_k.index) == [4, 8] and result.by_k.loc[4, "mean_stability"] == ref.mean_stability
    assert int(result.counts.values.sum()) == int(split.alive.sum()) == len(result.latents)
    assert list(result.by_threshold.threshold) == [0.5, 0.9] and len(result.by_reference_seeds) == 3
    # The budget curve: the grid's budget is the grid's own point; the deepest is the reference SAEs' first 3 seeds.
    curve = result.curve
    assert list(curve.tokens) == [1_600, 3_200] and curve.mean_stability.iloc[0] == pytest.approx(ref.mean_stability)
    first3, _ = st.stability_from_max_cos(split.max_cos[:3, :3], g.stability.threshold, split.alive[:3])
    assert curve.mean_stability.iloc[1] == pytest.approx(float(first3.nanmean()))
    assert int(result.confusion.values.sum()) == int(split.alive.sum())
    s = chapter.summary(result)
    assert s["n_points"] == 2 and s["ref_mean_stability"] == pytest.approx(float(split.stability.nanmean()))
    assert all(c.verdict in common.VERDICTS for c in chapter.claims(s))
    # Figure 1 as the notebook draws it: the trained bars sum to 1 over all alive latents, the null's to 1.
    matplotlib.use("Agg")
    bars = _bar_heights(plot_stability_distribution(split.stability, split.label, result.null.null_stability))
    assert sum(h.sum() for k, h in bars.items() if k != NULL_KIND) == pytest.approx(1.0)
    assert bars[NULL_KIND].sum() == pytest.approx(1.0)
    plt.close("all")


def test_frequency_correlation_known_answers():
    stab = torch.tensor([[0.0, 0.5, 1.0, float("nan"), 1.0]])
    freq = torch.tensor([[0.001, 0.01, 0.1, 0.0, 0.2]])
    assert chapter.frequency_correlation(stab, freq) == pytest.approx(0.9486832980505138)  # scipy, ties averaged
    assert chapter.frequency_correlation(stab, 1 / freq.clamp_min(1e-9)) < 0
    assert math.isnan(chapter.frequency_correlation(torch.zeros(1, 5), freq))  # undefined: no latent matches
