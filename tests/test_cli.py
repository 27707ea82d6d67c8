import pytest

from saelib import cli
from saelib.cache import artifact_dir, verify_manifest
from saelib.chapters import synthetic


@pytest.mark.slow
def test_synthetic_command_fills_the_cache():
    cli.main(["synthetic", "--scale", "smoke", "--no-sweep", "--device", "cpu"])
    saes = list((artifact_dir("x", "x", {}).parent.parent / "saes").iterdir())
    assert len(saes) == 1 and verify_manifest(saes[0])
    # the notebook's call now hits the cache: same stack, no training
    data, sae, _ = synthetic.train_study(synthetic.study("smoke", "cpu"), progress=False)
    assert sae.cfg == synthetic.study("smoke").sae
    assert list((saes[0].parent).iterdir()) == saes


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["synthetic", "--scale", "huge"])


@pytest.mark.slow
def test_collect_command_at_smoke_scale():
    from saelib.lm import activations
    from saelib.lm.config import ACTIVATION_SCALES

    cli.main(["collect", "--scale", "smoke", "--device", "cpu"])
    store = activations.collect_activations(ACTIVATION_SCALES["smoke"], progress=False)  # a cache hit
    assert store.n_tokens >= ACTIVATION_SCALES["smoke"].n_train_tokens and store.d_in == 640


def test_grid_command_runs_the_scales_grid_on_the_device(monkeypatch):
    import pandas as pd

    from saelib.chapters import grid

    seen = {}

    def fake_run_all(study, **kw):
        seen["study"] = study
        return pd.DataFrame({"d_sae": [1]})

    monkeypatch.setattr(grid, "run_all", fake_run_all)
    cli.main(["grid", "--scale", "smoke", "--device", "cpu"])
    expected = grid.study("smoke")
    assert seen["study"].train.device == "cpu"
    assert seen["study"].activations == expected.activations and seen["study"].sizes == expected.sizes
