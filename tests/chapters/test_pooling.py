import pytest
import torch
from helpers import perturbed_sae, sparse_data

from saelib import pooling
from saelib.chapters import pooling as pooling_eval
from saelib.config import PoolingConfig, SAEConfig, StabilityConfig, TrainConfig
from saelib.train import train_saes


def _perturbed(variant="topk", n_seeds=3, d_in=64, d_sae=48, k=4, seed=0):
    return perturbed_sae(SAEConfig(d_in=d_in, d_sae=d_sae, k=k, variant=variant, n_seeds=n_seeds, seed=seed))




def test_pair_stability_known_answers():
    sae = _perturbed(n_seeds=3)
    with torch.no_grad():
        sae.W_dec[1] = sae.W_dec[0]  # seeds 0 and 1 identical, seed 2 unrelated
    from saelib.stability import feature_stability

    fs = feature_stability(sae, StabilityConfig())
    pairs = pooling_eval.pair_stability(fs.max_cos, 0.7).set_index(["s", "t"])
    assert pairs.loc[(0, 1), "stability"] == 1.0 and pairs.loc[(1, 0), "stability"] == 1.0
    assert pairs.loc[(0, 2), "stability"] == 0.0 and pairs.loc[(2, 1), "stability"] == 0.0
    assert pairs.loc[(0, 1), "mean_max_cos"] == pytest.approx(1.0)
    alive = torch.ones(3, 48, dtype=torch.bool)
    alive[0, :10] = False
    assert len(pooling_eval.max_cos_samples(fs.max_cos, alive)) == 6 * 48 - 2 * 10


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


@pytest.mark.slow
def test_cached_pipeline_pools_finetunes_and_scores(_artifacts_in_tmp):
    x = sparse_data(n=8192)
    store = _Store(x)
    cfg = SAEConfig(d_in=16, d_sae=32, k=3, n_seeds=4)
    tc = TrainConfig(n_tokens=8192, batch_size=256, lr=1e-2, dead_after_tokens=2048, device="cpu")
    sae = train_saes(cfg, tc, x, progress=False).sae
    pc = PoolingConfig(mass_tokens=2048, finetune_frac=0.25, sweep=(1, 2))
    pools = pooling.pool_groups(sae, pooling.disjoint_groups(2), pc, store, data_key="toy")
    assert [p.group for p in pools] == [(0, 1), (2, 3)]
    summary = pooling.pool_summary(pools)
    assert (summary["in 1 seed"] + summary["in 2 seeds"] == summary["clusters"]).all()
    sizes = pooling.pooled_sizes(pools, 32, pc)
    assert sizes["same"] <= 32 and sizes["same"] <= sizes["large"] <= 48
    first = pooling.pooled_sae(sae, pools, sizes["same"], pc, tc, store, data_key="toy", progress=False)
    again = pooling.pooled_sae(sae, pools, sizes["same"], pc, tc, store, data_key="toy", progress=False)
    torch.testing.assert_close(first.sae.W_enc, again.sae.W_enc, atol=0, rtol=0)  # read back from the cache
    assert len(list((_artifacts_in_tmp / "pooled").iterdir())) == 1
    torch.testing.assert_close(first.sae.W_dec, first.initial.W_dec, atol=1e-6, rtol=1e-6)  # decoder frozen
    scores = pooling_eval.score_stacks({"pooled": first.sae, "standard": sae}, store, StabilityConfig(), data_key="toy")
    assert list(scores.table.sae) == ["pooled"] * 2 + ["standard"] * 4
    assert scores.max_cos["pooled"].shape == (2, 2, sizes["same"])
    assert (scores.table.explained_variance > 0.5).all(), scores.table
    sweep = pooling_eval.seed_sweep(sae, pc, tc, store, StabilityConfig(), d_sae=32, data_key="toy", progress=False)
    assert list(sweep.seeds_per_group) == [1, 2]
    assert sweep.multi_seed_share.iloc[0] == 0.0  # one seed per group: nothing is in two seeds
    pairs = pooling_eval.pair_stability(scores.max_cos["standard"], 0.7).assign(sae="standard")
    s = pooling_eval.summarize(scores.table, pairs) | pooling_eval.sweep_summary(sweep)
    assert s["standard_pair_min"] <= s["standard_stability"] <= s["standard_pair_max"]
    claims = pooling_eval.claims_table(s)
    assert len(claims) == 3  # same-size stability and EV, and the sweep (no CE, no larger standard)
    assert claims.holds.dtype == bool
