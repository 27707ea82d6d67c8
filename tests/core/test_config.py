import pytest

from saelib import config


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: config.SAEConfig(d_in=8, d_sae=16, k=17), "k=17"),
        (lambda: config.SAEConfig(d_in=8, d_sae=16, variant="gated"), "variant='gated'"),
        (lambda: config.SAEConfig(d_in=0, d_sae=16), "d_in"),
        (lambda: config.TrainConfig(n_tokens=10, lr=-1.0), "lr"),
        (lambda: config.StabilityConfig(threshold=1.5), "threshold"),
        (lambda: config.StabilityConfig(stable_at=0.1, unstable_at=0.5), "unstable_at"),
        (
            lambda: config.SyntheticConfig(group_mode="overcomplete", features_per_group=2, group_rank=3),
            "features_per_group",
        ),
        (lambda: config.check_scale("huge"), "SCALE='huge'"),
    ],
)
def test_bad_values_name_the_parameter(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_configs_are_frozen():
    cfg = config.SAEConfig(d_in=8, d_sae=16, k=4)
    with pytest.raises(AttributeError):
        cfg.k = 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: config.SAEConfig(d_in=8, d_sae=16, k=16),  # k = d_sae is allowed ...
        lambda: config.SAEConfig(d_in=8, d_sae=16, k=1),  # ... and so is k = 1
        lambda: config.SAEConfig(d_in=8, d_sae=16, variant="relu", k=99),  # k only binds the TopK variants
        lambda: config.TrainConfig(n_tokens=1, warmup_frac=0.5, decay_frac=0.5),  # the fractions may sum to 1
        lambda: config.StabilityConfig(threshold=1.0, stable_at=1.0, unstable_at=0.0),
        lambda: config.SyntheticConfig(n_isolated=0, n_groups=1, noise_std=0.0),
        lambda: config.PoolingConfig(sweep=(1,), n_large_standard=2),
    ],
)
def test_values_on_the_boundary_are_accepted(make):
    make()  # a validator that rejected everything would fail here


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: config.SAEConfig(d_in=8, d_sae=16, k=0), "k=0"),
        (lambda: config.SAEConfig(d_in=8, d_sae=16, n_seeds=0), "n_seeds"),
        (lambda: config.SAEConfig(d_in=8, d_sae=64, seed=-1), "seed=-1"),
        (lambda: config.SAEConfig(d_in=8, d_sae=64, l1_coefficient=float("inf")), "l1_coefficient"),
        (lambda: config.SAEConfig(d_in=8, d_sae=64, jumprelu_bandwidth=float("nan")), "jumprelu_bandwidth"),
        (lambda: config.TrainConfig(n_tokens=10, warmup_frac=0.6, decay_frac=0.5), "warmup_frac"),
        (lambda: config.TrainConfig(n_tokens=10, aux_coefficient=-0.1), "aux_coefficient"),
        (lambda: config.SyntheticConfig(n_isolated=0, n_groups=0), "not both 0"),
        (lambda: config.SyntheticConfig(p_group=1.5), "p_group=1.5"),
        (lambda: config.StabilityConfig(threshold=0.0), "threshold=0.0"),
        (lambda: config.PoolingConfig(large_factor=1.0), "large_factor"),
        (lambda: config.PoolingConfig(rank_by="size"), "rank_by"),
        (lambda: config.PoolingConfig(sweep=(1, 0)), "sweep"),
    ],
)
def test_more_bad_values_name_the_parameter(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_check_helpers_accept_and_reject_exactly_their_ranges():
    config.check_positive("X", a=1e-300, b=7)
    for bad in (0, -1.0, float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match=r"X\.a="):
            config.check_positive("X", a=bad)
    config.check_fraction("X", a=0.0, b=1.0)
    config.check_fraction("X", lo_open=True, a=1e-9)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        config.check_fraction("X", lo_open=True, a=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        config.check_fraction("X", a=1.0001)
    assert config.check_scale("smoke") == "smoke"


def test_derived_quantities():
    assert config.SAEConfig(d_in=8, d_sae=64, n_seeds=3, seed=5).seeds == [5, 6, 7]
    assert config.TrainConfig(n_tokens=4097, batch_size=4096).n_steps == 2
    assert config.TrainConfig(n_tokens=4096, batch_size=4096).n_steps == 1
    assert config.PoolingConfig(seeds_per_group=2, sweep=(1, 3)).n_seeds_needed == 6


def test_derive_seed_is_deterministic_and_separates_purposes_and_seeds():
    a = config.derive_seed(0, "sae-init")
    assert a == config.derive_seed(0, "sae-init") and 0 <= a < 2**63
    others = {
        config.derive_seed(0, "synthetic"),
        config.derive_seed(1, "sae-init"),
        config.derive_seed(0, "batch-order"),
    }
    assert a not in others and len(others) == 3


def test_resolve_device(monkeypatch):
    assert config.resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    assert config.resolve_device("auto").type == "cpu"
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: True)
    assert config.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"k": 2.5}, "k"), ({"d_in": "16"}, "d_in"), ({"d_sae": 32.0}, "d_sae"), ({"n_seeds": True}, "n_seeds")],
)
def test_sae_config_integers_must_be_int(kwargs, field):
    base = {"d_in": 16, "d_sae": 32, "k": 4}
    with pytest.raises(ValueError, match=f"SAEConfig.{field}=.*must be an integer"):
        config.SAEConfig(**{**base, **kwargs})


def test_sae_config_accepts_numpy_integers():
    import numpy as np

    assert config.SAEConfig(d_in=np.int64(16), d_sae=32, k=4).d_in == 16
