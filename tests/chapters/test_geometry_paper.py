"""Chapter 3's run of the paper's own analyses (`saelib.chapters.geometry_paper`): top-subspace transfer on stacks
whose answer is known (identical seeds, orthogonal seeds, random subspaces at r / d), the stability classifier on
planted labels, the cache, and the summary and verdict rows."""

import math

import numpy as np
import pytest
import torch

from saelib import subspace as sp
from saelib.chapters import common, geometry_paper
from saelib.stability import DEAD, INTERMEDIATE, STABLE, UNSTABLE


def _stack(d=32, S=3, n_unstable=12, n_stable=10, n_other=6, r=6, same=True, seed=0):
    """Decoder rows of S seeds: unstable rows in a rank-r subspace (the same rows in every seed when `same`, else a
    separate subspace per seed), random stable and intermediate rows, the last row dead."""
    g = torch.Generator().manual_seed(seed)
    q = sp.random_subspace(d, d, g)
    F = n_unstable + n_stable + n_other
    dirs = torch.randn(S, F, d, generator=g)
    label = torch.full((S, F), INTERMEDIATE, dtype=torch.int8)
    unstable = torch.randn(n_unstable, r, generator=g) @ q[:r]
    for s in range(S):
        dirs[s, :n_unstable] = unstable if same else torch.randn(n_unstable, r, generator=g) @ q[r * s : r * (s + 1)]
        label[s, :n_unstable] = UNSTABLE
        label[s, n_unstable : n_unstable + n_stable] = STABLE
        label[s, -1] = DEAD
    return sp.unit_rows(dirs), label


def test_transfer_of_identical_seeds_is_one_at_full_rank_and_equals_the_ceiling():
    d, r = 32, 6
    dirs, label = _stack(d=d, r=r)
    cfg = geometry_paper.PaperConfig(ranks=(1, 2, 4, 6, 8, 64), n_draws=200)
    t = geometry_paper.transfer_table(dirs, label, cfg, anchor=0)
    assert list(t.columns) == geometry_paper.TRANSFER_COLUMNS
    assert sorted(set(zip(t.source, t.target, strict=True))) == [(0, 1), (0, 2)]
    assert sorted(set(t.r)) == [1, 2, 4, 6]  # above the source's span (rank 6) and above d: left out
    np.testing.assert_allclose(t.transfer, t.ceiling, atol=1e-6)  # s's subspace is t's own
    assert t[t.r == r].transfer.min() == pytest.approx(1.0, abs=1e-6)
    assert (t.n_source == 12).all() and (t.n_target == 12).all()
    # a random r-dimensional subspace holds r / d of any set's energy on average
    np.testing.assert_allclose(t.random_subspace, t.r / d, atol=0.03)
    np.testing.assert_allclose(t.expected_random, t.r / d)
    # random alive latents: between the random subspace and the shared low-rank span
    at = t[t.r == 4]
    assert (at.transfer > at.random_latents).all() and (at.random_latents > at.random_subspace).all()
    # random latents of s into t's very group: below the group's own subspace, above a random one
    assert (at.transfer > at.random_source).all() and (at.random_source > at.random_subspace).all()


def test_transfer_of_orthogonal_seeds_is_zero_and_ceiling_one_beyond_the_span():
    dirs, label = _stack(same=False, r=4)
    cfg = geometry_paper.PaperConfig(ranks=(2, 4), pairs="all", n_draws=2)
    t = geometry_paper.transfer_table(dirs, label, cfg)
    assert len(t) == 3 * 2 * 2  # every ordered pair, two ranks
    assert t.transfer.max() < 1e-6
    assert t[t.r == 4].ceiling.min() == pytest.approx(1.0, abs=1e-6)  # the target's own span has rank 4
    by_rank = geometry_paper.transfer_by_rank(t)
    assert list(by_rank.index) == [2, 4] and (by_rank.pairs == 6).all()
    assert by_rank.loc[4, "unstable latents"] == pytest.approx(0.0, abs=1e-6)
    assert by_rank.loc[4, "r / d"] == pytest.approx(4 / 32)


def test_seed_pairs_and_config_errors():
    assert geometry_paper.seed_pairs(4, 2) == [(2, 0), (2, 1), (2, 3)]
    assert len(geometry_paper.seed_pairs(4, 0, "all")) == 12
    with pytest.raises(ValueError, match="pairs"):
        geometry_paper.seed_pairs(4, 0, "some")
    with pytest.raises(ValueError, match="anchor"):
        geometry_paper.seed_pairs(4, 4)
    with pytest.raises(ValueError, match="ranks"):
        geometry_paper.PaperConfig(ranks=(0,))
    with pytest.raises(ValueError, match="pairs"):
        geometry_paper.PaperConfig(pairs="most")
    with pytest.raises(ValueError, match="n_draws"):
        geometry_paper.PaperConfig(n_draws=0)
    with pytest.raises(ValueError, match="class_weight"):
        geometry_paper.PaperConfig(class_weight="auto")
    dirs, label = _stack()
    with pytest.raises(ValueError, match="label"):
        geometry_paper.transfer_table(dirs, label[:, 1:])


def _planted(S=3, F=240, d=16, seed=0):
    """Unstable latents lean along a direction of the decoder space, stable ones away from it; frequencies are
    drawn independently of the label (the frequency-only baseline has nothing to read)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.where(torch.rand(S, F, generator=g) < 0.4, UNSTABLE, STABLE).to(torch.int8)
    dirs = torch.randn(S, F, d, generator=g)
    dirs[..., 0] += torch.where(label == UNSTABLE, 2.0, -2.0)
    freq = torch.rand(S, F, generator=g) * 0.01 + 1e-4
    return sp.unit_rows(dirs), label, freq, torch.rand(S, F, generator=g), torch.rand(S, F, generator=g)


def test_prediction_recovers_planted_labels_beside_its_baselines():
    dirs, label, freq, act, enc = _planted()
    result = geometry_paper.analyze(dirs, label, freq, act, enc, geometry_paper.PaperConfig(ranks=(1,)))
    p = result.prediction
    assert list(p.columns) == geometry_paper.PREDICTION_COLUMNS
    assert set(p.positive) == {"unstable", "stable"} and set(p.test_seed) == {1, 2} and (p.train_seed == 0).all()
    s = geometry_paper.summary(result)
    assert s["f1_decoder"] > 0.9 and s["f1_stable_decoder"] > 0.9 and s["f1_decoder_min"] > 0.9
    assert s["f1_frequency"] < 0.75 and s["f1_stats"] < 0.75  # nothing planted there
    assert s["f1_majority"] == 0.0  # stable is the larger class: the majority never predicts unstable
    assert (s["cmp_f1_frequency"], s["cmp_f1_reported"]) == ("above", "above")
    assert s["f1_sentence"].startswith("The decoder direction carries information")
    assert s["predict_n_train"] == int(((label[0] == STABLE) | (label[0] == UNSTABLE)).sum())
    assert s["predict_unstable_share"] == pytest.approx(float((label[1:] == UNSTABLE).float().mean()), abs=1e-6)
    table = geometry_paper.prediction_by_model(p)
    assert list(table.index) == list(geometry_paper.MODELS.values())
    assert table.loc["decoder vector", "F1 (unstable)"] == pytest.approx(s["f1_decoder"])
    rows = {c.claim[:20]: c for c in geometry_paper.claims(s)}
    assert rows["A logistic regressio"].verdict == common.HOLDS
    assert (
        "0.67-0.73" in rows["A logistic regressio"].paper and "secondary source" in rows["A logistic regressio"].paper
    )
    assert s["macro_f1_stats"] < 0.65 and s["macro_f1_frequency"] < 0.65  # noise: near chance


def test_prediction_near_chance_on_shuffled_labels():
    dirs, label, freq, act, enc = _planted(F=400)
    g = torch.Generator().manual_seed(1)
    shuffled = torch.stack([row[torch.randperm(len(row), generator=g)] for row in label])
    s = geometry_paper.summary(geometry_paper.analyze(dirs, shuffled, freq, act, enc))
    assert s["macro_f1_decoder"] < 0.65


def test_prediction_is_empty_without_both_classes_at_the_anchor():
    dirs, label, freq, act, enc = _planted()
    label[0] = STABLE  # nothing unstable to learn from
    result = geometry_paper.analyze(dirs, label, freq, act, enc, geometry_paper.PaperConfig(ranks=(1,)))
    assert result.prediction.empty and result.transfer.empty  # and no unstable source to transfer from
    s = geometry_paper.summary(result)
    assert math.isnan(s["f1_decoder"]) and s["predict_n_train"] == 0 and s["transfer_r"] == 0
    assert s["cmp_f1_reported"] == s["cmp_transfer_latents"] == "not comparable here"
    assert all(type(v) in (float, int, str) for v in s.values())
    assert {c.verdict for c in geometry_paper.claims(s)} == {common.NOT_MEASURED}
    assert geometry_paper.prediction_by_model(result.prediction).empty
    assert geometry_paper.summary(geometry_paper.empty_result(16)).keys() == s.keys()


def test_paper_tables_are_cached_with_their_parameters(monkeypatch, _artifacts_in_tmp):
    dirs, label, freq, act, enc = _planted(F=60)
    cfg = geometry_paper.PaperConfig(ranks=(1, 2), n_draws=2)
    first = geometry_paper.paper_tables(dirs, label, freq, act, enc, cfg, name="planted")
    assert len(list((_artifacts_in_tmp / "geometry").glob("planted-paper-*/result.pt"))) == 1
    real = geometry_paper.analyze
    monkeypatch.setattr(geometry_paper, "analyze", lambda *a, **k: pytest.fail("recomputed a cached result"))
    again = geometry_paper.paper_tables(dirs, label, freq, act, enc, cfg, name="planted")
    assert again.transfer.equals(first.transfer) and again.prediction.equals(first.prediction)
    monkeypatch.setattr(geometry_paper, "analyze", real)
    geometry_paper.paper_tables(dirs, label, freq, act, enc, cfg, anchor=1, name="planted")  # a new key
    other = geometry_paper.PaperConfig(ranks=(1, 2), n_draws=3)
    geometry_paper.paper_tables(dirs, label, freq, act, enc, other, name="planted")
    assert len(list((_artifacts_in_tmp / "geometry").glob("planted-paper-*/result.pt"))) == 3


def _summary(**values):
    base = {
        "transfer_r": 32,
        "transfer_pairs": 8,
        "transfer_unstable": 0.4,
        "transfer_latents": 0.2,
        "transfer_subspace": 0.05,
        "transfer_n_beat": 8,
        "transfer_sign_p": 0.5**8,
        "transfer_source": 0.3,
        "transfer_n_beat_source": 7,
        "transfer_source_sign_p": 9 * 0.5**8,
        "f1_decoder": 0.7,
        "f1_stats": 0.5,
        "f1_frequency": 0.6,
        "f1_majority": 0.0,
        "predict_anchor": 0,
    }
    return base | values


def test_claims_flip_with_the_numbers():
    rows = geometry_paper.claims(_summary())
    transfer, source, decoder, stats = rows
    assert (
        transfer.verdict == common.HOLDS
        and transfer.ours == "0.400 vs 0.200 vs 0.050; above in 8 of 8 pairs (p = 0.0039)"
    )
    assert "top-32" in transfer.criterion and "8 seed pairs" in transfer.criterion
    assert "transfers" in transfer.paper and "(reported, secondary source)" in transfer.paper
    assert decoder.verdict == common.HOLDS and decoder.ours == "0.700 vs 0.600 (frequency) vs 0.000 (majority)"
    assert stats.verdict == common.DOES_NOT_HOLD and stats.paper == common.NOT_REPORTED
    # random latents above the unstable latents, or a random subspace above random latents: does not hold
    assert geometry_paper.claims(_summary(transfer_latents=0.5))[0].verdict == common.DOES_NOT_HOLD
    assert geometry_paper.claims(_summary(transfer_subspace=0.3))[0].verdict == common.DOES_NOT_HOLD
    # above on average, but in too few pairs to tell from chance (5 of 8: p = 0.36)
    few = _summary(transfer_n_beat=5, transfer_sign_p=geometry_paper.sign_test(5, 8))
    assert geometry_paper.claims(few)[0].verdict == common.DOES_NOT_HOLD
    assert source.verdict == common.HOLDS and source.ours == "0.400 vs 0.300; above in 7 of 8 pairs (p = 0.035)"
    assert geometry_paper.claims(_summary(transfer_source=0.45))[1].verdict == common.DOES_NOT_HOLD
    assert geometry_paper.claims(_summary(transfer_source_sign_p=0.2))[1].verdict == common.DOES_NOT_HOLD
    assert geometry_paper.claims(_summary(f1_decoder=0.55))[2].verdict == common.DOES_NOT_HOLD
    assert geometry_paper.claims(_summary(f1_frequency=math.nan))[2].verdict == common.NOT_MEASURED
    assert {c.verdict for c in geometry_paper.claims({})} == {common.NOT_MEASURED}
    words = geometry_paper._words(_summary(f1_decoder=0.68, f1_frequency=0.71))
    assert (words["cmp_f1_frequency"], words["cmp_f1_reported"]) == ("below", "inside")
    assert "adds nothing measurable" in words["f1_sentence"] and words["cmp_transfer_latents"] == "above"
    assert geometry_paper._words(_summary(f1_decoder=0.5))["cmp_f1_reported"] == "below"


def test_headline_rank_is_the_evaluated_rank_nearest_the_target():
    dirs, label = _stack(r=6)
    t = geometry_paper.transfer_table(dirs, label, geometry_paper.PaperConfig(ranks=(1, 2, 4, 6), n_draws=2))
    assert geometry_paper.headline_rank(t, 3.0) == 2 and geometry_paper.headline_rank(t, 5.5) == 6
    assert geometry_paper.headline_rank(t.iloc[:0], 3.0) == 0
    result = geometry_paper.PaperResult(t, geometry_paper.empty_result(32).prediction, 0, 32)
    s = geometry_paper.summary(result, fraction=4 / 32)
    assert s["transfer_r"] == 4 and s["transfer_pairs"] == 2
    assert s["transfer_relative"] == pytest.approx(1.0) and s["transfer_n_beat"] == 2
    assert s["transfer_expected"] == pytest.approx(4 / 32)
    assert s["transfer_sign_p"] == pytest.approx(0.25)  # 2 of 2 pairs: a quarter of coin flips do as well


def test_sign_test_against_the_binomial_tail():
    assert geometry_paper.sign_test(8, 8) == pytest.approx(1 / 256)
    assert geometry_paper.sign_test(7, 8) == pytest.approx(9 / 256)
    assert geometry_paper.sign_test(0, 8) == pytest.approx(1.0)
    assert math.isnan(geometry_paper.sign_test(0, 0))
