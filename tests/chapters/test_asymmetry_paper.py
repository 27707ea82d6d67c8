"""Chapter 2, the paper's own analyses (`chapters.asymmetry_paper`): masking N stable vs 4N unstable latents on a
planted SAE with a known answer, its table, summary and claims, the explanation keyword shares, and the cache keys of
chapter 2 (every parameter that changes a result changes its key)."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from saelib import metrics
from saelib import subspace as sp
from saelib.chapters import asymmetry, common, grid
from saelib.chapters import asymmetry_paper as paper
from saelib.config import SAEConfig
from saelib.lm import splice
from saelib.sae import SAE
from saelib.stability import STABLE, UNSTABLE

D, N_STABLE = 16, 3


def _planted(S=2, n=4000, stable_scale=3.0, unstable_scale=0.2, seed=0):
    """A ReLU SAE whose decoder rows are an orthonormal basis (the same for every seed) and whose encoder is its
    transpose; data `x = c @ Q` with sparse non-negative codes. Latents 0..2 are labelled stable and carry large
    codes, latents 3..15 unstable with small codes: removing latent i loses exactly its share of the variance, so
    removing N = 3 stable latents must cost far more than removing 4N = 12 unstable ones."""
    g = torch.Generator().manual_seed(seed)
    q = sp.random_subspace(D, D, g)  # (D, D) orthonormal rows
    sae = SAE(SAEConfig(d_in=D, d_sae=D, variant="relu", n_seeds=S)).eval()
    with torch.no_grad():
        sae.W_dec.copy_(q.expand(S, D, D))
        sae.W_enc.copy_(q.T.expand(S, D, D))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    scale = torch.full((D,), unstable_scale)
    scale[:N_STABLE] = stable_scale
    c = (torch.rand(n, D, generator=g) < 0.3) * torch.rand(n, D, generator=g) * scale  # (n, D) >= 0
    label = torch.full((S, D), UNSTABLE, dtype=torch.int8)
    label[:, :N_STABLE] = STABLE
    return sae, c @ q, c, label


def _study(**kw):
    return replace(asymmetry.study("smoke", "cpu"), **kw)


def _fake_splice(sae):
    """A stand-in for `splice.masked_spliced_ce`: the CE-loss score of a mask is the share of latents kept."""
    calls = []

    def splice_ce(keep, *, seeds):
        calls.append((tuple(keep.shape), list(seeds)))
        score = keep[:, seeds].double().mean(-1)  # (M', S')
        z = torch.zeros_like(score)
        return splice.MaskedSplice(1.0, 2.0, z, score, z, z, list(seeds), 10)

    return splice_ce, calls


def _run(study, sae, x, label):
    mass = metrics.feature_activation_stats(sae, x).mass
    keys = []

    def cached(artifact, compute, **key):
        keys.append((artifact, key))
        return compute()

    splice_ce, calls = _fake_splice(sae)
    table = paper.run_masking(study, sae, lambda: x, label, mass, cached, splice_ce, context_len=12)
    return table, keys, calls


def test_masking_on_a_planted_sae_stable_costs_more_with_the_known_answer():
    sae, x, c, label = _planted()
    study = _study(mask_draws=3, ce_control_draws=2, mask_ce_seeds=1, control_pool="all")
    table, keys, calls = _run(study, sae, x, label)
    assert table is not None
    total = (x.double() - x.double().mean(0)).pow(2).sum()
    share = c.double().pow(2).sum(0) / total  # (D,) what removing each latent costs (orthogonal decoder)
    stable = table[(table.group == "stable") & (table.removed == "group")]
    unstable = table[(table.group == "unstable") & (table.removed == "group")]
    assert (stable.n_removed == N_STABLE).all() and (unstable.n_removed == 4 * N_STABLE).all()
    # N = 3 of 3 stable latents: every draw removes all of them and loses exactly their share.
    np.testing.assert_allclose(stable.ev_loss, float(share[:N_STABLE].sum()), atol=1e-4)
    assert stable.ev_loss.min() > 10 * unstable.ev_loss.max()
    # CE: the first ce_control_draws draws of the first mask_ce_seeds seeds only, the full SAE spliced too.
    assert calls == [((1 + 2 * 2 * 3, 2, D), [0])]
    measured = table.ce_loss.notna()
    assert measured.eq((table.seed == 0) & (table.draw < 2)).all()
    np.testing.assert_allclose(table.ce_loss[measured], table.n_removed[measured] / D)  # the stand-in's answer
    # Every key holds the parameters; EV and CE are cached apart.
    assert [k[0] for k in keys] == ["mask-ev", "mask-ce"]
    assert keys[0][1] == {"step": "mask-ev"} | paper.mask_params(study, N_STABLE)
    assert keys[1][1]["ce_seeds"] == [0] and keys[1][1]["ce_draws"] == 2 and keys[1][1]["context_len"] == 12

    s = paper.summary(table, None, None, study)
    assert s["mask_n"] == 3 and s["mask_n_unstable"] == 12 and s["mask_ce_seeds"] == "0"
    assert s["mask_ev_loss_stable"] == pytest.approx(float(share[:N_STABLE].sum()), abs=1e-4)
    assert s["mask_ce_loss_unstable"] == pytest.approx(12 / 16)
    assert s["mask_ce_loss_count_stable"] == pytest.approx(3 / 16)
    assert s["mask_mass_pct_stable"] > 70  # the planted stable latents carry most of the activation mass (9 of 11.6)
    rows = {r.criterion.split(" lost")[0]: r for r in paper.claims(s)[:2]}
    assert rows["explained variance"].verdict == common.HOLDS
    # The stand-in CE score loses more for 12 latents than for 3, whatever they are: the CE row does not hold.
    assert rows["CE-loss score"].verdict == common.DOES_NOT_HOLD
    assert "(reported, secondary source)" in rows["explained variance"].paper
    assert rows["CE-loss score"].paper == common.NOT_REPORTED  # the reported result is about explained variance
    # The reading sentence compares each group with its mass-matched control, in the direction computed.
    ev_word = "more" if s["mask_ev_loss_stable"] > s["mask_ev_loss_mass_stable"] else "less"
    assert s["mask_reading"].startswith("Against random latents of the same activation mass, the N stable latents cost")
    assert f"{ev_word} explained variance ({s['mask_ev_loss_stable']:.3g} against" in s["mask_reading"]


def test_masking_verdict_flips_when_the_unstable_latents_carry_the_variance():
    sae, x, _, label = _planted(stable_scale=0.2, unstable_scale=3.0)
    table, _, _ = _run(_study(mask_draws=2, ce_control_draws=1), sae, x, label)
    s = paper.summary(table, None, None, _study(mask_draws=2, ce_control_draws=1))
    rows = paper.claims(s)
    assert rows[0].verdict == common.DOES_NOT_HOLD and s["mask_ev_loss_unstable"] > s["mask_ev_loss_stable"]


def test_masking_controls_match_count_and_mass():
    sae, x, _, label = _planted()
    study = _study(mask_draws=2, ce_control_draws=1, mass_tolerance=0.1, control_pool="all")
    table, _, _ = _run(study, sae, x, label)
    by = paper.masking_by_cut(table)
    assert list(by.index) == [
        "remove N stable",
        "count-matched to N stable",
        "mass-matched to N stable",
        "remove 4N unstable",
        "count-matched to 4N unstable",
        "mass-matched to 4N unstable",
    ]
    assert (by.ev_loss_count == 2 * 2).all()  # draws x seeds
    assert by.loc["count-matched to 4N unstable", "n_removed"] == 12
    for group in ("N stable", "4N unstable"):
        target = by.loc[f"remove {group}", "mass_removed"]
        assert by.loc[f"mass-matched to {group}", "mass_removed"] == pytest.approx(target, rel=0.1)
    points = paper.per_seed(table)
    assert len(points) == 2 * 3 * 2 and set(points.removed) == {"group", "count", "mass"}


def test_masking_not_measured_without_enough_latents_and_one_schema():
    sae, x, _, label = _planted()
    label[1, :] = UNSTABLE  # seed 1 has no stable latent: N would be 0
    table, keys, _ = _run(_study(), sae, x, label)
    assert table is None and keys == []
    s = paper.summary(None, None, None, _study())
    full = paper.summary(_run(_study(), *_planted()[:2], _planted()[3])[0], None, None, _study())
    assert set(s) == set(full) and s["mask_n"] == 0 and math.isnan(s["mask_ev_loss_stable"])
    assert all(r.verdict == common.NOT_MEASURED for r in paper.claims(s))
    assert "not measured" in s["mask_reading"] and s["firing_reading"] == ""


def test_masking_table_validates_shapes():
    _, _, _, label = _planted()
    cuts = paper.masking_cuts(label, torch.ones(2, D, dtype=torch.float64), _study(mask_draws=1, ce_control_draws=1))
    assert cuts is not None
    M = len(cuts.cut)
    with pytest.raises(ValueError, match="ev_loss"):
        paper.masking_table(cuts, torch.zeros(M, 3))
    with pytest.raises(ValueError, match="ce_loss"):
        paper.masking_table(cuts, torch.zeros(M, 2), torch.zeros(2, 2), np.arange(3), [0, 1])


def test_firing_and_explanation_shares_in_summary_and_claims():
    firing = {
        "stable": {"n": 10, "median": 0.005, "mean": 0.0044},
        "unstable": {"n": 20, "median": 0.001, "mean": 0.0018},
    }
    expl = pd.DataFrame(
        {
            "label": ["stable", "stable", "unstable", "unstable"],
            "explanation": ["the word 'the'", "legal documents", "a substring of names", "punctuation marks"],
        }
    )
    s = paper.summary(None, firing, expl, _study())
    assert s["firing_mean_pct_stable"] == pytest.approx(0.44) and s["firing_median_pct_unstable"] == pytest.approx(0.1)
    assert s["substring_word_unstable"] == 0.5 and s["substring_word_stable"] == 0.0 and s["surface_n_stable"] == 2
    rows = paper.claims(s)
    freq = [r for r in rows if "mean firing" in r.criterion][0]
    assert freq.verdict == common.HOLDS and "0.18%" in freq.paper
    assert freq.ours == "stable 0.44%, unstable 0.18% of tokens"
    assert s["firing_reading"] == (
        "Within each group, the unstable latents' mean is 1.8 times their median and the stable latents' mean is 0.9 "
        "times their median (a heavy tail: a few latents fire on many tokens)."
    )
    word = [r for r in rows if '"substring"' in r.criterion][0]
    assert word.verdict == common.HOLDS and "38.9%" in word.paper
    even = paper.summary(None, {k: v | {"mean": v["median"]} for k, v in firing.items()}, None, _study())
    assert "heavy tail" not in even["firing_reading"] and "mean is 1.0 times" in even["firing_reading"]
    # Without explanations (no endpoint): not measured, and the row says what stands in.
    none = [r for r in paper.claims(paper.summary(None, firing, None, _study())) if "explanations" in r.criterion]
    assert len(none) == 2 and all(r.verdict == common.NOT_MEASURED and "top-token share" in r.ours for r in none)
    assert "38.9%" in none[0].paper


# --- Chapter 2's cache keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value", [("seed", 1), ("mass_tolerance", 0.1), ("control_pool", "all"), ("control_draws", 3)]
)
def test_cut_keys_follow_every_parameter_of_the_cuts(field, value):
    study = _study()
    g = grid.reference_study(study.grid)
    entry = grid.reference_entry(g)
    key = asymmetry.asymmetry_key(g, entry, step="ev", **asymmetry.cut_params(study))
    changed = replace(study, **{field: value})
    assert asymmetry.asymmetry_key(g, entry, step="ev", **asymmetry.cut_params(changed)) != key
    assert asymmetry.asymmetry_key(g, entry, step="ev", **asymmetry.cut_params(_study())) == key


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", 1),
        ("mass_tolerance", 0.1),
        ("control_pool", "all"),
        ("mask_draws", 3),
        ("mask_ratio", 2),
        ("mask_n", 1),
    ],
)
def test_mask_keys_follow_every_parameter_of_the_masking(field, value):
    study = _study()
    assert paper.mask_params(replace(study, **{field: value})) != paper.mask_params(study)
    assert paper.mask_params(study, 5)["n"] == 5  # the N actually used when the study leaves it open


def test_ce_seeds_follow_the_study():
    assert paper.ce_seed_list(_study(mask_ce_seeds=None), 4) == [0, 1, 2, 3]
    assert paper.ce_seed_list(_study(mask_ce_seeds=2), 4) == [0, 1]
    assert paper.ce_seed_list(_study(mask_ce_seeds=9), 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="mask_ce_seeds"):
        _study(mask_ce_seeds=0)
    with pytest.raises(ValueError, match="mask_n"):
        _study(mask_n=0)
    with pytest.raises(ValueError, match="mask_draws"):
        _study(mask_draws=0)


def test_tables_and_figure_when_not_measured():
    import matplotlib

    matplotlib.use("Agg")
    from saelib import plots

    assert len(paper.masking_by_cut(None)) == 0 and len(paper.per_seed(None)) == 0
    axes = plots.asymmetry.figure_masking(paper.per_seed(None))
    assert axes[0].texts[0].get_text() == "not measured"
    sae, x, _, label = _planted()
    table, _, _ = _run(_study(mask_draws=2, ce_control_draws=1), sae, x, label)
    axes = plots.asymmetry.figure_masking(paper.per_seed(table))
    assert len(axes[0].patches) >= 6 and not axes[0].texts  # bars drawn: 2 groups x 3 removed sets


def test_firing_ecdf_marks_our_medians_and_the_reported_rates():
    import matplotlib

    matplotlib.use("Agg")
    from saelib import plots

    latents = pd.DataFrame(
        {
            "label": ["stable"] * 3 + ["unstable"] * 3 + ["intermediate"],
            "frequency": [0.004, 0.005, 0.006, 0.001, 0.002, 0.003, 0.5],
        }
    )
    ax = plots.asymmetry.plot_firing_ecdf(latents, reported=paper.REPORTED_FIRING_PCT)
    xs = sorted(round(float(line.get_xdata()[0]), 6) for line in ax.lines if line.get_linestyle() in ("--", ":"))
    assert xs == [0.18, 0.2, 0.44, 0.5]  # medians 0.2% and 0.5%, reported 0.18% and 0.44%
    assert ax.get_xscale() == "log"
