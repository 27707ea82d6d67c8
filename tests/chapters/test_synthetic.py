import pytest

from saelib.chapters import synthetic


@pytest.mark.slow
def test_smoke_study_recovers_isolated_features_and_subspaces():
    study = synthetic.synthetic_study("smoke")
    data, sae, _ = synthetic.train_study(study, progress=False)
    analysis = synthetic.analyze(sae, data, study.stability)
    s = synthetic.summarize(analysis)
    assert s["isolated_recovery"] > 0.95 and s["stability_isolated"] > 0.95
    assert s["overlap_truth"] > 0.95
    rank = study.data.group_rank
    assert s["overlap_cross_seed"] > 0.9 > synthetic.random_baseline(study.data.d_in, rank, rank) + 0.5
    assert s["matched_cos_group"] < s["matched_cos_isolated"]
    assert s["stability_null"] < 0.05
