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
        (lambda: config.SyntheticConfig(group_mode="overcomplete", features_per_group=2, group_rank=3),
         "features_per_group"),
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
