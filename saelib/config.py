"""Frozen, documented, validated configurations and the named scales (book/methods.md lists every choice).

Every field has a docstring under it (as in EleutherAI's sparsify); `__post_init__` rejects bad values with a
one-line error naming the parameter. A scale name (`smoke`, `default`, `gpu`, `paper`) picks the size of a whole
experiment; the paper's grid is only a bigger value of it.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass

import torch

SCALES = ("smoke", "default", "gpu", "paper")
"""Named experiment sizes: `smoke` (seconds, tests and CI), `default` (2-core CPU, offline), `gpu`, `paper`."""

VARIANTS = ("topk", "batchtopk", "relu", "jumprelu")
"""SAE variants: TopK (Gao et al. 2024), BatchTopK (Bussmann et al. 2024), ReLU + L1, JumpReLU (Rajamanoharan
et al. 2024)."""


def derive_seed(seed: int, purpose: str) -> int:
    """A generator seed for one `purpose` (`"sae-init"`, `"synthetic"`, `"batch-order"`, ...) derived from `seed`.

    Different purposes get unrelated streams, so that, say, SAE seed 0's initial decoder never equals the synthetic
    ground truth drawn with seed 0 (both would otherwise start from `torch.manual_seed(0)`).
    """
    digest = hashlib.sha256(f"{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a `device` field names: `auto` is CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_scale(scale: str) -> str:
    """Return `scale` if it names a known scale, else raise a one-line error naming the parameter."""
    if scale not in SCALES:
        raise ValueError(f"SCALE={scale!r} is not a known scale; choose one of {', '.join(SCALES)}")
    return scale


def check_integer(owner: str, **values: int) -> None:
    """Raise a one-line `ValueError` naming the field unless each value is an integer (`bool` is not one)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{owner}.{name}={value!r} must be an integer, got {type(value).__name__}")


def check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value is None or not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{owner}.{name}={value!r} must be a positive finite number")


def check_fraction(owner: str, lo_open: bool = False, **values: float) -> None:
    for name, value in values.items():
        ok = (0 < value if lo_open else 0 <= value) and value <= 1
        if not ok:
            raise ValueError(f"{owner}.{name}={value!r} must lie in {'(' if lo_open else '['}0, 1]")


@dataclass(frozen=True)
class SAEConfig:
    """Architecture of a stack of `n_seeds` independently initialised SAEs of one shape."""

    d_in: int
    """Width of the activations (model hidden size)."""
    d_sae: int
    """Number of latents per SAE."""
    variant: str = "topk"
    """One of `VARIANTS`."""
    k: int = 32
    """Active latents per token (TopK), or on average per token over a batch (BatchTopK)."""
    l1_coefficient: float = 0.2
    """Weight of the L1 penalty on latents (ReLU variant), relative to the normalised MSE (the L1 norm of the
    latents is divided by the batch's standard deviation, so the weight does not depend on the activations' scale)."""
    l0_coefficient: float = 0.05
    """Weight of the L0 penalty (JumpReLU variant), per active latent, relative to the normalised MSE."""
    jumprelu_init_threshold: float = 0.1
    """Initial JumpReLU threshold, in units of the activations (scale it with them)."""
    jumprelu_bandwidth: float = 0.1
    """Width of the rectangle kernel of JumpReLU's straight-through estimator."""
    n_seeds: int = 5
    """Number of SAEs trained at once, differing only in initialisation."""
    seed: int = 0
    """Seed of the first SAE; seed `s` of the stack is initialised from `torch.Generator` seeded `seed + s`."""

    def __post_init__(self) -> None:
        check_integer("SAEConfig", d_in=self.d_in, d_sae=self.d_sae, k=self.k, n_seeds=self.n_seeds, seed=self.seed)
        check_positive("SAEConfig", d_in=self.d_in, d_sae=self.d_sae, n_seeds=self.n_seeds)
        if self.variant not in VARIANTS:
            raise ValueError(f"SAEConfig.variant={self.variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if self.variant in ("topk", "batchtopk") and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"SAEConfig.k={self.k} must lie in [1, d_sae={self.d_sae}]")
        check_positive(
            "SAEConfig",
            l1_coefficient=self.l1_coefficient,
            l0_coefficient=self.l0_coefficient,
            jumprelu_init_threshold=self.jumprelu_init_threshold,
            jumprelu_bandwidth=self.jumprelu_bandwidth,
        )
        if self.seed < 0:
            raise ValueError(f"SAEConfig.seed={self.seed} must be >= 0")

    @property
    def seeds(self) -> list[int]:
        """The generator seed of each SAE in the stack."""
        return [self.seed + s for s in range(self.n_seeds)]


@dataclass(frozen=True)
class TrainConfig:
    """How a stack of SAEs is trained: every seed sees the same batches in the same order."""

    n_tokens: int
    """Training tokens (activation vectors) seen by each seed."""
    batch_size: int = 4096
    """Activation vectors per step."""
    lr: float | None = None
    """Adam learning rate; None uses Gao et al.'s rule 2e-4 / sqrt(d_sae / 16384)."""
    warmup_frac: float = 0.05
    """Fraction of steps with a linear learning-rate warm-up."""
    decay_frac: float = 0.2
    """Fraction of final steps over which the learning rate decays linearly to zero."""
    aux_k: int = 256
    """Dead latents used by the AuxK loss (TopK variants; Gao et al. 2024, appendix A.2), capped at d_sae."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss."""
    dead_window: float = 0.05
    """A latent that has not fired for this fraction of the run's tokens (at least one batch) counts as dead for
    AuxK, so that AuxK acts in runs of any length (Gao et al. 2024 use 10M tokens of much longer runs)."""
    dead_after_tokens: int | None = None
    """Fixed dead window in tokens instead of `dead_window` (None: the fraction)."""
    max_grad_norm: float = 1.0
    """Per-seed gradient-norm clip (per seed, so that seeds stay independent)."""
    data_seed: int = 0
    """Seed of the batch order shared by all SAE seeds."""
    normalize_activations: bool = False
    """Train on activations scaled by one constant so that their mean squared norm is d_in (SAELens's
    `expected_average_only_in`); the constant is folded back into the trained SAE, which then takes raw activations.
    Use it for language-model activations, whose scale (hundreds, with outlier dimensions) would otherwise make
    Adam's steps on the biases and thresholds negligible."""
    checkpoint_every: int = 0
    """Write a checkpoint every this many steps (0: only on time, see `checkpoint_seconds`, and when interrupted)."""
    checkpoint_seconds: float = 300.0
    """Also write a checkpoint when this many seconds of training passed since the last one (0: never on time),
    so that a killed run (SIGKILL, out of memory) loses at most this much work. Training that is sent SIGTERM
    finishes its step, writes a checkpoint and then ends as the signal asks."""
    log_every: int = 50
    """Record training curves every this many steps."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu`, `cuda`, `cuda:1`, ..."""
    autocast_bf16: bool = False
    """Fast path: run the SAE's forward pass under bfloat16 autocast (its outputs, the losses, the gradients and
    Adam stay float32). Changes the numbers slightly; off by default."""
    tf32: bool = False
    """Fast path: allow TF32 matmuls while training (`torch.set_float32_matmul_precision("high")`, inputs rounded to
    10 mantissa bits on Ampere and later GPUs). Changes the numbers slightly; off by default."""
    prefetch: bool = False
    """Fast path: read the next batches in a background thread while a step trains, pinned and copied to the GPU
    asynchronously on CUDA. Same numbers."""
    torch_compile: bool = False
    """Fast path: `torch.compile` the SAE's forward pass (a one-off compile time per run; same numbers up to float
    rounding)."""
    seeds_per_stack: int | None = None
    """Train the seeds as stacks of at most this many, one stack after another (seeds never interact: same
    numbers up to float rounding). None: all at once on a GPU; on CPU as many as keep a batch's reconstructions
    within `train.CPU_STACK_BYTES`, beyond which a stack runs slower than one seed after another
    (`benchmarks/bench_train.py`)."""

    def __post_init__(self) -> None:
        check_positive("TrainConfig", n_tokens=self.n_tokens, batch_size=self.batch_size, log_every=self.log_every)
        if self.lr is not None:
            check_positive("TrainConfig", lr=self.lr)
        check_fraction("TrainConfig", warmup_frac=self.warmup_frac, decay_frac=self.decay_frac)
        if self.warmup_frac + self.decay_frac > 1:
            raise ValueError("TrainConfig.warmup_frac + decay_frac must be <= 1")
        check_positive("TrainConfig", aux_k=self.aux_k, max_grad_norm=self.max_grad_norm)
        check_fraction("TrainConfig", lo_open=True, dead_window=self.dead_window)
        if self.dead_after_tokens is not None:
            check_positive("TrainConfig", dead_after_tokens=self.dead_after_tokens)
        if self.aux_coefficient < 0 or self.checkpoint_every < 0:
            raise ValueError("TrainConfig.aux_coefficient and checkpoint_every must be >= 0")
        if self.seeds_per_stack is not None:
            check_integer("TrainConfig", seeds_per_stack=self.seeds_per_stack)
            check_positive("TrainConfig", seeds_per_stack=self.seeds_per_stack)
        if not (self.checkpoint_seconds >= 0 and math.isfinite(self.checkpoint_seconds)):
            raise ValueError(f"TrainConfig.checkpoint_seconds={self.checkpoint_seconds!r} must be a finite number >= 0")

    @property
    def dead_after(self) -> int:
        """Tokens without firing after which a latent counts as dead: `dead_after_tokens`, else `dead_window` of
        the run, at least one batch."""
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        return max(self.batch_size, math.ceil(self.dead_window * self.n_tokens))

    @property
    def n_steps(self) -> int:
        """Optimizer steps: `ceil(n_tokens / batch_size)`."""
        return math.ceil(self.n_tokens / self.batch_size)


@dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic activation model with isolated features and low-rank groups (book/methods.md, "The synthetic model").

    Each sample is a sparse sum of isolated features (random unit directions, positive magnitudes) plus, for each
    active group, a vector inside that group's `group_rank`-dimensional subspace, plus Gaussian noise. In
    `isotropic` mode a group's code is rotation-symmetric inside its subspace, so no basis of it is preferred; in
    `overcomplete` mode the group has `features_per_group > group_rank` directions, several active together.
    """

    d_in: int = 64
    """Width of the activations."""
    n_isolated: int = 64
    """Isolated ground-truth features."""
    p_isolated: float = 0.03
    """Probability that an isolated feature is active in a sample."""
    n_groups: int = 4
    """Low-rank feature groups."""
    group_rank: int = 3
    """Dimension of each group's subspace."""
    group_mode: str = "isotropic"
    """`isotropic` (rotation-symmetric code in the subspace) or `overcomplete` (more features than the rank)."""
    features_per_group: int = 8
    """Directions per group in `overcomplete` mode (must exceed `group_rank`)."""
    p_group: float = 0.1
    """Probability that a group is active in a sample."""
    p_group_feature: float = 0.5
    """`overcomplete` mode: probability that each of an active group's features fires."""
    noise_std: float = 0.01
    """Standard deviation of isotropic Gaussian noise per coordinate."""
    n_samples: int = 100_000
    """Samples drawn."""
    seed: int = 0
    """Seed of the ground truth and the samples."""

    def __post_init__(self) -> None:
        check_positive("SyntheticConfig", d_in=self.d_in, n_samples=self.n_samples)
        if self.n_isolated < 0 or self.n_groups < 0 or self.n_isolated + self.n_groups == 0:
            raise ValueError("SyntheticConfig.n_isolated and n_groups must be >= 0, and not both 0")
        check_fraction(
            "SyntheticConfig", p_isolated=self.p_isolated, p_group=self.p_group, p_group_feature=self.p_group_feature
        )
        if self.group_mode not in ("isotropic", "overcomplete"):
            raise ValueError(f"SyntheticConfig.group_mode={self.group_mode!r} must be 'isotropic' or 'overcomplete'")
        if self.n_groups and not 1 <= self.group_rank <= self.d_in:
            raise ValueError(f"SyntheticConfig.group_rank={self.group_rank} must lie in [1, d_in={self.d_in}]")
        if self.group_mode == "overcomplete" and self.features_per_group <= self.group_rank:
            raise ValueError(
                f"SyntheticConfig.features_per_group={self.features_per_group} must exceed group_rank={self.group_rank}"
            )
        if self.noise_std < 0:
            raise ValueError(f"SyntheticConfig.noise_std={self.noise_std} must be >= 0")


STABILITY_ESTIMATORS = ("anchor", "all_pairs")
"""Per-feature stability estimators and their labels (`StabilityConfig.estimator`)."""


@dataclass(frozen=True)
class StabilityConfig:
    """How per-feature stability is scored (book/intro.md, "Definitions used throughout")."""

    threshold: float = 0.7
    """Cosine `tau` above which a feature counts as reappearing in another seed."""
    estimator: str = "anchor"
    """`anchor`, the paper's: one anchor seed against the N other seeds; a latent's stability `p` is the share of
    them holding a latent whose decoder cosine with it (many-to-one argmax) is >= `threshold`, and its label comes
    from the endpoints: stable when `p >= 1 - epsilon`, unstable when `p <= epsilon`, the middle left out. Chapter 1
    reports the `anchor` seed's latents; where a chapter needs the labels of other seeds too, each seed is taken as
    the anchor in turn (the same `p` as `all_pairs` gives it). `all_pairs`, the first wave's rule: every seed's
    latents, labelled at `stable_at` / `unstable_at`."""
    anchor: int = 0
    """The anchor seed (its position in the stack) of the `anchor` estimator."""
    epsilon: float = 0.05
    """Endpoint width of the `anchor` estimator's labels (the paper's 0.05: with N = 95 seeds, stable means at most
    4 misses)."""
    stable_at: float = 0.8
    """`all_pairs` estimator: a feature is stable when its stability is at least this."""
    unstable_at: float = 0.2
    """`all_pairs` estimator: a feature is unstable when its stability is at most this."""
    similarity: str = "decoder"
    """`decoder`, `encoder`, or `min` (the smaller of the two cosines)."""
    chunk_size: int = 4096
    """Most rows and columns per block of the cosine matrix (on CPU also at most `stability.CPU_BLOCK`, faster);
    memory is O(chunk_size^2) whatever d_sae is."""

    def __post_init__(self) -> None:
        check_fraction("StabilityConfig", lo_open=True, threshold=self.threshold)
        check_fraction("StabilityConfig", stable_at=self.stable_at, unstable_at=self.unstable_at)
        if self.unstable_at >= self.stable_at:
            raise ValueError("StabilityConfig.unstable_at must be below stable_at")
        if self.estimator not in STABILITY_ESTIMATORS:
            raise ValueError(
                f"StabilityConfig.estimator={self.estimator!r} must be one of {', '.join(STABILITY_ESTIMATORS)}"
            )
        check_integer("StabilityConfig", anchor=self.anchor)
        if self.anchor < 0:
            raise ValueError(f"StabilityConfig.anchor={self.anchor} must be >= 0")
        if not 0 <= self.epsilon < 0.5:
            raise ValueError(f"StabilityConfig.epsilon={self.epsilon!r} must lie in [0, 0.5)")
        if self.similarity not in ("decoder", "encoder", "min"):
            raise ValueError(f"StabilityConfig.similarity={self.similarity!r} must be decoder, encoder or min")
        check_positive("StabilityConfig", chunk_size=self.chunk_size)

    @property
    def stable_cut(self) -> float:
        """Stability at or above which a latent is labelled stable: `1 - epsilon` (`anchor`) or `stable_at`."""
        return 1 - self.epsilon if self.estimator == "anchor" else self.stable_at

    @property
    def unstable_cut(self) -> float:
        """Stability at or below which a latent is labelled unstable: `epsilon` (`anchor`) or `unstable_at`."""
        return self.epsilon if self.estimator == "anchor" else self.unstable_at


# --- Pooling unique cross-seed features (saelib.pooling) ----------------------------------------------------------

POOL_RANKINGS = ("seeds", "mass")
"""How pooled clusters are ordered before the first `d_sae` are kept (`PoolingConfig.rank_by`)."""


@dataclass(frozen=True)
class PoolingConfig:
    """How a pooled SAE is built from the features of a group of seeds (book/methods.md, "Chapter 5: pooling").

    The alive decoder rows of the group's seeds are pooled, near-duplicates merged (one representative per cluster),
    the clusters ranked and the first `d_sae` kept; the SAE built from them is fine-tuned briefly. Two pooled SAEs
    from disjoint groups of seeds are compared as two seeds of a standard SAE are.
    """

    threshold: float = 0.7
    """Cosine at or above which two pooled decoder rows are near-duplicates (the stability threshold tau)."""
    seeds_per_group: int = 2
    """Seeds pooled into each pooled SAE; the two pooled SAEs use seeds `0..n-1` and `n..2n-1`."""
    large_factor: float = 1.5
    """Size of the larger pooled variant, as a multiple of the standard `d_sae` (capped by the clusters found)."""
    rank_by: str = "seeds"
    """`seeds`: clusters holding more of the group's seeds first, then by activation mass; `mass`: mass only."""
    mass_tokens: int = 65_536
    """Training tokens on which each latent's activation mass (mean activation per token) and liveness are measured."""
    finetune_frac: float = 0.25
    """Fine-tuning tokens, as a fraction of the standard SAEs' training tokens."""
    finetune_lr: float | None = None
    """Fine-tuning learning rate; None uses the standard training's."""
    train_decoder: bool = False
    """Fine-tune the decoder rows too; by default they stay as pooled (the encoder and both biases train)."""
    sweep: tuple[int, ...] = (1, 2, 3, 4)
    """Seeds per group in the sweep over the number of pooled seeds (needs `2 * max(sweep)` seeds)."""
    n_large_standard: int = 2
    """Standard seeds trained at the larger variant's size, its like-for-like baseline."""

    def __post_init__(self) -> None:
        check_fraction("PoolingConfig", lo_open=True, threshold=self.threshold, finetune_frac=self.finetune_frac)
        check_positive("PoolingConfig", seeds_per_group=self.seeds_per_group, mass_tokens=self.mass_tokens)
        if not self.large_factor > 1 or not math.isfinite(self.large_factor):
            raise ValueError(f"PoolingConfig.large_factor={self.large_factor!r} must be a finite number > 1")
        if self.rank_by not in POOL_RANKINGS:
            raise ValueError(f"PoolingConfig.rank_by={self.rank_by!r} must be one of {', '.join(POOL_RANKINGS)}")
        if self.finetune_lr is not None:
            check_positive("PoolingConfig", finetune_lr=self.finetune_lr)
        if not self.sweep or any(not isinstance(n, int) or n < 1 for n in self.sweep):
            raise ValueError(f"PoolingConfig.sweep={self.sweep!r} must be non-empty positive integers")
        if self.n_large_standard < 2:
            raise ValueError(f"PoolingConfig.n_large_standard={self.n_large_standard} must be >= 2 (a pair of seeds)")

    @property
    def n_seeds_needed(self) -> int:
        """Seeds of the reference SAE that the main comparison and the sweep pool from."""
        return 2 * max(self.seeds_per_group, *self.sweep)
