"""The sharded activation store's cached reductions."""

import json

import numpy as np
import torch

from saelib.lm import store as store_mod
from saelib.lm.store import ActivationStore


def test_load_covariance_reads_the_first_rows_of_a_store_once(tmp_path, monkeypatch):
    root = tmp_path / "store"
    (root / "train").mkdir(parents=True)
    (root / "info.json").write_text(json.dumps({"d_in": 3}))
    x = torch.randn(300, 3)
    for i, part in enumerate(x.split(100)):
        np.save(root / "train" / f"acts_{i:05d}.npy", part.numpy())
        (root / "train" / f"shard_{i:05d}.json").write_text(json.dumps({"rows": 100}))
    store = ActivationStore(root)
    c = store_mod.load_covariance(store, max_tokens=250)
    np.testing.assert_allclose(c.cov.numpy(), np.cov(x[:250].double().numpy(), rowvar=False), atol=1e-6)
    monkeypatch.setattr(store_mod, "stream_covariance", None)  # a second call must come from the cache
    assert torch.equal(store_mod.load_covariance(store, max_tokens=250).cov, c.cov)
