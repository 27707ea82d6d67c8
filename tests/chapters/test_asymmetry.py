"""Chapter 2 (functional asymmetry): cuts and controls, per-latent tables, single-latent ablations against a direct
computation, summary and claims on hand-built numbers, the study's scales, and `run` end to end on a tiny grid."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import make_tiny_model, tiny_grid_study, tiny_sae

from saelib.chapters import asymmetry, asymmetry_latents, common, grid
from saelib.chapters.asymmetry import AsymmetryStudy
from saelib.chapters.grid import FeatureSplit, GridEntry, GridStudy
from saelib.lm import splice
from saelib.lm.activations import valid_positions
from saelib.metrics import FeatureActivationStats
from saelib.stability import DEAD, INTERMEDIATE, STABLE, UNSTABLE

# --- Cuts and controls --------------------------------------------------------------------------------------------


def test_mass_matched_subset_matches_mass_within_tolerance():
    gen = torch.Generator().manual_seed(0)
    mass = torch.rand(500).pow(3) * 10  # heavy-tailed, like activation mass
    candidates = torch.rand(500) < 0.7
    target = float(mass[~candidates][:40].sum())
    draws = [asymmetry.mass_matched_subset(mass, target, candidates, gen, tol=0.05) for _ in range(20)]
    for d in draws:
        assert abs(float(mass[d].sum()) - target) <= 0.05 * target
        assert not (d & ~candidates).any()  # only candidates are drawn
    assert len({tuple(d.nonzero()[:, 0].tolist()) for d in draws}) == 20  # random, not one fixed answer
    assert not asymmetry.mass_matched_subset(mass, 0.0, candidates, gen).any()
    with pytest.raises(ValueError, match="target"):
        asymmetry.mass_matched_subset(mass, float(mass.sum()) * 2, candidates, gen)


def test_size_matched_subset():
    gen = torch.Generator().manual_seed(0)
    cand = torch.arange(50) % 3 == 0
    d = asymmetry.size_matched_subset(7, cand, gen)
    assert int(d.sum()) == 7 and not (d & ~cand).any()
    with pytest.raises(ValueError, match="size"):
        asymmetry.size_matched_subset(30, cand, gen)


def _labels_and_mass(S=3, F=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (S, F), generator=g).to(torch.int8)  # UNSTABLE, INTERMEDIATE, STABLE
    label[:, :10] = DEAD
    mass = torch.rand(S, F, generator=g) * (1 + 4 * (label == STABLE))  # stable latents fire more
    mass[label == DEAD] = 0
    return label, mass.double()


def test_feature_cuts_groups_complements_and_matched_controls():
    label, mass = _labels_and_mass()
    cuts = asymmetry.feature_cuts(label, mass, control_draws=3, mass_tolerance=0.05)
    t = cuts.table
    assert cuts.masks.shape == (len(t), 3, 200) and cuts.masks.dtype == torch.bool
    by = {name: cuts.masks[i] for i, name in enumerate(t.cut) if t.draw[i] == 0}
    assert by["full SAE"].all() and not by["no latent"].any()
    assert torch.equal(by["keep stable"], label == STABLE) and torch.equal(by["remove stable"], label != STABLE)
    assert torch.equal(by["keep unstable"], label == UNSTABLE)
    for name, code in (("stable", STABLE), ("unstable", UNSTABLE)):
        group = label == code
        target = (mass * group).sum(-1)
        for i in np.flatnonzero((t.group == name) & (t.op == "keep") & (t.control != "group")):
            m = cuts.masks[i]
            assert not (m & (label == DEAD)).any()  # dead latents are never drawn
            if t.pool[i] == "complement":
                assert not (m & group).any()
            if t.control[i] == "mass":  # the matched-mass control matches mass within the tolerance
                assert ((mass * m).sum(-1) - target).abs().le(0.05 * target).all()
            else:
                assert torch.equal(m.sum(-1), group.sum(-1))
            j = np.flatnonzero((t.cut == t.cut[i].replace("keep", "remove")) & (t.draw == t.draw[i]))[0]
            assert torch.equal(cuts.masks[j], ~m)  # "remove control" removes exactly the kept control
    assert (t[t.control != "group"].groupby(["cut"]).size() == 3).all()
    row = t[t.cut == "keep stable"].iloc[0]
    assert row.mass_share == pytest.approx(float(((mass * (label == STABLE)).sum(-1) / mass.sum(-1)).mean()))


def test_feature_cuts_pool_follows_what_the_complement_can_match():
    """Known answer: here every seed's stable latents hold more mass than all its other alive latents together, so
    their mass controls must come from all alive latents; every other control fits in the complement."""
    label, mass = _labels_and_mass()
    alive = label != DEAD
    for s in range(3):  # the premise, checked
        stable = label[s] == STABLE
        assert float(mass[s][alive[s] & ~stable].sum()) < 0.95 * float(mass[s][stable].sum())
        assert int((alive[s] & ~stable).sum()) >= int(stable.sum())
    t = asymmetry.feature_cuts(label, mass, control_draws=2).table
    pools = t[t.control != "group"].groupby(["group", "control"]).pool.agg(set).to_dict()
    assert pools == {
        ("stable", "mass"): {"all"},
        ("stable", "size"): {"complement"},
        ("unstable", "mass"): {"complement"},
        ("unstable", "size"): {"complement"},
    }
    every = asymmetry.feature_cuts(label, mass, control_draws=2, control_pool="all").table
    assert set(every[every.control != "group"].pool) == {"all"}


def test_feature_cuts_fall_back_to_all_latents_when_the_complement_is_too_light():
    label = torch.full((1, 20), STABLE, dtype=torch.int8)
    label[0, :4] = UNSTABLE
    mass = torch.ones(1, 20, dtype=torch.float64)
    t = asymmetry.feature_cuts(label, mass, control_draws=1).table
    assert t[(t.group == "stable") & (t.control != "group")].pool.eq("all").all()
    assert t[(t.group == "unstable") & (t.control != "group")].pool.eq("complement").all()


def test_feature_cuts_draws_follow_the_seed():
    label, mass = _labels_and_mass()
    a, t = asymmetry.feature_cuts(label, mass, control_draws=2, seed=1)
    assert torch.equal(a, asymmetry.feature_cuts(label, mass, control_draws=2, seed=1).masks)
    b = asymmetry.feature_cuts(label, mass, control_draws=2, seed=2).masks
    fixed = torch.tensor((t.control == "group").to_numpy())
    assert torch.equal(a[fixed], b[fixed])  # the groups themselves do not depend on the seed
    assert all(not torch.equal(a[i], b[i]) for i in np.flatnonzero(~fixed.numpy()))  # every control is redrawn


def test_cut_table_and_cut_summary_on_known_numbers():
    cuts = pd.DataFrame(
        {
            "cut": ["keep stable", "keep size-matched to stable", "keep size-matched to stable"],
            "op": "keep",
            "group": "stable",
            "control": ["group", "size", "size"],
            "draw": [0, 0, 1],
        }
    )
    ev = torch.tensor([[0.8, 0.6], [0.2, 0.4], [0.4, 0.6]])  # (M, S)
    ce = splice.MaskedSplice(
        2.0,
        6.0,
        torch.zeros(2, 1),
        torch.tensor([[0.9], [0.3]]),
        torch.tensor([[0.1], [1.0]]),
        torch.tensor([[0.01], [0.2]]),
        [0],
        10,
    )
    t = asymmetry.cut_table(cuts, ev, ce, np.array([0, 1]))
    assert t.ev.tolist() == pytest.approx([0.7, 0.3, 0.5])
    assert t.ce_loss_score.iloc[:2].tolist() == pytest.approx([0.9, 0.3]) and np.isnan(t.ce_loss_score.iloc[2])
    s = asymmetry.cut_summary(t, "ev").loc[("keep", "stable")]
    assert s["group"] == pytest.approx(0.7) and s["size"] == pytest.approx(0.4)
    assert s["size (std)"] == pytest.approx(np.std([0.3, 0.5], ddof=1)) and np.isnan(s["mass"])


# --- Per-latent tables --------------------------------------------------------------------------------------------


def _split(label: torch.Tensor) -> FeatureSplit:
    S, Fn = label.shape
    stab = torch.where(label == STABLE, 1.0, torch.where(label == UNSTABLE, 0.0, 0.5))
    stab[label == DEAD] = torch.nan
    freq = torch.where(label == DEAD, 0.0, torch.linspace(0.01, 0.1, S * Fn).view(S, Fn))
    return FeatureSplit(
        stability=stab,
        mean_max_cos=stab.clone(),
        max_cos=torch.zeros(S, S, Fn),
        label=label,
        threshold=0.7,
        frequency=freq,
        mean_activation=freq * 10,
        stable_at=0.8,
        unstable_at=0.2,
    )


def test_latent_stats_and_label_tables_on_known_numbers():
    label = torch.tensor(
        [[STABLE, STABLE, UNSTABLE, DEAD], [STABLE, UNSTABLE, INTERMEDIATE, UNSTABLE]], dtype=torch.int8
    )
    mass = torch.tensor([[6.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    stats = FeatureActivationStats(
        torch.zeros(2, 4),
        torch.zeros(2, 4),
        torch.arange(8.0).view(2, 4),
        mass,
        (mass / mass.sum(-1, keepdim=True)).float(),
        100,
    )
    latents = asymmetry.latent_stats_table(GridEntry(6, "topk", 4), _split(label), stats)
    assert len(latents) == 7  # the dead latent is left out
    row = latents[(latents.seed == 1) & (latents.latent == 2)].iloc[0]
    assert row.max_activation == 6.0 and row.mass_share == pytest.approx(0.25) and row.label == "intermediate"
    by = asymmetry.label_table(latents, n_seeds=2)
    assert list(by.index) == ["unstable", "intermediate", "stable"]
    assert by.latents.tolist() == [3, 1, 3] and by.share_of_latents.sum() == pytest.approx(1.0)
    # The stable latents hold 0.8 of seed 0's mass and 0.25 of seed 1's: mean 0.525.
    assert by.loc["stable", "mass_share"] == pytest.approx(0.525)
    assert by.loc["unstable", "mass_share"] == pytest.approx((0.2 + 0.5) / 2)
    assert by.mass_share.sum() == pytest.approx(1.0)  # the labels partition each seed's (alive) mass


def test_marginal_table_expected_change_per_token():
    effects = pd.DataFrame({"feature": [3, 5, 7], "n_firing": [4, 0, 2], "delta_loss_sum": [0.8, 0.0, -0.1]})
    effects["delta_loss_per_firing"] = effects.delta_loss_sum / effects.n_firing.where(effects.n_firing > 0)
    latents = pd.DataFrame(
        {
            "seed": [0, 0, 0, 1],
            "latent": [3, 5, 7, 3],
            "frequency": [0.5, 0.1, 0.2, 0.9],
            "label": ["stable", "unstable", "unstable", "stable"],
            "stability": [1.0, 0, 0, 1],
        }
    )
    m = asymmetry.marginal_table(effects, latents, seed=0).set_index("feature")
    assert len(m) == 3
    assert m.delta_loss_per_token.tolist() == pytest.approx([0.2 * 0.5, 0.0, -0.05 * 0.2])  # never fired: 0


def test_examples_and_explained_latents_come_from_the_eligible_ones():
    triggers = pd.DataFrame(
        {
            "seed": [0] * 8 + [1],
            "latent": list(range(8)) + [0],
            "label": ["stable"] * 4 + ["unstable"] * 4 + ["stable"],
            "top_share": [0.5, np.nan, 0.2, 0.3, 1.0, 0.9, np.nan, 0.8, 0.4],
        }
    )
    eligible = asymmetry.eligible_latents(triggers, seed=0)
    assert eligible["stable"].latent.tolist() == [0, 2, 3] and eligible["unstable"].latent.tolist() == [4, 5, 7]
    shown = asymmetry.choose_examples(eligible, 2, seed=0)
    assert shown == asymmetry.choose_examples(eligible, 2, seed=0)
    assert len(shown["stable"]) == 2 and set(shown["stable"]) <= {0, 2, 3} and set(shown["unstable"]) <= {4, 5, 7}
    explained = asymmetry.choose_explained(eligible, 5, seed=0)
    assert explained == {"stable": [0, 2, 3], "unstable": [4, 5, 7]}  # fewer eligible than asked: all, sorted
    two = asymmetry.choose_explained(eligible, 2, seed=0)
    assert all(v == sorted(v) and len(v) == 2 for v in two.values())


# --- Summary and claims -------------------------------------------------------------------------------------------


def _cuts():
    return pd.DataFrame(
        {
            "cut": [
                "full SAE",
                "no latent",
                "keep stable",
                "remove stable",
                "keep mass-matched to stable",
                "keep unstable",
                "remove unstable",
                "keep mass-matched to unstable",
            ],
            "op": ["keep", "keep", "keep", "remove", "keep", "keep", "remove", "keep"],
            "group": ["all", "none", "stable", "stable", "stable", "unstable", "unstable", "unstable"],
            "control": ["group", "group", "group", "group", "mass", "group", "group", "mass"],
            "draw": 0,
            "pool": "-",
            "n_latents": 1.0,
            "mass_share": [1, 0, 0.7, 0.3, 0.7, 0.05, 0.95, 0.05],
            "ev": [0.9, -0.1, 0.8, 0.2, 0.6, 0.05, 0.88, 0.06],
            "ce_loss_score": [0.95, 0.0, 0.7, 0.3, 0.5, 0.1, 0.9, 0.12],
            "delta_loss": [0.1, 2.0, 0.6, 1.4, 0.9, 1.8, 0.2, 1.7],
            "kl_div": 0.1,
        }
    )


def _latents():
    return pd.DataFrame(
        {
            "seed": 0,
            "latent": [0, 1, 2],
            "label": ["stable", "stable", "unstable"],
            "stability": [1.0, 1.0, 0.0],
            "frequency": [0.004, 0.006, 0.001],
            "mean_activation": [2.0, 3.0, 1.0],
            "max_activation": [5.0, 6.0, 2.0],
            "mass_share": [0.4, 0.5, 0.1],
        }
    )


def _triggers():
    return pd.DataFrame(
        {"label": ["stable", "stable", "unstable"], "top_share": [0.2, np.nan, 0.9], "entropy_bits": [3.0, np.nan, 0.5]}
    )


def _marginal():
    return pd.DataFrame(
        {"label": ["stable", "unstable"], "delta_loss_per_token": [1e-3, 1e-5], "delta_loss_per_firing": [0.2, 0.01]}
    )


def _by_claim(rows):
    return {r.claim: r for r in rows}


def test_table_summary_and_claims_on_known_numbers():
    s = asymmetry.table_summary(_cuts(), _latents(), _marginal(), _triggers())
    assert s["ev_full"] == 0.9 and s["ev_none"] == -0.1 and s["ev_keep_stable"] == 0.8
    assert s["ev_keep_mass_stable"] == 0.6 and s["ev_remove_unstable"] == 0.88
    assert s["frequency_median_stable"] == pytest.approx(0.005) and s["share_unstable"] == pytest.approx(1 / 3)
    assert s["mass_share_stable"] == 0.7 and s["mass_share_median_stable"] == pytest.approx(0.45)
    assert s["top_share_stable"] == 0.2 and s["trigger_n_stable"] == 1  # the NaN row has too few activations
    rows = asymmetry.claims(s)
    assert common.claims_frame(rows).shape == (9 + 5, 5)  # the chapter's rows, then the paper's analyses
    assert {r.verdict for r in rows[:8]} == {common.HOLDS}  # the hand-built numbers favour every part
    by = _by_claim(rows)
    assert by["Unstable latents are low-frequency."].ours == "stable 0.5% of tokens, unstable 0.1% of tokens"
    # No explainer: that part is not measured; the numbers flip the verdicts they test.
    assert rows[8].verdict == common.NOT_MEASURED and "n/a" in rows[8].ours
    flipped = _by_claim(
        asymmetry.claims(s | {"frequency_median_unstable": 0.5, "top_share_unstable": 0.1, "ev_keep_mass_stable": 0.9})
    )
    assert flipped["Unstable latents are low-frequency."].verdict == common.DOES_NOT_HOLD
    assert flipped["Unstable latents are dominated by surface-form triggers."].verdict == common.DOES_NOT_HOLD
    assert (
        flipped[
            "Stable latents carry more of the reconstruction than their activation mass explains, more so "
            "than unstable ones."
        ].verdict
        == common.DOES_NOT_HOLD
    )
    assert flipped["Stable latents carry more of the reconstruction than unstable ones."].verdict == common.HOLDS


def test_claims_paper_column_and_empty_groups():
    s = asymmetry.table_summary(_cuts(), _latents(), _marginal(), _triggers())
    rows = asymmetry.claims(s)
    reported = [r for r in rows if r.paper != common.NOT_REPORTED]
    assert len(reported) == 4 and all("(reported, secondary source)" in r.paper for r in reported)
    assert "0.18%" in _by_claim(rows)["Unstable latents are low-frequency."].paper
    assert rows[8].paper == common.NOT_REPORTED and "38.9%" in rows[12].paper  # the keyword row quotes it
    assert rows[2].paper == common.NOT_REPORTED  # removing all of a group: not the paper's
    assert "4N" in rows[9].paper  # the paper's masking: N stable vs 4N unstable, reported for explained variance
    assert rows[10].paper == common.NOT_REPORTED  # no CE number or direction is reported
    assert "(not measured: no explainer endpoint" in rows[8].ours and rows[8].verdict == common.NOT_MEASURED
    no_stable = asymmetry.claims(s | {"share_stable": 0.0})  # an empty group tests nothing
    assert {r.verdict for r in no_stable} == {common.NOT_MEASURED}
    assert all(r.ours.startswith("stable n/a, ") for r in no_stable[:9])
    assert no_stable[0].ours == "stable n/a, unstable 0.05"  # the group that exists is still shown


def test_explanations_enter_summary_and_claims():
    expl = pd.DataFrame(
        {
            "latent": [0, 1, 2, 3],
            "label": ["stable", "stable", "unstable", "unstable"],
            "explanation": ["a", "b", "c", None],
            "surface_form": [False, True, True, None],
            "balanced_accuracy": [0.9, 0.7, 0.6, np.nan],
        }
    )
    s = asymmetry.table_summary(_cuts(), _latents(), explanations=expl)
    assert s["surface_share_stable"] == 0.5 and s["surface_share_unstable"] == 1.0
    assert s["detection_stable"] == pytest.approx(0.8) and s["explained_n_unstable"] == 1
    assert asymmetry.claims(s)[8].verdict == common.HOLDS
    assert asymmetry.claims(s | {"surface_share_stable": 1.0})[8].verdict == common.DOES_NOT_HOLD  # a tie fails


def _result(explainer=None, explanations=None) -> asymmetry.AsymmetryResult:
    label = torch.tensor([[STABLE, STABLE, UNSTABLE]], dtype=torch.int8)
    ce = splice.MaskedSplice(
        3.0, 7.0, torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), [0], 42
    )
    empty = pd.DataFrame()
    study = asymmetry.study("smoke", "cpu")
    return asymmetry.AsymmetryResult(
        study=study,
        entry=GridEntry(6, "topk", 3),
        split=_split(label),
        latents=_latents(),
        by_label=empty,
        n_eval_tokens=1000,
        cuts=_cuts(),
        ev_by_cut=empty,
        ce_by_cut=empty,
        ce=ce,
        n_ce_contexts=2,
        marginal=_marginal(),
        marginal_by_level=empty,
        triggers=_triggers(),
        triggers_by_label=empty,
        n_top_rows=123456,
        interp_seeds=1,
        examples={"stable": empty, "unstable": empty},
        explanations=pd.DataFrame(columns=asymmetry.EXPLANATION_COLUMNS) if explanations is None else explanations,
        explainer=explainer,
    )


def test_summary_of_a_result_is_plain_and_glues_every_number():
    s = asymmetry.summary(_result())
    assert all(type(v) in (int, float, str) for v in s.values())
    assert s["entry"] == "L6-topk-3" and s["n_seeds"] == 1 and s["d_sae"] == 3 and s["tau"] == 0.7
    assert s["clean_loss"] == 3.0 and s["zero_loss"] == 7.0 and s["n_ce_tokens"] == 42 and s["ce_seeds"] == "0"
    assert s["top_tokens"] == "123,456" and s["mass_tol_pct"] == pytest.approx(5.0)
    assert s["ev_keep_stable"] == 0.8 and s["marginal_per_token_stable"] == 1e-3
    assert s["frequency_median_pct_stable"] == pytest.approx(0.5)
    assert math.isnan(s["surface_share_stable"]) and s["explained_n_stable"] == 0
    assert "not measured" in s["explanation_sentence"] and "No endpoint" in s["explainer_status"]
    assert asymmetry.claims(s)[8].verdict == common.NOT_MEASURED
    assert "No stable latent" in asymmetry.example_html(_result(), "stable")
    expl = pd.DataFrame(
        {
            "latent": [0, 2],
            "label": ["stable", "unstable"],
            "explanation": ["a", "b"],
            "surface_form": [False, True],
            "balanced_accuracy": [0.9, 0.6],
        }
    )
    with_endpoint = asymmetry.summary(_result("some-model", expl))
    assert (
        "some-model" in with_endpoint["explainer_status"]
        and "0.60 for unstable" in with_endpoint["explanation_sentence"]
    )
    assert asymmetry.claims(with_endpoint)[8].verdict == common.HOLDS
    assert with_endpoint["explanation_failures"] == 0 and with_endpoint["explanation_failure_note"] == ""
    failed = pd.concat(
        [
            expl.assign(error=None),
            pd.DataFrame(
                {
                    "latent": [5],
                    "label": ["unstable"],
                    "explanation": [None],
                    "surface_form": [None],
                    "balanced_accuracy": [np.nan],
                    "error": ["HTTP 503 after 4 retries"],
                }
            ),
        ],
        ignore_index=True,
    )
    with_failure = asymmetry.summary(_result("some-model", failed))
    assert with_failure["explanation_failures"] == 1 and "HTTP 503" in with_failure["explanation_sentence"]
    assert with_failure["explained_n_unstable"] == 1  # the failed latent is not counted as explained
    assert with_failure["detection_unstable"] == with_endpoint["detection_unstable"]  # nor does it move the score


# --- The study ----------------------------------------------------------------------------------------------------


def test_study_scales_overrides_and_validation():
    smoke, default = asymmetry.study("smoke", "cpu"), asymmetry.study("default", "cpu")
    assert isinstance(smoke.grid, GridStudy) and smoke.grid == grid.study("smoke", "cpu")
    assert (smoke.control_draws, smoke.ce_control_draws, smoke.marginal_per_bin) == (2, 1, 1)
    assert default == AsymmetryStudy(grid.study("default", "cpu"))  # default scale = the dataclass's defaults
    budgets = [asymmetry.study(s, "cpu") for s in ("smoke", "default", "gpu", "paper")]
    for name in ("control_draws", "ce_control_draws", "marginal_per_bin", "marginal_contexts", "explain_per_bin"):
        values = [getattr(b, name) for b in budgets]
        assert values == sorted(values), name  # budgets never shrink with the scale
    assert asymmetry.study("default", control_draws=7, n_top=None).control_draws == 7
    assert asymmetry.study("default", n_top=None).n_top == default.n_top  # None keeps the scale's value
    with pytest.raises(ValueError, match="mass_tolerance"):
        replace(default, mass_tolerance=0)
    with pytest.raises(ValueError, match="mass_tolerance"):
        replace(default, mass_tolerance=1.0)
    with pytest.raises(ValueError, match="ce_control_draws"):
        replace(default, control_draws=2, ce_control_draws=3)
    with pytest.raises(ValueError, match="control_pool"):
        replace(default, control_pool="mine")
    with pytest.raises(ValueError, match="SCALE"):
        asymmetry.study("huge")


# --- With a tiny language model (offline) -------------------------------------------------------------------------

# `tiny_lm` and `tiny_contexts` are fixtures of conftest.py.


def test_sample_per_bin():
    bins = np.array([0, 0, 0, 0.5, 0.5, 1, np.nan, 1, 1, 1])
    out = asymmetry.sample_per_bin(bins, 2, np.random.default_rng(0))
    assert sorted(out) == [0.0, 0.5, 1.0] and all(len(v) == 2 for v in out.values())
    assert all((bins[v] == b).all() for b, v in out.items())
    assert len(asymmetry.sample_per_bin(bins, 2, np.random.default_rng(0), eligible=bins != 0)) == 2


def test_feature_ablation_matches_a_direct_computation(tiny_lm, tiny_contexts):
    """Independent reference: the model run by hand with `x - z_f d_f` at the real positions, the losses and KL
    computed with torch.nn.functional."""
    sae = tiny_sae()
    ids = torch.as_tensor(tiny_contexts, dtype=torch.long)
    valid = torch.from_numpy(valid_positions(tiny_contexts, tiny_lm.pad_id))
    with torch.no_grad():
        acts = tiny_lm.activations(ids, 1)[valid]  # (n, d)
        z = sae.encode(acts)[0]
    context = np.nonzero(valid.numpy())[0]
    counts = (z > 0).sum(0)
    f_hi, f_none = int(counts.argmax()), int(counts.argmin())
    assert counts[f_none] == 0  # this tiny SAE has silent latents
    firing = asymmetry.firing_contexts(sae, acts, context, [f_hi, f_none], seed=0)
    assert set(firing[f_hi]) == set(np.unique(context[(z[:, f_hi] > 0).numpy()])) and len(firing[f_none]) == 0
    df = asymmetry.feature_ablation_effects(
        tiny_lm, tiny_contexts, sae, firing, layer=1, seed=0, n_contexts=2
    ).set_index("feature")
    chosen = asymmetry_latents._choose_contexts(firing, 2, np.random.default_rng(0))[f_hi]
    delta = kl = 0.0
    n_tokens = n_firing = 0
    with torch.no_grad():
        for c in chosen:
            row, m = ids[c : c + 1], valid[c]

            def ablate(act, m=m):
                act = act.clone()
                zf = sae.encode(act[0, m])[0][:, f_hi]
                act[0, m] -= zf[:, None] * sae.W_dec[0, f_hi]
                return act

            clean = F.log_softmax(tiny_lm.logits(row)[0, :-1][m[1:]], -1)
            abl = F.log_softmax(tiny_lm.logits(row, 1, "resid_post", edit=ablate)[0, :-1][m[1:]], -1)
            targets = row[0, 1:][m[1:]]
            delta += float(F.nll_loss(abl, targets, reduction="sum") - F.nll_loss(clean, targets, reduction="sum"))
            kl += float(F.kl_div(abl, clean, log_target=True, reduction="sum"))
            n_tokens += len(targets)
            n_firing += int((z[context == c, f_hi] > 0).sum())
    r = df.loc[f_hi]
    assert r.n_contexts == len(chosen) == 2 and r.n_tokens == n_tokens and r.n_firing == n_firing
    assert r.delta_loss_sum == pytest.approx(delta, rel=1e-3, abs=1e-5) and abs(delta) > 1e-4
    assert r.kl_sum == pytest.approx(kl, rel=1e-3, abs=1e-6) and kl > 0
    assert r.delta_loss_per_firing == pytest.approx(r.delta_loss_sum / r.n_firing)
    # A latent that never fires is never ablated and changes nothing.
    assert df.loc[f_none].n_contexts == 0 and df.loc[f_none].delta_loss_sum == 0
    assert np.isnan(df.loc[f_none].delta_loss_per_firing)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2", n_layers=3, d=32))


def _tiny_study(folder, **kw) -> AsymmetryStudy:
    g = tiny_grid_study(folder, layers=(2,), sizes=(48,), n_ce_contexts=2, thresholds=(0.5,))
    base = dict(
        control_draws=2,
        ce_control_draws=1,
        marginal_per_bin=2,
        marginal_contexts=1,
        n_top=4,
        top_max_tokens=None,
        n_random=50,
        explain_per_bin=1,
    )
    return AsymmetryStudy(g, **(base | kw))


@pytest.mark.slow
def test_run_end_to_end_on_a_tiny_grid_and_from_the_cache(tiny_folder, monkeypatch):
    from saelib import masking, metrics
    from saelib.lm import interp

    monkeypatch.delenv("SAELIB_EXPLAINER_BASE_URL", raising=False)
    study = _tiny_study(tiny_folder)
    result = asymmetry.run(study)
    split, scores = grid.score_entry(grid.reference_study(study.grid), result.entry)  # the reference SAEs
    cuts = result.cuts
    assert len(cuts) == 2 + 2 * 2 * (1 + 2 * study.control_draws)  # full, none; per group 2 cuts + 2x2 controls
    assert cuts.ev.notna().all() and cuts.ce_loss_score.notna().eq(cuts.draw < study.ce_control_draws).all()
    full = cuts[cuts.cut == "full SAE"].iloc[0]
    # Keeping every latent reproduces chapter 1's whole-SAE scores (seed 0 is the only seed spliced).
    assert full.ev == pytest.approx(np.mean(scores["explained_variance"]), abs=2e-3)
    assert full.ce_loss_score == pytest.approx(scores["ce"]["ce_loss_score"][0], rel=1e-4)
    assert full.mass_share == pytest.approx(1.0)
    alive = int((split.label != DEAD).sum())
    assert len(result.latents) == alive and result.by_label.latents.sum() == alive
    assert result.by_label.mass_share.sum() == pytest.approx(1.0, abs=1e-5)
    m = result.marginal
    assert (m.seed == 0).all() and len(m) == sum(
        min(2, int((split.stability[0] == v).sum())) for v in np.unique(split.stability[0][~split.stability[0].isnan()])
    )
    np.testing.assert_allclose(m.delta_loss_per_token, m.delta_loss_per_firing.fillna(0) * m.frequency)
    assert (result.triggers.seed == 0).all() and result.n_top_rows > 0 and result.explainer is None
    assert len(result.explanations) == 0
    s = asymmetry.summary(result)
    assert all(type(v) in (int, float, str) for v in s.values()) and s["n_seeds"] == study.grid.reference_seeds
    verdicts = [r.verdict for r in asymmetry.claims(s)]
    assert set(verdicts) <= set(common.VERDICTS) and verdicts[8] == common.NOT_MEASURED
    # No stable latent in this tiny grid: the paper's masking is not measured (its rows say so), firing rates are.
    assert not (split.label == STABLE).any() and result.masking is None and s["mask_n"] == 0
    assert verdicts[9] == verdicts[10] == common.NOT_MEASURED
    assert result.firing is not None and result.firing["unstable"]["n"] == int((split.label == UNSTABLE).sum())
    assert s["firing_median_pct_unstable"] == pytest.approx(s["frequency_median_pct_unstable"])  # two routes
    # A second run reads every step from the cache.
    for mod, fn in (
        (metrics, "feature_activation_stats"),
        (metrics, "masked_explained_variance"),
        (masking, "masking_effects"),
        (splice, "masked_spliced_ce"),
        (asymmetry, "feature_ablation_effects"),
        (interp, "top_activations"),
    ):
        monkeypatch.setattr(mod, fn, lambda *a, _fn=fn, **k: pytest.fail(f"recomputed {_fn}"))
    again = asymmetry.run(study)
    pd.testing.assert_frame_equal(again.cuts, result.cuts)
    pd.testing.assert_frame_equal(again.marginal, result.marginal)


@pytest.mark.slow
def test_run_measures_the_papers_masking_when_both_groups_exist(tiny_folder, monkeypatch):
    """The tiny grid has no stable latent; relabel a few alive latents of every seed stable so that N >= 1."""
    monkeypatch.delenv("SAELIB_EXPLAINER_BASE_URL", raising=False)
    load_split = grid.load_split

    def relabelled(*args, **kwargs):
        split = load_split(*args, **kwargs)
        label = split.label.clone()
        alive = (label != DEAD).nonzero()
        for s in range(label.shape[0]):
            label[s, alive[alive[:, 0] == s, 1][:3]] = STABLE
        return split._replace(label=label)

    monkeypatch.setattr(grid, "load_split", relabelled)
    study = _tiny_study(tiny_folder, seed=3, mask_draws=2, mask_ce_seeds=2)
    result = asymmetry.run(study)
    label = result.split.label
    S = label.shape[0]
    mk = result.masking
    assert mk is not None and len(mk) == 2 * 3 * study.mask_draws * S
    s = asymmetry.summary(result)
    assert s["mask_n"] == 3 and s["mask_n_unstable"] == 12 and s["mask_ce_seeds"] == "0, 1"
    # EV on every seed and draw; CE on the first ce_control_draws draws of the first mask_ce_seeds seeds.
    assert mk.ev_loss.notna().all()
    assert mk.ce_loss.notna().eq((mk.draw < study.ce_control_draws) & (mk.seed < 2)).all()
    assert (mk[(mk.group == "stable") & (mk.removed == "group")].n_removed == 3).all()
    # Removing every stable latent (N = 3 of 3) loses what the chapter's own "remove stable" cut loses.
    full, removed = result.cuts.set_index("cut").ev[["full SAE", "remove stable"]]
    stable = mk[(mk.group == "stable") & (mk.removed == "group")]
    assert stable.ev_loss.mean() == pytest.approx(full - removed, abs=1e-5)
    verdicts = [r.verdict for r in asymmetry.claims(s)]
    assert verdicts[9] != common.NOT_MEASURED and verdicts[10] != common.NOT_MEASURED
    assert result.firing is not None and result.firing["stable"]["n"] == 3 * S
