import pytest
import torch

from saelib import stability as st
from saelib.chapters import stability as chapter
from saelib.config import SAEConfig, StabilityConfig
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
