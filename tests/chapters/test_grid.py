"""The chapter-1 grid on a tiny offline GPT-2 (no download): every point trains, scores and caches."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_tiny_model, tiny_grid_study

from saelib import stability, train
from saelib.chapters import grid
from saelib.chapters.grid import GridStudy
from saelib.lm.activations import load_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2", n_layers=3, d=32))


def _study(folder, **kw) -> GridStudy:
    base = {"variants": ("topk", "batchtopk"), "n_ce_contexts": 2, "thresholds": (0.5, 0.9)}
    return tiny_grid_study(folder, **(base | kw))


@pytest.mark.slow
def test_run_grid_scores_every_point_and_caches_them(folder, monkeypatch):
    study = _study(folder)
    lm = load_model(folder, device="cpu")
    table, splits, scores = grid.run_grid(study, lm=lm, progress=False)
    assert len(table) == 2 * 2 * 2 == len(grid.grid_entries(study))
    assert set(table.columns) >= {
        "explained_variance",
        "l0",
        "dead_fraction",
        "ce_loss_score",
        "mean_stability",
        "shared_fraction",
        "pw_mcc",
        "null_stability",
        "null_cov_stability",
    }
    assert table.l0.between(0, 4 * 1.5).all() and table.explained_variance.between(-1, 1).all()
    entry = grid.reference_entry(study)
    split = splits[entry]
    assert split.stability.shape == (3, 48) and split.max_cos.shape == (3, 3, 48)
    # Labels follow the split's own cut-offs; dead latents are exactly those that never fire.
    dead = split.frequency == 0
    assert torch.equal(split.label == stability.DEAD, dead) and torch.isnan(split.stability[dead]).all()
    assert torch.equal(split.label, stability.stability_labels(split.stability, study.stability))
    # The cached split is what later chapters read, without training or scoring again.
    monkeypatch.setattr(train, "train_saes", lambda *a, **k: pytest.fail("retrained a cached grid point"))
    monkeypatch.setattr(grid, "score_sae", lambda *a, **k: pytest.fail("rescored a cached grid point"))
    again = grid.load_split(study, entry)
    torch.testing.assert_close(again.stability, split.stability, equal_nan=True)
    assert grid.is_scored(study, entry)
    rows = grid.latent_table(entry, split)
    assert len(rows) == int((~dead).sum()) and set(rows.label) <= {"stable", "intermediate", "unstable"}


def test_more_seeds_extend_the_grid_stack(folder):
    study = _study(folder, variants=("topk",), sizes=(16,), reference=(2, "topk", 16))
    entry = grid.reference_entry(study)
    three, _ = grid.train_entry(study, entry, progress=False)
    four, _ = grid.train_entry(study, entry, n_seeds=4, progress=False)
    assert four.n_seeds == 4
    torch.testing.assert_close(four.W_dec[:3], three.W_dec, atol=1e-4, rtol=1e-4)


def test_scores_of_exact_copies_are_perfect(folder):
    study = _study(folder, variants=("topk",), sizes=(16,), reference=(2, "topk", 16))
    entry = grid.reference_entry(study)
    sae, _ = grid.train_entry(study, entry, progress=False)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            p = getattr(sae, name)
            p[1:] = p[:1]
    store = grid.load_store(study, 2, progress=False)
    split, scores = grid.score_sae(sae, store, study)
    alive = split.label != stability.DEAD
    assert torch.all(split.stability[alive] == 1)
    assert np.allclose(scores["explained_variance"], scores["explained_variance"][0])
    assert all(p["matched_cosine"] == pytest.approx(1.0) for p in scores["pairs"])
    assert scores["null_untrained"]["mean_stability"] < 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(reference=(5, "topk", 16)), "reference"),
        (dict(n_seeds=1), "n_seeds"),
        (dict(sizes=(4,)), "sizes"),
        (dict(variants=("gated",)), "variants"),
    ],
)
def test_study_errors_name_the_parameter(folder, change, message):
    with pytest.raises(ValueError, match=message):
        _study(folder, **change)


def test_study_rejects_repeated_layers_and_mixed_models(folder):
    a = _study(folder).activations[0]
    with pytest.raises(ValueError, match="repeated layers"):
        GridStudy((a, a), reference=(0, "topk", 1024))
    with pytest.raises(ValueError, match="share model"):
        GridStudy((a, replace(a, layer=1, model="gpt2")), reference=(0, "topk", 1024))


@pytest.mark.parametrize("scale", ["smoke", "default", "gpu", "paper"])
def test_named_scales_are_valid(scale):
    study = grid.study(scale)
    assert grid.reference_entry(study) in grid.grid_entries(study)
    assert len(study.layers) >= 2 and study.n_seeds >= (3 if scale == "smoke" else 5)


def test_feature_split_is_feature_stability_plus_firing_statistics(tmp_path):
    from saelib.config import SAEConfig, StabilityConfig
    from saelib.sae import SAE

    assert grid.FeatureSplit._fields[: len(stability.FeatureStability._fields)] == stability.FeatureStability._fields
    sae = SAE(SAEConfig(d_in=8, d_sae=12, k=2, n_seeds=3))
    frequency = torch.rand(3, 12) + 0.01
    frequency[0, 3] = frequency[2, 7] = 0.0
    cfg = StabilityConfig(threshold=0.5)
    fs = stability.feature_stability(sae, cfg, alive=frequency > 0)
    split = grid.FeatureSplit.from_stability(fs, frequency, torch.ones(3, 12), cfg)
    # Dead latents are NaN in every per-latent score, their max_cos rows included; the rest is fs unchanged.
    assert torch.equal(split.alive, frequency > 0)
    assert torch.isnan(split.stability[0, 3]) and torch.isnan(split.mean_max_cos[2, 7])
    assert torch.isnan(split.max_cos[0, :, 3]).all() and torch.isnan(split.max_cos[2, :, 7]).all()
    back = split.as_feature_stability()
    assert isinstance(back, stability.FeatureStability) and back.threshold == 0.5
    torch.testing.assert_close(back.stability, fs.stability, equal_nan=True)
    alive = split.alive.unsqueeze(1).expand_as(fs.max_cos)
    torch.testing.assert_close(back.max_cos[alive], fs.max_cos[alive], equal_nan=True)
    # The artifact format: tensors and numbers by field name, read back equal.
    grid._save_split(split, tmp_path)
    again = grid._read_split(tmp_path)
    assert again._fields == split._fields and (again.stable_at, again.unstable_at) == (cfg.stable_cut, cfg.unstable_cut)
    for name in ("stability", "max_cos", "label", "frequency"):
        torch.testing.assert_close(getattr(again, name), getattr(split, name), equal_nan=True)
    with pytest.raises(ValueError, match="frequency 0"):
        grid.FeatureSplit.from_stability(fs, torch.ones(3, 12), torch.ones(3, 12), cfg)


def test_all_points_are_the_grid_then_the_reference_at_every_budget():
    from helpers import tiny_grid_study

    study = tiny_grid_study("unused-folder")  # budgets (1_600, 3_200); the grid's own budget is 1_600
    points = grid.all_points(study)
    entries = grid.grid_entries(study)
    assert [e for _, e in points[: len(entries)]] == entries
    # the first budget is the grid's own point (not repeated); the last is the reference SAEs
    assert len(points) == len(entries) + 1
    deep, entry = points[-1]
    assert entry == grid.reference_entry(study) and deep == grid.reference_study(study)
    assert deep.n_seeds == study.reference_seeds and deep.train.n_tokens == max(study.budgets)


def test_paper_scale_mirrors_the_reported_setup():
    """The reported setting (PAPER.md, secondary source): GPT-2 small, residual stream after block 7, TopK with
    16,384 latents and k = 64, 1B FineWeb tokens, 96 seeds (an anchor against 95), the paper's estimator."""
    g = grid.study("paper", "cpu")
    a = g.activations_at(g.reference[0])
    assert (a.model, a.layer, a.hook) == ("gpt2", 7, "resid_post") and a.corpus.startswith("hf:HuggingFaceFW/fineweb")
    assert g.reference == (7, "topk", 16384) and g.k == 64
    deep = grid.reference_study(g)
    assert deep.n_seeds == 96 and deep.train.n_tokens == 1_000_000_000 == a.n_train_tokens
    assert g.stability.estimator == "anchor" and g.stability.epsilon == 0.05 and g.stability.threshold == 0.7
    # default: an anchor and at least 8 comparison seeds, a budget curve of >= 4 budgets spanning >= 10x
    d = grid.study("default", "cpu")
    assert d.reference_seeds >= 9 and len(d.budgets) >= 4 and d.budgets[-1] >= 10 * d.budgets[0]
    assert d.budgets[0] == d.train.n_tokens and d.activations_at(d.reference[0]).n_train_tokens >= 1_000_000
