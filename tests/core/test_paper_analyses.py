"""The paper's own analyses (issue 14): ER/d, top-subspace transfer, masking as the paper does it, firing rates and
predicting stability from one seed, against known answers."""

import math

import pytest
import torch

from saelib import masking, predict
from saelib import subspace as sp
from saelib.config import SAEConfig
from saelib.metrics import explained_variance
from saelib.sae import SAE
from saelib.stability import DEAD, INTERMEDIATE, STABLE, UNSTABLE

# --- Normalised effective rank ------------------------------------------------------------------------------------


def test_effective_rank_of_orthonormal_and_rank_one_sets():
    q = sp.random_subspace(8, 8, torch.Generator().manual_seed(0))
    assert sp.normalized_effective_rank(q) == pytest.approx(1.0)
    assert sp.normalized_effective_rank(q[:3]) == pytest.approx(1.0)  # n < d: divided by n
    signs = torch.tensor([1.0, -1.0] * 6).unsqueeze(1)
    rank_one = q[:1].expand(12, 8) * signs  # 12 copies of one direction, either sign
    assert sp.normalized_effective_rank(rank_one) == pytest.approx(1 / 8)
    assert math.isnan(sp.normalized_effective_rank(torch.zeros(0, 8)))


def test_effective_rank_against_its_definition_and_the_control():
    v = torch.randn(20, 6, dtype=torch.float64)
    s = torch.linalg.svdvals(sp.unit_rows(v))
    p = s / s.sum()
    assert sp.normalized_effective_rank(v) == pytest.approx(float(torch.exp(-(p * p.log()).sum())) / 6)
    # the control: subsets of an orthonormal set are orthonormal; drawn only from the candidates
    q = sp.random_subspace(10, 10, torch.Generator().manual_seed(1))
    candidates = torch.arange(10) < 6
    ctrl = sp.random_subset_effective_rank(q, candidates, 4, n_draws=5)
    torch.testing.assert_close(ctrl, torch.ones(5, dtype=torch.float64))
    mixed = torch.cat([q[:6], q[:1].expand(4, 10)])  # the rank-1 rows are not candidates
    assert sp.random_subset_effective_rank(mixed, candidates, 6, n_draws=3).min() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="size"):
        sp.random_subset_effective_rank(q, candidates, 7)


# --- Top-subspace transfer ----------------------------------------------------------------------------------------


def test_transfer_of_identical_and_rotated_seeds_is_one():
    g = torch.Generator().manual_seed(2)
    basis = sp.random_subspace(12, 3, g)  # a 3-d subspace of R^12
    a = torch.randn(20, 3, generator=g) @ basis  # (20, 12) inside it
    b = torch.randn(15, 3, generator=g) @ basis  # another seed's latents, other directions, same subspace
    torch.testing.assert_close(sp.top_subspace_transfer(a, a, 3), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(sp.top_subspace_transfer(a, b, [3]), torch.ones(1, dtype=torch.float64))
    shares = sp.top_subspace_transfer(a, a, [1, 2, 3])
    assert (shares.diff() > 0).all()
    # identical seeds at rank r capture their own top-r energy share
    s2 = torch.linalg.svdvals(sp.unit_rows(a.double())).pow(2)
    torch.testing.assert_close(shares, s2.cumsum(0)[:3] / s2.sum())


def test_transfer_orthogonal_and_random_controls():
    q = sp.random_subspace(16, 16, torch.Generator().manual_seed(3))
    a, b = torch.randn(10, 4) @ q[:4], torch.randn(10, 4) @ q[4:8]
    assert float(sp.top_subspace_transfer(a, b, 4)) == pytest.approx(0.0, abs=1e-10)
    rand = sp.random_subspace_transfer(b, [2, 8], n_draws=400)
    assert rand.shape == (400, 2)
    torch.testing.assert_close(rand.mean(0), torch.tensor([2 / 16, 8 / 16], dtype=torch.float64), atol=0.02, rtol=0)
    alive = torch.ones(10, dtype=torch.bool)
    ctrl = sp.random_latent_transfer(a, alive, 10, a, alive, 10, [4], n_draws=3)
    torch.testing.assert_close(ctrl, torch.ones(3, 1, dtype=torch.float64))  # all of a against all of a
    with pytest.raises(ValueError, match="ranks"):
        sp.top_subspace_transfer(a, b, 5)  # a spans only 4 directions


def test_group_drivers_per_seed_and_per_pair():
    g = torch.Generator().manual_seed(4)
    q = sp.random_subspace(16, 16, g)
    S, F = 3, 40
    # per seed: latents 0-9 inside one shared 2-d plane (an "unstable" group in a reproducible subspace), the rest
    # random directions
    dirs = torch.randn(S, F, 16, generator=g)
    dirs[:, :10] = torch.randn(S, 10, 2, generator=g) @ q[:2]
    dirs = sp.unit_rows(dirs)
    group = torch.zeros(S, F, dtype=torch.bool)
    group[:, :10] = True
    group[2] = False  # a seed without the group is left out
    alive = torch.ones(S, F, dtype=torch.bool)
    er = sp.group_effective_rank(dirs, group, alive, n_draws=5)
    assert [r["seed"] for r in er] == [0, 1] and er[0]["n"] == 10
    assert er[0]["er_d"] <= 2 / 10 + 1e-9  # rank 2 at most: ER/d <= 2 / min(10, 16)
    assert er[0]["control_mean"] > 0.5  # random subsets of the seed's latents are spread out
    rows = sp.group_transfer(dirs, group, alive, [1, 2, 3])
    assert {(r["source"], r["target"]) for r in rows} == {(0, 1), (1, 0)}
    assert {r["r"] for r in rows} == {1, 2}  # r = 3 exceeds the group's span
    at2 = [r for r in rows if r["r"] == 2]
    for r in at2:
        assert r["transfer"] == pytest.approx(1.0)
        assert r["random_subspace"] < 0.5 and r["random_latents"] < r["transfer"]
        assert r["random_subspace"] < r["random_source"] < r["transfer"]


# --- Masking --------------------------------------------------------------------------------------------------------


def _planted(S=2, d=8, n=3000, seed=0):
    """A ReLU SAE whose decoder rows are an orthonormal basis per seed and whose encoder is its transpose, and data
    `x = c @ Q_0` with sparse non-negative codes `c`: seed 0 reconstructs x exactly, and removing latent i removes
    exactly `sum_t c_ti^2` of the squared error budget."""
    g = torch.Generator().manual_seed(seed)
    sae = SAE(SAEConfig(d_in=d, d_sae=d, variant="relu", n_seeds=S)).eval()
    qs = torch.stack([sp.random_subspace(d, d, g) for _ in range(S)])  # (S, d, d)
    with torch.no_grad():
        sae.W_dec.copy_(qs)
        sae.W_enc.copy_(qs.transpose(1, 2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    scale = torch.linspace(0.5, 3.0, d)  # latents of different weights
    c = (torch.rand(n, d, generator=g) < 0.3) * torch.rand(n, d, generator=g) * scale  # (n, d) >= 0
    return sae, c @ qs[0], c


def test_masking_known_answer_on_a_planted_sae():
    sae, x, c = _planted()
    total = (x.double() - x.double().mean(0)).pow(2).sum()
    share = c.double().pow(2).sum(0) / total  # (d,) each latent's share: what removing it costs seed 0
    removed = torch.zeros(4, 2, 8, dtype=torch.bool)
    removed[1, :, 2] = True
    removed[2, :, [0, 5, 7]] = True
    removed[3] = True
    eff = masking.masking_effects(sae, x.split(700), removed)
    assert eff.ev_full[0] == pytest.approx(1.0, abs=1e-5)
    # orthogonal latents: the losses add up, and removing all of them loses sum ||x||^2 / total
    expected = torch.stack([torch.tensor(0.0).double(), share[2], share[[0, 5, 7]].sum(), share.sum()])
    torch.testing.assert_close(eff.ev_loss[:, 0].double(), expected, atol=1e-4, rtol=0)
    # against the dense reference, for the other seed too
    for m in range(4):
        ref = explained_variance(x, masking.reconstruct_without(sae, x, removed[m]))
        torch.testing.assert_close(eff.ev[m], ref, atol=1e-5, rtol=0)


def _labels(S=3, F=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.full((S, F), INTERMEDIATE, dtype=torch.int8)
    label[:, :10] = STABLE
    label[:, 10:50] = UNSTABLE
    label[:, 58:] = DEAD
    mass = torch.rand(S, F, generator=g).double() + 0.1
    mass[:, 58:] = 0
    return label, mass


def test_removal_cuts_counts_and_controls():
    label, mass = _labels()
    assert masking.largest_n(label) == 10
    cuts = masking.removal_cuts(label, mass, 5, draws=3, mass_tolerance=0.05)
    M = 1 + 2 * 3 * 3
    assert cuts.removed.shape == (M, 3, 60) and len(cuts.cut) == M and cuts.n == 5
    assert cuts.cut[0] == "full" and not cuts.removed[0].any()
    counts = cuts.removed.sum(-1)  # (M, S)
    for m, (group, control) in enumerate(zip(cuts.group, cuts.control)):
        rem = cuts.removed[m]
        assert not (rem & (label == DEAD)).any()  # dead latents are never drawn
        if group == "none":
            continue
        size = 5 if group == "stable" else 20
        code = STABLE if group == "stable" else UNSTABLE
        if control == "group":
            assert (counts[m] == size).all() and (label[rem] == code).all()
            target = cuts.mass_removed[m]
        elif control == "count":
            assert (counts[m] == size).all()
        else:  # the mass-matched control follows the group cut of its draw
            assert ((cuts.mass_removed[m] - target).abs() <= 0.05 * target + 1e-12).all()
    with pytest.raises(ValueError, match="n=11"):
        masking.removal_cuts(label, mass, 11)


def test_complement_pool_falls_back_to_all_alive_latents():
    label, mass = _labels()
    cuts = masking.removal_cuts(label, mass, 5, draws=2, pool="complement")
    for m, (group, control) in enumerate(zip(cuts.group, cuts.control)):
        if control == "count" and group == "stable":  # 48 alive latents outside the 10 stable: enough for 5
            assert not (cuts.removed[m] & (label == STABLE)).any()
        if control == "count" and group == "unstable":  # 18 outside the 40 unstable: too few for 20, so all alive
            assert (cuts.removed[m] & (label == UNSTABLE)).any()
    heavy = mass.clone()
    heavy[:, :10] = 100.0  # the stable latents outweigh the rest: their mass control must draw from them too
    cuts = masking.removal_cuts(label, heavy, 5, draws=1, pool="complement", mass_tolerance=0.2)
    m = cuts.cut.index("mass-matched to N stable")
    assert (cuts.removed[m] & (label == STABLE)).any()
    with pytest.raises(ValueError, match="pool"):
        masking.removal_cuts(label, mass, 5, pool="everything")


def test_masking_effects_with_a_ce_callable_and_summary():
    sae, x, _ = _planted(S=2)
    label = torch.tensor([[STABLE] * 2 + [UNSTABLE] * 6] * 2, dtype=torch.int8)
    mass = torch.ones(2, 8, dtype=torch.float64)
    cuts = masking.removal_cuts(label, mass, 1, ratio=4, draws=2, mass_tolerance=0.0)
    calls = []

    def ce_score(keep):  # a stand-in for the spliced CE-loss score: the share of latents kept
        calls.append(keep.shape)
        return keep.double().mean(-1)

    eff = masking.masking_effects(sae, x, cuts.removed, ce_score=ce_score)
    assert calls == [(1 + len(cuts.cut), 2, 8)]
    assert eff.ce_loss is not None
    torch.testing.assert_close(eff.ce_loss, cuts.removed.double().mean(-1))
    rows = masking.masking_summary(cuts, eff)
    by_cut = {r["cut"]: r for r in rows}
    assert list(by_cut)[:4] == ["full", "remove N stable", "count-matched to N stable", "mass-matched to N stable"]
    assert by_cut["remove 4N unstable"]["n_removed"] == 4
    assert by_cut["remove 4N unstable"]["ce_loss"] == pytest.approx(0.5)
    assert by_cut["full"]["ev_loss"] == 0


def test_firing_rate_summary():
    freq = torch.tensor([[0.01, 0.02, 0.03, 0.001, 0.003, 0.5], [0.04, 0.05, 0.06, 0.002, 0.004, 0.0]])
    label = torch.tensor([[STABLE] * 3 + [UNSTABLE] * 2 + [INTERMEDIATE], [STABLE] * 3 + [UNSTABLE] * 2 + [DEAD]])
    out = masking.firing_rate_summary(freq, label)
    assert out["stable"]["n"] == 6 and out["unstable"]["n"] == 4
    assert out["stable"]["median"] == pytest.approx(0.035)
    assert out["stable"]["mean"] == pytest.approx(0.035)
    assert out["unstable"]["median"] == pytest.approx(0.0025)
    assert out["stable"]["median_per_seed"] == pytest.approx(0.035)  # medians 0.02 and 0.05
    assert math.isnan(masking.firing_rate_summary(freq[0], torch.full((6,), STABLE))["unstable"]["median"])


# --- Predicting stability -------------------------------------------------------------------------------------------


def _synthetic_latents(S=3, F=600, d=16, seed=0):
    """Stable latents lean towards one direction and fire more often; unstable ones lean the other way."""
    g = torch.Generator().manual_seed(seed)
    label = torch.where(torch.rand(S, F, generator=g) < 0.4, STABLE, UNSTABLE).to(torch.int8)
    stable = (label == STABLE).double()
    lean = torch.zeros(d, dtype=torch.float64)
    lean[0] = 1.0
    dec = torch.randn(S, F, d, generator=g, dtype=torch.float64) * 0.5 + (2 * stable - 1).unsqueeze(-1) * lean
    freq = 10 ** (-3.5 + stable + 0.3 * torch.randn(S, F, generator=g, dtype=torch.float64))
    mean_act = 1 + torch.rand(S, F, generator=g, dtype=torch.float64)
    enc_norm = 1 + torch.rand(S, F, generator=g, dtype=torch.float64)
    return predict.latent_features(sp.unit_rows(dec), freq, mean_act, enc_norm), label


def test_classifier_recovers_planted_labels():
    feats, label = _synthetic_latents()
    label[1, :50] = INTERMEDIATE  # left out of training and scoring
    rows = predict.predict_stability(feats, label, train_seed=0)
    by = {(r["model"], r["test_seed"]): r for r in rows}
    assert set(by) == {(m, t) for m in ("decoder", "stats", "frequency", "majority") for t in (1, 2)}
    for model in ("decoder", "stats", "frequency"):
        assert by[model, 1]["f1"] > 0.9 and by[model, 2]["f1"] > 0.9
    assert by["decoder", 1]["n_test"] == 550
    share = by["majority", 2]["positive_share"]  # unstable (positive) is the majority: always predicted
    assert by["majority", 2]["f1"] == pytest.approx(2 * share / (1 + share))
    stable_rows = predict.predict_stability(feats, label, positive=STABLE)
    assert {r["f1"] for r in stable_rows if r["model"] == "majority"} == {0.0}


def test_classifier_near_chance_on_shuffled_labels():
    feats, label = _synthetic_latents(F=1000)
    g = torch.Generator().manual_seed(5)
    shuffled = torch.stack([row[torch.randperm(len(row), generator=g)] for row in label])
    rows = predict.predict_stability(feats, shuffled, train_seed=0)
    for r in rows:
        if r["model"] != "majority":
            assert abs(r["macro_f1"] - 0.5) < 0.08, r


def test_labels_per_seed_match_the_anchor_estimator():
    from saelib.stability import anchor_stability

    g = torch.Generator().manual_seed(6)
    shared = sp.unit_rows(torch.randn(5, 12, generator=g))
    dirs = torch.stack([torch.cat([shared, sp.unit_rows(torch.randn(7, 12, generator=g))]) for _ in range(4)])
    labels = predict.labels_per_seed(dirs)
    assert labels.shape == (4, 12)
    assert (labels[:, :5] == STABLE).all()  # present in every seed
    for s in range(4):
        assert torch.equal(labels[s], anchor_stability(dirs, s).label)


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    feats, label = _synthetic_latents(F=20)
    with pytest.raises(ImportError, match=r"saelib\[analysis\]"):
        predict.predict_stability(feats, label)
