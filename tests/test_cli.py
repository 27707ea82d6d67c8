import pytest

from saelib import cli, synthetic
from saelib.cache import artifact_dir, verify_manifest
from saelib.config import synthetic_study


def test_synthetic_command_fills_the_cache():
    cli.main(["synthetic", "--scale", "smoke", "--no-sweep", "--device", "cpu"])
    saes = list((artifact_dir("x", "x", {}).parent.parent / "saes").iterdir())
    assert len(saes) == 1 and verify_manifest(saes[0])
    # the notebook's call now hits the cache: same stack, no training
    data, sae, _ = synthetic.train_study(synthetic_study("smoke"), progress=False)
    assert sae.cfg == synthetic_study("smoke").sae
    assert list((saes[0].parent).iterdir()) == saes


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["synthetic", "--scale", "huge"])


@pytest.mark.slow
def test_collect_command_at_smoke_scale():
    from saelib import activations, config

    cli.main(["collect", "--scale", "smoke", "--device", "cpu"])
    store = activations.collect_activations(config.ACTIVATION_SCALES["smoke"], progress=False)  # a cache hit
    assert store.n_tokens >= config.ACTIVATION_SCALES["smoke"].n_train_tokens and store.d_in == 640
