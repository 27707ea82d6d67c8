import math

import numpy as np
import pandas as pd
import pytest
import torch

from saelib.chapters import common
from saelib.chapters import synthetic as chapter
from saelib.config import SAEConfig, SyntheticConfig
from saelib.sae import SAE
from saelib.subspace import RandomBaseline
from saelib.synthetic import ISOLATED, UNASSIGNED, GroundTruth, generate

# An orthogonal 3x3 matrix whose entries are all at most 2/3 in absolute value: rotating a basis by it leaves no row
# within cosine 0.7 of any original row, and the best one-to-one matching pairs row i with row i at cosine 2/3.
ROTATION = torch.tensor([[2.0, -1.0, 2.0], [2.0, 2.0, -1.0], [-1.0, 2.0, 2.0]]) / 3


def oracle_stack(cfg: SyntheticConfig, truth: GroundTruth) -> SAE:
    """Two seeds whose latents are exactly the planted directions: the isolated features (in reversed order in seed
    1) and group 0's basis, rotated by `ROTATION` in seed 1. Encoder tied to the decoder, biases zero."""
    n_iso, r = cfg.n_isolated, cfg.group_rank
    sae = SAE(SAEConfig(d_in=cfg.d_in, d_sae=n_iso + r, k=n_iso + r, n_seeds=2))
    basis = truth.group_bases[0]
    rows = [torch.cat([truth.isolated, basis]), torch.cat([truth.isolated.flip(0), ROTATION @ basis])]
    with torch.no_grad():
        sae.W_dec.copy_(torch.stack(rows))
        sae.W_enc.copy_(sae.W_dec.transpose(1, 2))
    return sae.eval()


def test_analyze_scores_an_oracle_stack_with_known_answers():
    cfg = SyntheticConfig(d_in=16, n_isolated=4, p_isolated=0.1, n_groups=1, group_rank=3, p_group=0.3, n_samples=4000)
    data = generate(cfg)
    analysis = chapter.analyze(oracle_stack(cfg, data.truth), data)
    s = chapter.summarize_analysis(analysis)
    assert s["isolated_recovery"] == pytest.approx(1.0, abs=1e-5) and s["isolated_recovered_share"] == 1.0
    assert set(analysis.latents.kind) == {"isolated", "group"}  # every latent fires and is assigned
    assert s["stability_isolated"] == 1.0  # the same directions in both seeds
    assert s["stability_group"] == 0.0  # rotated: no row within cosine 0.7 of the other seed's
    assert s["matched_cos_isolated"] == pytest.approx(1.0, abs=1e-5)
    assert s["matched_cos_group"] == pytest.approx(2 / 3, abs=1e-5)
    assert s["overlap_truth"] == pytest.approx(1.0, abs=1e-5) and s["max_angle_deg"] < 0.5
    assert s["overlap_cross_seed"] == pytest.approx(1.0, abs=1e-5)
    assert analysis.groups["rank"].tolist() == [3, 3]


def test_study_presets_devices_and_overrides():
    smoke = chapter.study("smoke", "cpu")
    assert smoke.train.device == "cpu" and smoke.sae.d_in == smoke.data.d_in == 32
    assert chapter.study("smoke").train.device == "auto"
    assert chapter.study("smoke", sweep_values=None) == chapter.study("smoke")  # None keeps the scale's value
    assert chapter.study("smoke", sweep_values=[2, 3]).sweep_values == (2, 3)  # a notebook's list becomes a tuple
    assert chapter.study("default").sae == SAEConfig(d_in=64, d_sae=128, k=6, n_seeds=5)  # today's (cached) preset
    # the sweep's key ignores the device, so that a GPU run fills the cache a CPU notebook reads
    assert chapter.sweep_key(chapter.study("default", "cuda")) == chapter.sweep_key(chapter.study("default", "cpu"))
    with pytest.raises(ValueError, match="scale"):
        chapter.study("huge")
    with pytest.raises(ValueError, match="not a SyntheticConfig field"):
        chapter.study("smoke", sweep_knob="nope")
    with pytest.raises(ValueError, match="group_rank"):
        chapter.study("smoke", sweep_values=(0,))


def fake_result(matched_group=0.6, overlap_cross=(0.95, 0.9), sweep_matched=(0.99, 0.7)) -> chapter.SyntheticResult:
    """A hand-built result of 2 seeds x 4 latents, one group of rank 3 in R^8, and a two-point sweep."""
    latents = pd.DataFrame(
        {
            "seed": [0, 0, 0, 0, 1, 1, 1, 1],
            "latent": [0, 1, 2, 3] * 2,
            "kind": ["isolated", "group", "group", "dead", "isolated", "group", "unassigned", "dead"],
            "stability": [1.0, 0.0, 1.0, np.nan, 1.0, 0.0, 0.0, np.nan],
        }
    )
    groups = pd.DataFrame({"seed": [0, 1], "group": [0, 0], "overlap_truth": [0.9, 1.0], "max_angle_deg": [10.0, 20.0]})
    pairs = pd.DataFrame(
        {
            "seed_a": [0, 0],
            "seed_b": [1, 1],
            "set": ["group 0", "isolated"],
            "matched_cos": [matched_group, 0.98],
            "overlap": [overlap_cross[0], np.nan],
        }
    )
    analysis = chapter.SyntheticAnalysis(
        latents,
        groups,
        pairs,
        torch.tensor([[1.0, 0.8], [0.96, 1.0]]),
        torch.tensor([[0.0, 0.5, np.nan, 0.0], [0.0, 0.0, 0.0, 0.0]]),
    )
    truth = GroundTruth(torch.zeros(2, 8), torch.zeros(1, 3, 8), None)
    assignment = torch.tensor([[ISOLATED, 0, 0, UNASSIGNED], [ISOLATED, 0, UNASSIGNED, UNASSIGNED]])
    sweep = pd.DataFrame(
        {
            "group_rank": [1, 3],
            "stability_group": [1.0, 0.4],
            "matched_cos_group": list(sweep_matched),
            "overlap_cross_seed": list(overlap_cross),
            "overlap_random": [0.125, 0.375],
        }
    )
    return chapter.SyntheticResult(
        truth, None, {}, analysis, assignment, pd.DataFrame(), RandomBaseline(0.375, 0.1, 80.0, 50.0), None, sweep
    )


def test_summary_known_answers_are_plain_python():
    s = chapter.summary(fake_result())
    expected = {
        "isolated_recovery": 0.94,
        "isolated_recovered_share": 0.75,
        "stability_isolated": 1.0,
        "stability_group": 1 / 3,
        "stability_null": 0.5 / 7,
        "overlap_truth": 0.95,
        "max_angle_deg": 15.0,
        "matched_cos_group": 0.6,
        "matched_cos_isolated": 0.98,
        "overlap_cross_seed": 0.95,
        "overlap_random": 0.375,
        "random_max_angle_deg": 80.0,
        "d_in": 8,
        "group_rank": 3,
        "n_seeds": 2,
        "d_sae": 4,
        "sweep_knob": "group rank",
        "sweep_first": 1,
        "sweep_last": 3,
        "sweep_stability_group_first": 1.0,
        "sweep_stability_group_last": 0.4,
        "sweep_matched_cos_group_first": 0.99,
        "sweep_matched_cos_group_last": 0.7,
        "sweep_overlap_excess_min": 0.9 - 0.375,
    }
    assert s.keys() == expected.keys()
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-6), key
        assert type(s[key]) in (float, int, str), (key, type(s[key]))
    assert type(s["sweep_first"]) is int and type(s["d_in"]) is int


def test_summary_of_an_analysis_without_pairs_is_nan_and_not_measured():
    r = fake_result()
    empty = r.analysis._replace(pairs=pd.DataFrame(columns=["seed_a", "seed_b", "set", "matched_cos", "overlap"]))
    s = chapter.summary(r._replace(analysis=empty))
    assert math.isnan(s["matched_cos_group"]) and math.isnan(s["overlap_cross_seed"])
    got = verdicts(s)
    assert got[2] == got[4] == common.NOT_MEASURED and got.count(common.NOT_MEASURED) == 2  # (b), (c) across seeds


def verdicts(s) -> list[str]:
    rows = chapter.claims(s)
    common.claims_frame(rows)  # checks the verdict vocabulary
    return [r.verdict for r in rows]


def test_claims_hold_and_flip_with_the_numbers():
    good = chapter.summary(fake_result())
    good |= {"isolated_recovery": 0.99, "stability_isolated": 0.95, "overlap_truth": 0.95}
    assert verdicts(good) == [common.HOLDS] * 7
    rows = chapter.claims(good)
    assert [r.paper for r in rows] == [common.NOT_REPORTED] * 2 + [chapter.CLAIMED] * 3 + [common.NOT_REPORTED] * 2
    assert rows[6].ours == "0.990 -> 0.700"
    flips = [
        ("isolated_recovery", 0.9),
        ("stability_isolated", 0.5),
        ("matched_cos_group", 0.95),
        ("overlap_truth", 0.5),
        ("overlap_cross_seed", 0.5),
        ("sweep_overlap_excess_min", 0.1),
        ("sweep_matched_cos_group_last", 0.97),
    ]
    for i, (key, value) in enumerate(flips):
        got = verdicts(good | {key: value})
        assert got[i] == common.DOES_NOT_HOLD and got.count(common.HOLDS) == 6, key
        assert verdicts(good | {key: math.nan})[i] == common.NOT_MEASURED, key
    # (b) compares the two matched cosines: lowering the isolated one below the group's flips it too
    assert verdicts(good | {"matched_cos_isolated": 0.62})[2] == common.DOES_NOT_HOLD
    assert verdicts(good | {"matched_cos_isolated": math.nan})[2] == common.NOT_MEASURED


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`run` at the smoke scale, in a cache of its own (shared by this module's slow tests), run twice."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("artifacts")
        mp.setenv("SAELIB_ARTIFACTS", str(root))
        study = chapter.study("smoke", "cpu")
        first = chapter.run(study, progress=False)
        again = chapter.run(study, progress=False)
    return study, first, again, root


@pytest.mark.slow
def test_smoke_study_recovers_isolated_features_and_subspaces(smoke_run):
    study, result, _, _ = smoke_run
    s = chapter.summary(result)
    assert s["isolated_recovery"] > 0.95 and s["stability_isolated"] > 0.95
    assert s["overlap_truth"] > 0.95
    rank = study.data.group_rank
    assert s["overlap_cross_seed"] > 0.9 > chapter.random_baseline(study.data.d_in, rank, rank) + 0.5
    assert s["matched_cos_group"] < s["matched_cos_isolated"]
    assert s["stability_null"] < 0.05
    assert verdicts(s) == [common.HOLDS] * 7


@pytest.mark.slow
def test_smoke_run_tables_agree_and_the_sweep_is_cached(smoke_run):
    study, result, again, root = smoke_run
    S, F = study.sae.n_seeds, study.sae.d_sae
    assert result.assignment.shape == (S, F)
    assert (result.analysis.latents["group"].to_numpy() == result.assignment.numpy().ravel()).all()
    dirs = result.sae.decoder_directions().cpu()
    for s, rows in zip(result.example.seeds, result.example.directions, strict=True):
        assert torch.equal(rows, dirs[s][result.assignment[s] == result.example.group])
    assert torch.equal(result.example.basis, result.truth.group_bases[0])
    assert set(result.pair_means.index) == {"isolated"} | {f"group {g}" for g in range(study.data.n_groups)}
    assert result.sweep[study.sweep_knob].tolist() == list(study.sweep_values)
    # the sweep point at the study's own rank is the study's stack (same cache entry), so its numbers agree
    own = result.sweep.set_index(study.sweep_knob).loc[study.data.group_rank]
    assert own["matched_cos_group"] == pytest.approx(chapter.summary(result)["matched_cos_group"])
    assert len(list((root / "synthetic").glob("sweep-*"))) == 1
    assert len(list((root / "saes").glob("synthetic-*"))) == len(set(study.sweep_values) | {study.data.group_rank})
    pd.testing.assert_frame_equal(again.sweep, result.sweep)


def test_random_subspaces_of_the_baseline_overlap_by_rank_over_d():
    # the baseline the claims compare with: E overlap of two random r-dim subspaces of R^d is r/d
    assert chapter.random_baseline(32, 4, 4, n_draws=400) == pytest.approx(4 / 32, rel=0.1)
