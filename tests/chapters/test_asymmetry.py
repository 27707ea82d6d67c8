import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_sae

from saelib.chapters import asymmetry
from saelib.chapters.asymmetry import AsymmetryConfig, asymmetry_config
from saelib.lm import splice
from saelib.stability import DEAD, STABLE, UNSTABLE


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
    cfg = AsymmetryConfig(control_draws=3, mass_tolerance=0.05)
    cuts = asymmetry.feature_cuts(label, mass, cfg)
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
    # The stable group holds most of the mass here, so its mass control falls back to all alive latents.
    assert set(t[(t.group == "stable") & (t.control == "mass")].pool) <= {"all", "complement", "all+complement"}
    row = t[t.cut == "keep stable"].iloc[0]
    assert row.mass_share == pytest.approx(float(((mass * (label == STABLE)).sum(-1) / mass.sum(-1)).mean()))


def test_feature_cuts_fall_back_to_all_latents_when_the_complement_is_too_light():
    label = torch.full((1, 20), STABLE, dtype=torch.int8)
    label[0, :4] = UNSTABLE
    mass = torch.ones(1, 20, dtype=torch.float64)
    cuts = asymmetry.feature_cuts(label, mass, AsymmetryConfig(control_draws=1, ce_control_draws=1))
    t = cuts.table
    assert t[(t.group == "stable") & (t.control != "group")].pool.eq("all").all()
    assert t[(t.group == "unstable") & (t.control != "group")].pool.eq("complement").all()


def test_sample_per_bin():
    bins = np.array([0, 0, 0, 0.5, 0.5, 1, np.nan, 1, 1, 1])
    out = asymmetry.sample_per_bin(bins, 2, np.random.default_rng(0))
    assert sorted(out) == [0.0, 0.5, 1.0] and all(len(v) == 2 for v in out.values())
    assert all((bins[v] == b).all() for b, v in out.items())
    assert len(asymmetry.sample_per_bin(bins, 2, np.random.default_rng(0), eligible=bins != 0)) == 2


def test_asymmetry_summary_and_claims_on_known_numbers():
    cuts = pd.DataFrame({
        "cut": ["full SAE", "no latent", "keep stable", "remove stable", "keep mass-matched to stable",
                "keep unstable", "remove unstable", "keep mass-matched to unstable"],
        "op": ["keep", "keep", "keep", "remove", "keep", "keep", "remove", "keep"],
        "group": ["all", "none", "stable", "stable", "stable", "unstable", "unstable", "unstable"],
        "control": ["group", "group", "group", "group", "mass", "group", "group", "mass"],
        "draw": 0, "mass_share": [1, 0, 0.7, 0.3, 0.7, 0.05, 0.95, 0.05],
        "ev": [0.9, -0.1, 0.8, 0.2, 0.6, 0.05, 0.88, 0.06],
    })
    latents = pd.DataFrame({"label": ["stable", "stable", "unstable"], "frequency": [0.1, 0.3, 0.001]})
    s = asymmetry.asymmetry_summary(cuts, latents)
    assert s["ev_full"] == 0.9 and s["ev_none"] == -0.1 and s["ev_keep_stable"] == 0.8
    assert s["ev_keep_mass_stable"] == 0.6 and s["ev_remove_unstable"] == 0.88
    assert s["frequency_median_stable"] == pytest.approx(0.2) and s["share_unstable"] == pytest.approx(1 / 3)
    claims = asymmetry.asymmetry_claims(s).set_index("measured as")
    assert claims.loc["EV keeping only the group", "holds"] == "yes"
    assert claims.loc["EV keeping the group minus its mass-matched control", "holds"] == "yes"  # 0.2 > -0.01
    assert claims.loc["median firing frequency", "holds"] == "yes"
    assert claims.loc["mean share of top activations on one token", "holds"] == "not measured"
    flipped = asymmetry.asymmetry_claims(s | {"frequency_median_unstable": 1.0}).set_index("measured as")
    assert flipped.loc["median firing frequency", "holds"] == "no"
    no_stable = asymmetry.asymmetry_claims(s | {"share_stable": 0.0})
    assert (no_stable.holds == "not measured").all() and no_stable.stable.isna().all()  # an empty group tests nothing


def test_asymmetry_config_scales_and_validation():
    assert asymmetry_config("smoke").control_draws < asymmetry_config("default").n_top + 100
    assert asymmetry_config("default", n_top=None, control_draws=7).control_draws == 7
    with pytest.raises(ValueError, match="mass_tolerance"):
        AsymmetryConfig(mass_tolerance=0)
    with pytest.raises(ValueError, match="ce_control_draws"):
        AsymmetryConfig(control_draws=2, ce_control_draws=3)
    with pytest.raises(ValueError, match="SCALE"):
        asymmetry_config("huge")


# --- With a tiny language model (offline) ---------------------------------------------------------------------------


# `tiny_lm` and `tiny_contexts` are fixtures of conftest.py.


def test_feature_ablation_matches_a_spliced_reference(tiny_lm, tiny_contexts):
    """Independent reference: splice_ce with a mask dropping one latent and the reconstruction error kept."""
    from saelib.lm import activations as A

    sae = tiny_sae()
    ids = torch.as_tensor(tiny_contexts, dtype=torch.long)
    valid = torch.from_numpy(A.valid_positions(tiny_contexts, tiny_lm.pad_id))
    acts = tiny_lm.activations(ids, 1)[valid]  # (n, d)
    context = np.nonzero(valid.numpy())[0]
    with torch.no_grad():
        z = sae.encode(acts)[0]
    counts = (z > 0).sum(0)
    f_hi, f_none = int(counts.argmax()), int(counts.argmin()) if counts.min() == 0 else None
    firing = asymmetry.firing_contexts(sae, acts, context, [f_hi] + ([f_none] if f_none is not None else []), seed=0)
    assert set(firing[f_hi]) == set(np.unique(context[(z[:, f_hi] > 0).numpy()]))
    df = asymmetry.feature_ablation_effects(tiny_lm, tiny_contexts, sae, firing, layer=1, seed=0, n_contexts=2,
                                          batch_size=2).set_index("feature")
    chosen = asymmetry._choose_contexts(firing, 2, np.random.default_rng(0))[f_hi]
    keep = torch.ones(2, 48, dtype=torch.bool)
    keep[0, f_hi] = False
    ref = splice.spliced_ce(tiny_lm, tiny_contexts[chosen], splice.sae_reconstructor(sae, keep, keep_error=True),
                            layer=1)
    r = df.loc[f_hi]
    assert r.n_contexts == len(chosen) and r.n_tokens == ref.n_tokens
    assert r.delta_loss_sum == pytest.approx(float(ref.delta_loss[0]) * ref.n_tokens, rel=1e-3, abs=1e-5)
    assert r.kl_sum == pytest.approx(float(ref.kl_div[0]) * ref.n_tokens, rel=1e-3, abs=1e-6)
    assert r.n_firing == int((z[np.isin(context, chosen), f_hi] > 0).sum())
    assert r.delta_loss_per_firing == pytest.approx(r.delta_loss_sum / r.n_firing)
    if f_none is not None:  # a latent that never fires changes nothing
        assert df.loc[f_none].n_contexts == 0 and df.loc[f_none].delta_loss_sum == 0
        assert np.isnan(df.loc[f_none].delta_loss_per_firing)
