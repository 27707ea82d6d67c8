"""A cost estimate of the paper-scale grid in GPU-hours, from FLOPs per SAE and this CPU's measured speed.

    python benchmarks/estimate_cost.py            # about a minute on a 2-core CPU
    python benchmarks/estimate_cost.py --steps 5  # a steadier CPU measurement

Method (an estimate, not a measurement of any GPU):
1. FLOPs per token and seed of a training step, from the configuration: TopK trains sparsely (the encoder forward
   `2 d_in d_sae`, plus the sparse backward and decoder, `6 d_in (k + aux_k)`); the dense variants (BatchTopK,
   ReLU, JumpReLU) pay the usual `6 x 2 d_in d_sae` (forward and backward of encoder and decoder).
2. This CPU's training speed, measured: `train_saes` of one TopK stack at d_in 768 (GPT-2 small and Pythia-160M's
   width), and this CPU's float32 matmul peak, measured on a large `torch.mm`. Their ratio is the share of the
   peak that training keeps (the CPU efficiency).
3. A GPU is assumed to keep the same share of its own peak: GPU tokens/s = CPU tokens/s x GPU peak / CPU peak,
   for the float32 path (the default) and for the TF32 / bf16 fast paths (`TrainConfig.tf32`, `autocast_bf16`).
   The peaks are the vendors' dense datasheet numbers (no sparsity).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from saelib.chapters import grid
from saelib.config import SAEConfig, TrainConfig
from saelib.train import train_saes

GPU_PEAKS = {  # dense TFLOP/s: float32 (CUDA cores), TF32 / bf16 (tensor cores); NVIDIA datasheets
    "A100 SXM": (19.5, 156.0),
    "H100 SXM": (67.0, 494.7),
    "H200": (67.0, 494.7),
}
WIDTH = {"EleutherAI/pythia-160m": 768, "gpt2": 768}
"""Residual width d_in of the models the paper-scale presets use."""


def flops_per_token(cfg: SAEConfig, train: TrainConfig) -> float:
    """Training FLOPs per token and seed (see the module docstring)."""
    if cfg.variant == "topk":
        return 2 * cfg.d_in * cfg.d_sae + 6 * cfg.d_in * (cfg.k + min(train.aux_k, cfg.d_sae))
    return 12 * cfg.d_in * cfg.d_sae


def cpu_peak(n: int = 2048, repeats: int = 3) -> float:
    """Measured float32 matmul FLOP/s of this CPU (best of `repeats` products of two `n x n` matrices)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_time(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_tokens_per_second(cfg: SAEConfig, train: TrainConfig, steps: int) -> float:
    """Measured training tokens x seeds per second of `cfg` on this CPU (one warm-up step excluded)."""
    x = torch.randn(train.batch_size * (steps + 1), cfg.d_in)
    warm = TrainConfig(**{**train.__dict__, "n_tokens": train.batch_size, "device": "cpu"})
    train_saes(cfg, warm, x, progress=False)
    full = TrainConfig(**{**train.__dict__, "n_tokens": train.batch_size * steps, "device": "cpu"})
    return train.batch_size * steps * cfg.n_seeds / _time(lambda: train_saes(cfg, full, x, progress=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--d-sae", type=int, default=4096, help="dictionary size of the CPU measurement")
    p.add_argument("--batch", type=int, default=1024)
    args = p.parse_args()

    probe = SAEConfig(d_in=768, d_sae=args.d_sae, k=32, n_seeds=1)
    probe_train = TrainConfig(n_tokens=args.batch, batch_size=args.batch, lr=1e-3)
    peak = cpu_peak()
    tps = cpu_tokens_per_second(probe, probe_train, args.steps)
    eff = tps * flops_per_token(probe, probe_train) / peak
    cpu = platform.processor() or platform.machine()
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"CPU float32 matmul peak (measured): {peak / 1e9:.1f} GFLOP/s")
    print(
        f"CPU training, TopK d_in 768 d_sae {args.d_sae} k 32 batch {args.batch}: {tps:,.0f} tokens/s "
        f"= {eff:.0%} of the peak"
    )
    print()

    study = grid.study("paper")
    d_in = WIDTH.get(study.activations[0].model, 768)
    rows = []
    for variant in study.variants:
        for d_sae in study.sizes:
            cfg = SAEConfig(d_in=d_in, d_sae=d_sae, variant=variant, k=study.k, n_seeds=study.n_seeds)
            rows.append((f"{variant} {d_sae}", cfg, study.train.n_tokens, len(study.layers)))
    main_cfg = SAEConfig(d_in=768, d_sae=16384, variant="topk", k=64, n_seeds=96)
    rows.append(("paper main setup: topk 16384 k64, 96 seeds, 1B tokens", main_cfg, 1_000_000_000, 1))

    header = ["grid point (per layer)", "TFLOP / SAE"] + [f"{g} fp32 h" for g in GPU_PEAKS] + ["H100 tf32/bf16 h"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    totals = [0.0] * (len(GPU_PEAKS) + 1)
    for name, cfg, n_tokens, n_layers in rows:
        flops_sae = flops_per_token(cfg, study.train) * n_tokens
        point = flops_sae * cfg.n_seeds
        hours = [point / (eff * fp32 * 1e12) / 3600 for fp32, _ in GPU_PEAKS.values()]
        hours.append(point / (eff * GPU_PEAKS["H100 SXM"][1] * 1e12) / 3600)
        if not name.startswith("paper main"):
            totals = [t + h * n_layers for t, h in zip(totals, hours)]
        print(f"| {name} | {flops_sae / 1e12:,.1f} | " + " | ".join(f"{h:,.2f}" for h in hours) + " |")
    print(
        f"| **whole `paper` preset grid** ({len(study.layers)} layers x {len(study.variants)} variants x "
        f"{len(study.sizes)} sizes x {study.n_seeds} seeds) | | " + " | ".join(f"**{t:,.1f}**" for t in totals) + " |"
    )
    print()
    print(
        f"GPU-hours per grid point (all {study.n_seeds} seeds, {study.train.n_tokens / 1e6:.0f}M tokens each), at the "
        f"CPU's measured efficiency ({eff:.0%} of peak); scoring, collection and the language model are not counted."
    )


if __name__ == "__main__":
    main()
