import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import perturbed_sae, sparse_data

from saelib import pooling
from saelib.chapters import common
from saelib.chapters import pooling as chapter
from saelib.config import PoolingConfig, SAEConfig, StabilityConfig, TrainConfig
from saelib.stability import feature_stability
from saelib.train import train_saes


def _perturbed(variant="topk", n_seeds=3, d_in=64, d_sae=48, k=4, seed=0):
    return perturbed_sae(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant=variant, n_seeds=n_seeds, seed=seed))


class _Store:
    """An in-memory stand-in for `ActivationStore`: `batches`, `eval`."""

    def __init__(self, x):
        self.x, self.d_in, self.info = x, x.shape[1], {"layer": 0, "hook": "resid_post"}

    def batches(self, batch_size, *, seed):
        g = torch.Generator().manual_seed(seed)
        yield from self.x[torch.randperm(len(self.x), generator=g)].split(batch_size)

    @property
    def eval(self):
        return self


# --- The study --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["smoke", "default", "gpu", "paper"])
def test_every_scale_pools_consistently_with_its_grid(scale):
    s = chapter.study(scale, "cpu")
    assert s.grid.train.device == "cpu"  # the device reaches the SAEs' training (and so the fine-tuning)
    layer = s.grid.reference[0]
    # pooling merges at the stability threshold tau, so that no two kept features would count as one match
    assert s.pooling.threshold == s.grid.stability.threshold
    # mass and liveness are measured on as many tokens as the prose says: the store must hold them
    assert s.pooling.mass_tokens <= s.grid.activations_at(layer).n_train_tokens
    # the sweep starts at one seed (the standard SAE again) and passes through the main comparison's group size
    assert min(s.pooling.sweep) == 1 and s.pooling.seeds_per_group in s.pooling.sweep
    # pooling reads the reference SAEs themselves: they hold every seed it needs, so none is trained again
    assert s.n_stack_seeds == s.grid.reference_seeds >= 2 * max(s.pooling.sweep)


def test_study_overrides_and_scales():
    smoke, default = chapter.study("smoke", "cpu"), chapter.study("default", "cpu")
    assert smoke.pooling.mass_tokens < default.pooling.mass_tokens and len(smoke.pooling.sweep) < len(
        default.pooling.sweep
    )
    assert chapter.study("paper").pooling.seeds_per_group == 4
    custom = PoolingConfig(seeds_per_group=3, sweep=(1, 3))
    s = chapter.study("smoke", "cpu", pooling=custom)
    assert s.pooling == custom and s.grid == smoke.grid and s.n_stack_seeds == 6
    assert chapter.study("smoke", "cpu", pooling=None) == smoke  # None keeps the scale's value
    with pytest.raises(ValueError, match="SCALE"):
        chapter.study("huge")


# --- Scoring ----------------------------------------------------------------------------------------------------------


def test_pair_stability_known_answers():
    sae = _perturbed(n_seeds=3)
    with torch.no_grad():
        sae.W_dec[1] = sae.W_dec[0]  # seeds 0 and 1 identical, seed 2 unrelated
    fs = feature_stability(sae, StabilityConfig())
    pairs = chapter.pair_stability(fs.max_cos, 0.7).set_index(["s", "t"])
    assert pairs.loc[(0, 1), "stability"] == 1.0 and pairs.loc[(1, 0), "stability"] == 1.0
    assert pairs.loc[(0, 2), "stability"] == 0.0 and pairs.loc[(2, 1), "stability"] == 0.0
    assert pairs.loc[(0, 1), "mean_max_cos"] == pytest.approx(1.0)
    alive = torch.ones(3, 48, dtype=torch.bool)
    alive[0, :10] = False
    assert len(chapter.max_cos_samples(fs.max_cos, alive)) == 6 * 48 - 2 * 10


def test_score_stacks_against_independent_references():
    x = sparse_data(n=2048, d=64)
    src = _perturbed(n_seeds=2)
    twins = src.select([0, 0])  # two identical seeds: every alive latent is matched
    single = src.select([1])
    scores = chapter.score_stacks({"twins": twins, "single": single}, _Store(x), StabilityConfig())
    t = scores.table
    assert list(t.sae) == ["twins", "twins", "single"] and list(t.seed) == [0, 1, 0]
    assert (t[t.sae == "twins"].stability == 1.0).all() and t[t.sae == "single"].stability.isna().all()
    assert "ce_loss_score" not in t  # no model given
    with torch.no_grad():
        x_hat = single(x).x_hat[0].double()
    ev = 1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert t.explained_variance.iloc[2] == pytest.approx(float(ev), abs=1e-4)
    with torch.no_grad():
        fired = (single(x).latents[0] > 0).any(0)  # (d_sae,)
    assert t.dead_fraction.iloc[2] == pytest.approx(1 - fired.float().mean().item())
    assert scores.max_cos["twins"].shape == (2, 2, 48) and scores.max_cos["single"].isnan().all()
    dead = ~(twins(x).latents[0] > 0).any(0)
    assert scores.max_cos["twins"][0, 1][dead].isnan().all()  # dead latents are left out, as NaN


def test_tables_average_per_kind_in_first_seen_order():
    table = pd.DataFrame(
        {
            "sae": ["b", "b", "a"],
            "d_sae": [4, 4, 8],
            "explained_variance": [0.5, 0.7, 0.9],
            "l0": [1.0, 3.0, 2.0],
            "dead_fraction": [0.0, 0.5, 0.25],
            "stability": [0.2, 0.4, 0.6],
        }
    )
    q = chapter.tabulate_quality(table)
    assert list(q.index) == ["b", "a"] and list(q.columns) == [
        "d_sae",
        "explained_variance",
        "l0",
        "dead_fraction",
        "stability",
    ]
    assert q.loc["b", "explained_variance"] == pytest.approx(0.6) and q.loc["b", "dead_fraction"] == 0.25
    pairs = pd.DataFrame({"sae": ["b", "b", "a"], "stability": [0.1, 0.3, 0.5], "mean_max_cos": [0.4, 0.6, 0.8]})
    p = chapter.tabulate_pairs(pairs)
    assert p.loc["b", ("stability", "min")] == 0.1 and p.loc["b", ("stability", "max")] == 0.3
    assert p.loc["a", ("mean_max_cos", "mean")] == 0.8


# --- summary and claims on a hand-built result ------------------------------------------------------------------------


def _result(pooled_stability=0.6, pooled_ev=0.795, with_ce=True, sweep_stability=(0.3, 0.5)):
    """A hand-built `PoolingResult`: 3 standard seeds (stability 0.3, pairs 0.25-0.35, EV 0.8), 2 pooled SAEs."""
    rows = [
        ("standard", 100, 0.8, 0.3),
        ("standard", 100, 0.8, 0.3),
        ("standard", 100, 0.8, 0.3),
        ("pooled", 100, pooled_ev, pooled_stability),
        ("pooled", 100, pooled_ev, pooled_stability),
        ("pooled large", 150, 0.85, 0.5),
        ("pooled large", 150, 0.85, 0.5),
        ("standard large", 150, 0.86, 0.2),
        ("standard large", 150, 0.86, 0.2),
    ]
    table = pd.DataFrame(rows, columns=["sae", "d_sae", "explained_variance", "stability"]).assign(
        l0=8.0, dead_fraction=0.0, mean_max_cos=0.5
    )
    if with_ce:
        table["ce_loss_score"] = [0.9] * 3 + [0.895] * 2 + [0.92] * 2 + [0.93] * 2
    pairs = pd.DataFrame(
        {
            "sae": ["standard"] * 6 + ["pooled"] * 2 + ["pooled large"] * 2 + ["standard large"] * 2,
            "stability": [0.25, 0.3, 0.35, 0.3, 0.25, 0.35, pooled_stability, pooled_stability, 0.5, 0.5, 0.2, 0.2],
        }
    ).assign(mean_max_cos=0.5)
    sweep = pd.DataFrame({"seeds_per_group": [1, 2], "stability": list(sweep_stability)})
    pools = pd.DataFrame({"pool": [0, 1], "clusters": np.array([180, 170])})
    setup = {"ref_name": "L6-topk-100", "d_sae": np.int64(100), "tau": 0.7, "mass_tokens": "4,096"}
    return chapter.PoolingResult(
        setup,
        pools,
        {"same": 100, "large": 150},
        table,
        pairs,
        chapter.tabulate_pairs(pairs),
        chapter.tabulate_quality(table),
        {},
        sweep,
    )


def test_summary_glues_plain_numbers():
    s = chapter.summary(_result())
    assert all(isinstance(v, (int, float, str)) and not isinstance(v, np.generic) for v in s.values()), s
    assert s["d_sae"] == 100 and s["mass_tokens"] == "4,096" and s["ref_name"] == "L6-topk-100"
    assert s["standard_stability"] == pytest.approx(0.3) and s["pooled_stability"] == pytest.approx(0.6)
    assert (s["standard_pair_min"], s["standard_pair_max"]) == (0.25, 0.35)
    assert s["pooled_large_d_sae"] == 150 and s["standard_large_pair_max"] == 0.2
    assert s["pooled_gain"] == pytest.approx(0.3) and s["pooled_ev_change"] == pytest.approx(-0.005)
    assert (s["sweep_first_n"], s["sweep_last_n"], s["sweep_last_stability"]) == (1, 2, 0.5)
    assert (s["n_clusters"], s["size_same"], s["size_large"]) == (170, 100, 150)


def _verdicts(**kw):
    return [c.verdict for c in chapter.claims(chapter.summary(_result(**kw)))]


def test_claims_hold_then_flip_when_the_numbers_flip():
    rows = chapter.claims(chapter.summary(_result()))
    assert [r.verdict for r in rows] == [common.HOLDS] * 6
    frame = common.claims_frame(rows)
    assert list(frame.columns) == list(common.Claim._fields)
    assert frame.paper.tolist() == [chapter.PAPER_SAYS] * 2 + [common.NOT_REPORTED] + [chapter.PAPER_SAYS] * 2 + [
        common.NOT_REPORTED
    ]
    assert rows[0].ours == pytest.approx(0.6) and "0.350" in rows[0].criterion  # compared with the best pair
    # pooled stability 0.34: above the standard mean (0.3) but not above every pair (max 0.35)
    assert _verdicts(pooled_stability=0.34)[0] == common.DOES_NOT_HOLD
    # EV 0.795 loses 0.005 <= EV_TOLERANCE (holds, above); 0.789 loses 0.011 > EV_TOLERANCE
    assert _verdicts(pooled_ev=0.789)[1] == common.DOES_NOT_HOLD
    assert _verdicts(sweep_stability=(0.5, 0.5))[5] == common.DOES_NOT_HOLD  # equal is not growth


def test_claims_without_a_number_are_not_measured():
    verdicts = _verdicts(with_ce=False)
    assert verdicts[2] == common.NOT_MEASURED and verdicts[0] == verdicts[1] == common.HOLDS
    s = chapter.summary(_result())
    del s["standard_large_pair_max"]
    s["pooled_large_explained_variance"] = math.nan
    assert [c.verdict for c in chapter.claims(s)][3:5] == [common.NOT_MEASURED] * 2


# --- The cached pipeline on toy data ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_pools_finetunes_scores_and_sweeps(_artifacts_in_tmp):
    x = sparse_data(n=8192)
    store = _Store(x)
    cfg = SAEConfig(d_in=16, d_sae=32, k=3, n_seeds=4)
    tc = TrainConfig(n_tokens=8192, batch_size=256, lr=1e-2, dead_after_tokens=2048, device="cpu")
    sae = train_saes(cfg, tc, x, progress=False).sae
    pc = PoolingConfig(mass_tokens=2048, finetune_frac=0.25, sweep=(1, 2))
    pools = pooling.pool_groups(sae, pooling.disjoint_groups(2), pc, store, data_key="toy")
    sizes = pooling.pooled_sizes(pools, 32, pc)
    first = pooling.pooled_sae(sae, pools, sizes["same"], pc, tc, store, data_key="toy", progress=False)
    scores = chapter.score_stacks({"pooled": first.sae, "standard": sae}, store, StabilityConfig())
    assert list(scores.table.sae) == ["pooled"] * 2 + ["standard"] * 4
    assert scores.max_cos["pooled"].shape == (2, 2, sizes["same"])
    assert (scores.table.explained_variance > 0.5).all(), scores.table
    # a seed's mean per-feature stability is the mean over its partners of the 2-seed (pair) stabilities
    pairs = chapter.pair_stability(scores.max_cos["standard"], StabilityConfig().threshold)
    by_seed = pairs.groupby("s").stability.mean().to_numpy()
    np.testing.assert_allclose(scores.table[scores.table.sae == "standard"].stability, by_seed, atol=1e-6)
    sweep = chapter.seed_sweep(sae, pc, tc, store, StabilityConfig(), d_sae=32, data_key="toy", progress=False)
    assert list(sweep.seeds_per_group) == [1, 2]
    assert sweep.multi_seed_share.iloc[0] == 0.0  # one seed per group: nothing is in two seeds
    # two seeds trained on the same 24 planted directions share features: pooling two of them finds some in both
    assert sweep.multi_seed_share.iloc[1] > 0.1, sweep  # 6 of 32; random 16-d directions: ~2
    with pytest.raises(ValueError, match="sweep"):
        chapter.seed_sweep(sae, replace(pc, sweep=(1, 3)), tc, store, StabilityConfig(), d_sae=32, data_key="toy")
