"""Multi-seed TopK training: ours (S seeds at once), ours (S sequential runs), and SAELens's own TopK training SAE
with its `SAETrainer`, seed by seed, all fed the same in-memory activations; plus the efficiency of our step against
the bare matmuls it needs, measured in the same run.

    python benchmarks/bench_train.py                       # d_in 640, d_sae 4096, k 32, batch 4096, S = 1, 4, 8
    python benchmarks/bench_train.py --sizes 4096 16384 --steps 5

`tok*seeds/s` counts activation vectors times seeds trained per second (warm-up excluded). `vs SAELens` is that
rate over SAELens's sequential rate for the same S and size. `matmul eff.` is the time of the one dense matmul a
TopK step cannot avoid (the encoder forward `x @ W_enc` for S seeds, `torch.bmm` of the same shapes and dtype,
timed alone in this run) over the measured time per step: the share of the machine's matmul throughput the step
keeps. Our backward pass is sparse (k + aux_k non-zeros per token), so it adds little to that bound; a dense
implementation also pays for the encoder-weight gradient, the decoder and its gradient.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import platform
import time
from dataclasses import replace
from functools import partial

import torch

from saelib.config import SAEConfig, TrainConfig
from saelib.train import stack_size, train_saes


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _seconds(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _saelens_fit(x: torch.Tensor, d_sae: int, k: int, batch: int, device: str) -> None:
    """One SAELens TopK SAE trained on the batches of `x` with SAELens's own trainer."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=d_sae, k=k, device=device))
    cfg = SAETrainerConfig(
        total_training_samples=x.shape[0],
        train_batch_size_samples=batch,
        device=device,
        lr=2e-4,
        lr_end=0.0,
        dead_feature_window=10**9,
        feature_sampling_window=10**9,
    )
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        SAETrainer(cfg=cfg, sae=sae, data_provider=iter(x.split(batch))).fit()


def _saelens_sequential(S: int, *args) -> None:
    for _ in range(S):
        _saelens_fit(*args)


def _ours_sequential(cfg: SAEConfig, train: TrainConfig, x: torch.Tensor) -> None:
    for s in range(cfg.n_seeds):
        train_saes(replace(cfg, n_seeds=1, seed=cfg.seed + s), replace(train, seeds_per_stack=1), x, progress=False)


def _bare_matmul(S: int, batch: int, d_in: int, d_sae: int, device: str) -> float:
    """Seconds of the encoder forward matmul for S seeds, `x @ W_enc`, alone."""
    x = torch.randn(batch, d_in, device=device).unsqueeze(0).expand(S, -1, -1)
    w = torch.randn(S, d_in, d_sae, device=device)
    torch.bmm(x, w)
    return _seconds(lambda: torch.bmm(x, w), repeats=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096], help="d_sae values")
    p.add_argument("--d-in", type=int, default=640)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-saelens", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="best of this many runs of each (interleaved)")
    a = p.parse_args()
    logging.disable(logging.WARNING)

    x = torch.randn(a.batch * a.steps, a.d_in)
    print(
        f"machine: {platform.machine()} {platform.processor()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {a.device}; d_in={a.d_in} k={a.k} batch={a.batch} "
        f"steps={a.steps}\n"
    )
    cols = [
        ("d_sae", 6),
        ("S", 2),
        ("run", 22),
        ("s/step", 7),
        ("tok*seeds/s", 11),
        ("vs SAELens", 10),
        ("matmul eff.", 11),
    ]
    print("| " + " | ".join(f"{name:>{w}}" if name != "run" else f"{name:<{w}}" for name, w in cols) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in cols) + "|")
    stacking = {}
    for d_sae in a.sizes:
        for S in a.seeds:
            cfg = SAEConfig(d_in=a.d_in, d_sae=d_sae, k=a.k, n_seeds=S)
            train = TrainConfig(n_tokens=a.batch * a.steps, batch_size=a.batch, device=a.device, log_every=10**9)
            warm = replace(train, n_tokens=a.batch)
            train_saes(cfg, warm, x, progress=False)
            runs = {
                "ours, one stack": partial(train_saes, cfg, replace(train, seeds_per_stack=S), x, progress=False),
                "ours, auto schedule": partial(train_saes, cfg, train, x, progress=False),
                "ours, sequential": partial(_ours_sequential, cfg, train, x),
            }
            if not a.no_saelens:
                _saelens_fit(x[: a.batch], d_sae, a.k, a.batch, a.device)  # warm-up
                runs["SAELens, sequential"] = partial(_saelens_sequential, S, x, d_sae, a.k, a.batch, a.device)
            secs = {name: float("inf") for name in runs}
            for _ in range(a.repeats):  # interleaved, so that every run sees the same machine load
                for name, fn in runs.items():
                    secs[name] = min(secs[name], _seconds(fn))
            stacking[(d_sae, S)] = (
                secs["ours, sequential"] / secs["ours, one stack"],
                secs["ours, sequential"] / secs["ours, auto schedule"],
                stack_size(cfg, train),
            )
            bound = _bare_matmul(S, a.batch, a.d_in, d_sae, a.device)
            ref = secs.get("SAELens, sequential")
            for name, sec in secs.items():
                per_step = sec / a.steps
                eff = bound / per_step
                vs = f"{ref / sec:10.2f}" if ref else f"{'-':>10}"
                print(
                    f"| {d_sae:>6} | {S:>2} | {name:<22} | {per_step:7.2f} | {a.batch * a.steps * S / sec:11,.0f} "
                    f"| {vs} | {eff:11.0%} |"
                )
    _print_stacking(stacking)


def _print_stacking(stacking: dict) -> None:
    print("\nspeed over S sequential single-seed runs (same code, same data):")
    print(f"| {'d_sae':>6} | {'S':>2} | {'one stack':>9} | {'auto schedule':>13} | {'seeds per stack (auto)':>22} |")
    print(f"|{'-' * 8}|{'-' * 4}|{'-' * 11}|{'-' * 15}|{'-' * 24}|")
    for (d_sae, S), (one, auto, per) in stacking.items():
        print(f"| {d_sae:>6} | {S:>2} | {one:8.2f}x | {auto:12.2f}x | {per:>22} |")


if __name__ == "__main__":
    main()
