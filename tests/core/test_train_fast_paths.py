"""The fast paths of `TrainConfig` (bf16 autocast, TF32, prefetch, torch.compile) against the plain path, on CPU."""

import dataclasses
import functools
import warnings

import pytest
import torch
from helpers import sparse_data

from saelib.cache import config_hash
from saelib.config import SAEConfig, TrainConfig
from saelib.train import FAST_PATHS, prefetch_batches, train_key, train_saes

PLAIN = TrainConfig(n_tokens=2048, batch_size=256, lr=3e-3, dead_after_tokens=256, device="cpu")


def _pair(variant, **fast):
    """The plain and the fast run of one small stack of 2 seeds on the same data."""
    x = sparse_data(n=2048, d=16, f=24)
    cfg = SAEConfig(d_in=16, d_sae=32, variant=variant, k=4, n_seeds=2)
    plain = train_saes(cfg, PLAIN, x, progress=False)
    return plain, train_saes(cfg, dataclasses.replace(PLAIN, **fast), x, progress=False)


def test_fast_paths_at_default_leave_the_cache_key_unchanged():
    key = train_key(PLAIN)
    assert not set(FAST_PATHS) & key.keys() and "prefetch" not in key
    assert train_key(dataclasses.replace(PLAIN, prefetch=True)) == key  # same numbers: same artifact
    for name in FAST_PATHS:
        assert train_key(dataclasses.replace(PLAIN, **{name: True}))[name] is True
    # the key train_key gave before the fast paths existed (its body at commit 048de5d), so the same cache folders;
    # the stack schedule (`seeds_per_stack`, added later) changes no numbers and is never in the key either
    before = dataclasses.asdict(PLAIN)
    for name in (
        "device",
        "checkpoint_every",
        "checkpoint_seconds",
        "log_every",
        *FAST_PATHS,
        "prefetch",
        "seeds_per_stack",
    ):
        before.pop(name)
    assert key == before and config_hash(key) == config_hash(before)


@pytest.mark.parametrize("variant", ["topk", "relu"])
def test_prefetch_and_tf32_equal_the_plain_path(variant):
    for fast in ({"prefetch": True}, {"tf32": True}):
        plain, run = _pair(variant, **fast)
        # prefetch only moves the reads to a thread; TF32 does not exist on CPU (same kernels): bit-identical
        for name, p in plain.sae.state_dict().items():
            assert torch.equal(run.sae.state_dict()[name], p), (fast, name)
    assert torch.get_float32_matmul_precision() == "highest"  # restored after training


@pytest.mark.parametrize("variant", ["batchtopk", "relu", "jumprelu"])
def test_bf16_autocast_stays_close_to_float32(variant):
    plain, run = _pair(variant, autocast_bf16=True)
    # bf16 keeps 8 mantissa bits (relative error 2^-9 per rounding): after 8 steps of Adam the decoder directions
    # agree to a cosine above 0.999 and the final FVU to within 5% (measured: cosine >= 0.9999, FVU within 0.05%)
    cos = torch.nn.functional.cosine_similarity(run.sae.W_dec, plain.sae.W_dec, dim=-1)
    assert cos.min() > 0.999
    fvu_plain, fvu_fast = torch.tensor(plain.history["fvu"][-1]), torch.tensor(run.history["fvu"][-1])
    torch.testing.assert_close(fvu_fast, fvu_plain, rtol=0.05, atol=0.0)
    assert run.sae.W_dec.dtype == torch.float32
    assert "forward" not in vars(run.sae)  # the autocast wrapper is gone from the returned SAE


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["topk", "relu"])
def test_torch_compile_equals_the_plain_path(variant, monkeypatch):
    # aot_eager traces through Dynamo and AOTAutograd as inductor does, without its C++ build (30 s on 2 cores);
    # benchmarks/gpu_check.sh runs the inductor backend on CUDA
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Dynamo cannot trace sparse_coo_tensor: a graph break
        plain, run = _pair(variant, torch_compile=True)
    torch.testing.assert_close(run.sae.W_dec, plain.sae.W_dec, atol=1e-6, rtol=1e-5)


def test_prefetch_yields_the_stream_in_order_and_raises_its_errors():
    def stream():
        for i in range(5):
            yield torch.full((2,), float(i))
        raise OSError("shard missing")

    got = prefetch_batches(stream(), torch.device("cpu"))
    assert [float(next(got)[0]) for _ in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(OSError, match="shard missing"):
        next(got)
