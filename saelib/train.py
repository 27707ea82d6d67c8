"""One training loop for S SAEs at once: the same batches for every seed, independent initialisations.

Every seed's loss is computed with batched matmuls and summed; since Adam is elementwise and the gradient clip is
applied per seed, the seeds never interact: a stack of S seeds trains exactly as S single-seed runs would
(`tests/core/test_train.py` checks this). Checkpoints make an interrupted run resume where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saelib.cache import cached_artifact, disk_full_is_one_line
from saelib.config import SAEConfig, TrainConfig, derive_seed, resolve_device
from saelib.paths import atomic_write_json
from saelib.sae import SAE, check_activations, load_sae, save_sae

log = logging.getLogger(__name__)

TRAIN_VERSION = 2
"""Bumped whenever the same configs would train other weights (initialisation, loss, optimiser); part of the key
of every cached stack, so that a change of the code never serves a stale artifact."""


def learning_rate(cfg: SAEConfig, train: TrainConfig) -> float:
    """`train.lr`, or Gao et al.'s scaling rule `2e-4 / sqrt(d_sae / 2**14)`."""
    return train.lr if train.lr is not None else 2e-4 / math.sqrt(cfg.d_sae / 2**14)


def lr_factor(step: int, n_steps: int, warmup_frac: float, decay_frac: float) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last `decay_frac` of the steps."""
    warm = max(1, round(warmup_frac * n_steps))
    decay = round(decay_frac * n_steps)
    if step < warm:
        return (step + 1) / warm
    if decay and step >= n_steps - decay:
        return max(0.0, (n_steps - step) / decay)
    return 1.0


def batch_stream(data: Any, batch_size: int, data_seed: int, start_step: int = 0) -> Iterator[Tensor]:
    """Endless stream of `(batch_size, d_in)` batches, epoch `e` shuffled with seed `data_seed + e`.

    `data` is a tensor `(N, d_in)` or an object with `batches(batch_size, *, seed)` yielding one shuffled pass.
    The first `start_step` batches are skipped, so that a resumed run sees the batches it would have seen.
    """
    if isinstance(data, Tensor):
        n_per_epoch = data.shape[0] // batch_size
        if n_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} exceeds the {data.shape[0]} activations given")
        epoch, offset = divmod(start_step, n_per_epoch)
        while True:
            gen = torch.Generator().manual_seed(derive_seed(data_seed + epoch, "batch-order"))
            perm = torch.randperm(data.shape[0], generator=gen)
            for i in range(offset, n_per_epoch):
                yield data[perm[i * batch_size : (i + 1) * batch_size]]
            epoch, offset = epoch + 1, 0
    if not hasattr(data, "batches"):
        raise TypeError(f"data must be a tensor (N, d_in) or have a batches() method, got {type(data).__name__}")
    epoch, skipped = 0, 0
    while True:
        empty = True
        for batch in data.batches(batch_size, seed=data_seed + epoch):
            empty = False
            if skipped < start_step:
                skipped += 1
                continue
            yield batch
        if empty:
            raise ValueError("data.batches() yielded no batch")
        epoch += 1


class TrainResult(NamedTuple):
    """What `train_saes` returns."""

    sae: SAE
    """The trained stack, in inference mode."""
    history: dict[str, Any]
    """Training curves: `step`, `tokens`, `lr`, and per-seed lists `fvu`, `l0`, `dead_fraction`, `aux_loss`; plus
    `input_scale`, the constant the inputs were multiplied by while training (1.0 unless `normalize_activations`)."""


def _residual_loss(e_hat: Tensor, residual: Tensor, dead: Tensor) -> Tensor:
    """AuxK loss per seed `(S,)`: how well the dead latents' reconstruction `e_hat` explains the residual
    (Gao et al. 2024, A.2), normalised by the residual's variance; 0 for seeds without dead latents."""
    var = (residual - residual.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1).clamp_min(1e-12)
    loss = (e_hat - residual).pow(2).sum(-1).mean(-1) / var
    return torch.where(dead.any(-1), loss, torch.zeros_like(loss))


def _dense_aux_hat(sae: SAE, pre: Tensor, dead: Tensor, aux_k: int) -> Tensor:
    """Reconstruction `(S, B, d_in)` by the top `aux_k` dead latents of each token, from dense pre-activations."""
    masked = pre.masked_fill(~dead.unsqueeze(1), -torch.inf)  # (S, B, d_sae)
    values, idx = masked.topk(min(aux_k, sae.cfg.d_sae), dim=-1, sorted=False)
    z = torch.zeros_like(pre).scatter_(-1, idx, values.relu())  # -inf (alive) entries become 0
    return torch.bmm(z, sae.W_dec)  # no bias: it reconstructs a residual


@torch.no_grad()
def activation_scale(data: Any, batch_size: int, data_seed: int, n_batches: int = 8) -> float:
    """The constant `c` with `E ||c x||^2 = d_in`, estimated on the first `n_batches` batches of the stream."""
    total, n = 0.0, 0
    for i, x in enumerate(batch_stream(data, batch_size, data_seed)):
        if i == n_batches:
            break
        total += float(x.double().pow(2).sum())
        n += x.shape[0]
        d_in = x.shape[-1]
    return math.sqrt(d_in * n / total) if total > 0 else 1.0


def _clip_per_seed_(params: Sequence[Tensor], max_norm: float) -> None:
    """Scale each seed's gradient so that its norm over all parameters is at most `max_norm`."""
    grads = [p.grad for p in params if p.grad is not None]
    sq = cast(Tensor, sum(torch.linalg.vector_norm(g.flatten(1), dim=1).pow(2) for g in grads))  # (S,)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    if bool((scale < 1).any()):  # most steps clip nothing: skip the passes over the weights
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to a temporary file beside `path`, then rename it: `path` is a complete checkpoint or
    absent. The temporary file is removed on every failure; a full disk raises a one-line `DiskFullError`."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with disk_full_is_one_line(path):
            torch.save(state, tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _clear_stale_tmp(folder: Path) -> None:
    """Remove `checkpoint.pt.tmp*` files that an interrupted save left behind."""
    for tmp in folder.glob(f"{CHECKPOINT}.tmp*"):
        log.warning("removing %s, left by an interrupted checkpoint save", tmp)
        tmp.unlink(missing_ok=True)


def _load_checkpoint(ckpt: Path, device: torch.device) -> dict | None:
    """The state in `ckpt`, or None (with a warning, the file deleted) when it cannot be read: training then
    starts over instead of failing on every rerun."""
    try:
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if not isinstance(state, dict) or not {"cfg", "train", "sae", "opt", "sched", "step"} <= state.keys():
            raise ValueError("not a training checkpoint")
    except Exception as e:  # a truncated, corrupt or foreign file
        log.warning("discarding unreadable checkpoint %s (%s: %s); training starts over", ckpt, type(e).__name__, e)
        ckpt.unlink(missing_ok=True)
        return None
    return state


def train_saes(
    cfg: SAEConfig,
    train: TrainConfig,
    data: Any,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    init: SAE | None = None,
    train_decoder: bool = True,
) -> TrainResult:
    """Train `cfg.n_seeds` SAEs at once on the same batches.

    Args:
        cfg: architecture and seeds.
        train: optimisation settings; `train.n_tokens` tokens per seed.
        data: activations `(N, d_in)`, or an object with `batches(batch_size, *, seed)`.
        checkpoint_dir: where to keep `checkpoint.pt`; a run finding one there resumes from it (an unreadable one
            is discarded with a warning). A checkpoint is written every `train.checkpoint_every` steps, every
            `train.checkpoint_seconds` seconds, when the run is interrupted by an exception (KeyboardInterrupt
            included), and on SIGTERM (at the end of the current step; the signal then takes its course).
        progress: show a tqdm bar.
        init: start from these weights (an SAE taking raw activations, `init.cfg == cfg`) instead of a fresh
            initialisation, e.g. to fine-tune; the decoder bias then keeps its value instead of the first batch's
            mean. A checkpoint found in `checkpoint_dir` still wins (it does not record `init`).
        train_decoder: False freezes the decoder rows `W_dec` (the encoder and both biases still train).
    """
    if isinstance(data, Tensor):  # before anything casts them: integer activations are a mistake, not data
        check_activations(data[:1], cfg.d_in, "data")
    device = resolve_device(train.device)
    per_stack = stack_size(cfg, train)
    if per_stack < cfg.n_seeds:  # seeds never interact: several smaller stacks, one after another, same numbers
        parts = []
        for part in split_seeds(cfg, per_stack):
            start = part.seed - cfg.seed
            sub = None if checkpoint_dir is None else Path(checkpoint_dir) / f"seeds-{start}-{start + part.n_seeds}"
            part_init = None if init is None else init.select(range(start, start + part.n_seeds))
            one = dataclasses.replace(train, seeds_per_stack=part.n_seeds)
            parts.append(
                train_saes(
                    part, one, data, checkpoint_dir=sub, progress=progress, init=part_init, train_decoder=train_decoder
                )
            )
        return concat_stacks(cfg, parts)
    n_steps = train.n_steps
    sae = SAE(cfg, device=device).train()
    if init is not None:
        if init.cfg != cfg:
            raise ValueError(f"init.cfg={init.cfg} differs from cfg={cfg}")
        sae.load_state_dict(init.state_dict())
    sae.W_dec.requires_grad_(train_decoder)
    params = [p for p in sae.parameters() if p.requires_grad]
    # fused: one kernel over all parameters, about 8x faster than the default per-tensor loop on CPU
    opt = torch.optim.Adam(params, lr=learning_rate(cfg, train), betas=(0.9, 0.999), fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, n_steps, train.warmup_frac, train.decay_frac))
    dead_after = train.dead_after
    since_fired = torch.zeros(cfg.n_seeds, cfg.d_sae, dtype=torch.long, device=device)
    history: dict[str, Any] = {k: [] for k in ("step", "tokens", "lr", "fvu", "l0", "dead_fraction", "aux_loss")}
    step, resumed = 0, False
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.parent.is_dir():
        _clear_stale_tmp(ckpt.parent)
    state = _load_checkpoint(ckpt, device) if ckpt is not None and ckpt.is_file() else None
    if ckpt is not None and state is not None:
        if state["cfg"] != dataclasses.asdict(cfg) or state["train"] != train_key(train):
            raise ValueError(f"{ckpt} was written for another configuration; delete it to start over")
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        since_fired, history, step = state["since_fired"].to(device), state["history"], state["step"]
        resumed = True
        log.info("resuming from %s at step %d/%d", ckpt, step, n_steps)

    def checkpoint() -> None:
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(
                ckpt,
                {
                    "cfg": dataclasses.asdict(cfg),
                    "train": train_key(train),
                    "sae": sae.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "since_fired": since_fired,
                    "history": history,
                    "step": step,
                },
            )

    scale = activation_scale(data, train.batch_size, train.data_seed) if train.normalize_activations else 1.0
    if init is not None and not resumed and scale != 1.0:
        sae.fold_input_scale_(1 / scale)  # init takes raw activations; training sees scaled ones
    stream = batch_stream(data, train.batch_size, train.data_seed, start_step=step)
    if train.prefetch:
        stream = prefetch_batches(stream, device)
    undo_fast_paths = fast_paths(sae, train, device)
    last_checkpoint = time.monotonic()
    terminated: list[int] = []  # SIGTERM received: finish the step, write a checkpoint, then end as asked
    previous_handler = None  # set while our SIGTERM handler is installed (only with a checkpoint, in the main thread)
    if ckpt is not None and threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
        if previous_handler is None:  # installed from C, not Python: restore the default
            previous_handler = signal.SIG_DFL
    bar = tqdm(total=n_steps, initial=step, disable=not progress, desc=f"train {cfg.n_seeds}x{cfg.variant}-{cfg.d_sae}")
    try:
        for x in stream:
            if step >= n_steps:
                break
            if step == 0:
                check_activations(x, cfg.d_in)  # as given: an integer batch is refused, not cast
            x = x.to(device, torch.float32, non_blocking=True)
            if scale != 1.0:
                x = x * scale
            if step == 0:
                if init is None:
                    with torch.no_grad():  # start the decoder bias at the data mean (shared by all seeds)
                        sae.b_dec.copy_(x.mean(0).expand_as(sae.b_dec))
            dead = since_fired >= dead_after
            use_aux = cfg.variant in ("topk", "batchtopk") and train.aux_coefficient > 0 and bool(dead.any())
            var = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
            penalty = None  # the sparsity penalty of the ReLU and JumpReLU variants (TopK variants need none)
            if cfg.variant in ("topk", "batchtopk"):  # sparse forward and backward
                step_out = sae.sparse_step(x, dead if use_aux else None, train.aux_k)
                x_hat, aux_hat = step_out.x_hat, step_out.aux_hat  # aux_hat: None unless use_aux
                with torch.no_grad():
                    active = step_out.values > 0  # (S, N)
                    fired = torch.zeros(dead.shape, dtype=torch.int8, device=dead.device)
                    fired = fired.scatter_reduce_(1, step_out.latent, active.to(torch.int8), "amax").bool()
                    l0 = active.sum(-1).float() / x.shape[0]
            else:
                out = sae(x)
                x_hat = out.x_hat
                aux_hat = None
                active = out.latents > 0  # (S, B, d_sae)
                fired = active.any(1)
                l0 = active.sum(-1).float().mean(-1)
                if cfg.variant == "relu":
                    penalty = cfg.l1_coefficient * out.latents.sum(-1).mean(-1) / var.sqrt()
                elif cfg.variant == "jumprelu":
                    penalty = cfg.l0_coefficient * sae.l0_penalty_terms(out.pre)
            fvu = (x_hat - x).pow(2).sum(-1).mean(-1) / var  # (S,)
            loss = fvu
            aux = torch.zeros_like(fvu)
            if aux_hat is not None:
                aux = _residual_loss(aux_hat, (x - x_hat).detach(), dead)
                loss = loss + train.aux_coefficient * aux
            elif penalty is not None:
                loss = loss + penalty
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            sae.remove_parallel_grads_()
            _clip_per_seed_(params, train.max_grad_norm)
            opt.step()
            sched.step()
            sae.normalize_decoder_()
            with torch.no_grad():
                since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + x.shape[0])
            step += 1
            if step % train.log_every == 0 or step == n_steps:
                with torch.no_grad():
                    history["step"].append(step)
                    history["tokens"].append(step * train.batch_size)
                    history["lr"].append(sched.get_last_lr()[0])
                    history["fvu"].append(fvu.tolist())
                    history["l0"].append(l0.tolist())
                    history["dead_fraction"].append((since_fired >= dead_after).float().mean(-1).tolist())
                    history["aux_loss"].append(aux.tolist())
                bar.set_postfix(fvu=f"{fvu.mean().item():.3f}")
            due = train.checkpoint_seconds and time.monotonic() - last_checkpoint >= train.checkpoint_seconds
            if terminated or due or (train.checkpoint_every and step % train.checkpoint_every == 0):
                checkpoint()
                last_checkpoint = time.monotonic()
            if terminated:
                log.warning("SIGTERM: checkpoint written at step %d/%d; rerun to resume", step, n_steps)
                signal.signal(signal.SIGTERM, previous_handler)
                previous_handler = None
                os.kill(os.getpid(), signal.SIGTERM)  # the previous handler (by default: end the process)
            bar.update(1)
    except BaseException as error:
        try:
            checkpoint()
        except Exception as e:  # e.g. the disk is full: report the original error, not this one
            log.warning("could not write a checkpoint after %s: %s", type(error).__name__, e)
        raise
    finally:
        bar.close()
        undo_fast_paths()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    sae.fold_input_scale_(scale)
    sae.W_dec.requires_grad_(True)
    history["input_scale"] = scale
    return TrainResult(sae.eval(), history)


CPU_STACK_BYTES = 32 * 2**20
"""On CPU, the most bytes of one batch's reconstructions `(S, B, d_in)` (float32) trained as one stack. The step's
elementwise passes over such tensors (reconstruction, residual, losses, their gradients) run from memory once they
outgrow the processor's caches, and then S seeds at once lose to S single-seed runs: measured on this project's 2-core
machine (benchmarks/README.md), one stack of 8 seeds at batch 4096 (80 MiB) ran at 0.85-0.89x of sequential runs for
d_sae 1024-4096, while 9 seeds at batch 1024 (22.5 MiB) ran at 1.06-1.16x for d_sae 512-1024."""


def stack_size(cfg: SAEConfig, train: TrainConfig) -> int:
    """Seeds per stack for `train_saes`: `train.seeds_per_stack`, else all of them on a GPU, and on CPU as many as
    keep a batch's reconstructions within `CPU_STACK_BYTES` (at least one)."""
    if train.seeds_per_stack is not None:
        return min(train.seeds_per_stack, cfg.n_seeds)
    if resolve_device(train.device).type != "cpu":
        return cfg.n_seeds
    return max(1, min(cfg.n_seeds, CPU_STACK_BYTES // (4 * train.batch_size * cfg.d_in)))


def split_seeds(cfg: SAEConfig, seeds_per_stack: int) -> list[SAEConfig]:
    """`cfg`'s seeds as consecutive stacks of at most `seeds_per_stack` (each `SAEConfig.seed` offset to its first
    seed, so that seed i is still initialised from `derive_seed(cfg.seed + i)`)."""
    if seeds_per_stack < 1:
        raise ValueError(f"seeds_per_stack={seeds_per_stack} must be >= 1")
    return [
        dataclasses.replace(cfg, seed=cfg.seed + start, n_seeds=min(seeds_per_stack, cfg.n_seeds - start))
        for start in range(0, cfg.n_seeds, seeds_per_stack)
    ]


def concat_stacks(cfg: SAEConfig, parts: Sequence[TrainResult]) -> TrainResult:
    """One stack of `cfg` (on the first part's device, inference mode) from the results of training
    `split_seeds(cfg, ...)`, in order.

    Every parameter and buffer of an SAE has the seed first, so the stack is their concatenation; the per-seed
    training curves are concatenated step by step, the shared ones taken from the first part.
    """
    if sum(p.sae.n_seeds for p in parts) != cfg.n_seeds:
        raise ValueError(f"parts hold {sum(p.sae.n_seeds for p in parts)} seeds; cfg.n_seeds={cfg.n_seeds}")
    device = parts[0].sae.W_dec.device
    sae = SAE(cfg, device=device)
    states = [p.sae.state_dict() for p in parts]
    sae.load_state_dict({k: torch.cat([s[k].to(device) for s in states]) for k in sae.state_dict()})
    history = dict(parts[0].history)
    for k in ("fvu", "l0", "dead_fraction", "aux_loss"):
        history[k] = [sum(rows, []) for rows in zip(*(p.history[k] for p in parts))]
    return TrainResult(sae.eval(), history)


def train_key(train: TrainConfig) -> dict:
    """The fields of `train` that change results (the device, prefetching and the stack schedule do not). The fast
    paths that change numbers appear only when on, so that the keys of configs without them stay those of earlier
    versions."""
    key = dataclasses.asdict(train)
    for k in ("device", "checkpoint_every", "checkpoint_seconds", "log_every", "prefetch", "seeds_per_stack"):
        key.pop(k)
    for k in FAST_PATHS:
        if not key[k]:
            key.pop(k)
    return key


def train_cached(
    name: str,
    cfg: SAEConfig,
    train: TrainConfig,
    data: Any,
    *,
    data_key: Any,
    progress: bool = True,
) -> tuple[SAE, dict]:
    """`train_saes` through the artifact cache: `saes/<name>-<hash>/` keyed by `cfg`, `train` and `data_key`.

    Args:
        data_key: anything JSON-serialisable that identifies `data` (e.g. the config that generated it).

    Returns:
        The trained stack (on `train.device`, inference mode) and its training history.
    """
    key = train_cache_key(cfg, train, data_key)

    def build(work: Path) -> None:
        result = train_saes(cfg, train, data, checkpoint_dir=work / "checkpoint", progress=progress)
        with disk_full_is_one_line(work / "sae"):
            save_sae(result.sae, work / "sae")
            atomic_write_json(work / "history.json", result.history)
        shutil.rmtree(work / "checkpoint", ignore_errors=True)  # whatever is left in it: never sealed

    # a resumed build reuses its checkpoint only; anything else left in the .partial folder is deleted first
    folder = cached_artifact("saes", name, key, build, keep=[f"checkpoint/{CHECKPOINT}"])
    history = json.loads((folder / "history.json").read_text())
    return load_sae(folder / "sae", device=resolve_device(train.device)), history


# ---------------------------------------------------------------------------------------------------------------------
# GPU fast paths (TrainConfig.autocast_bf16, tf32, prefetch, torch_compile) and the cache key of a trained stack.

FAST_PATHS = ("autocast_bf16", "tf32", "torch_compile")
"""The `TrainConfig` fast paths that may change numbers: in `train_key` only when on."""


def train_cache_key(cfg: SAEConfig, train: TrainConfig, data_key: Any) -> dict:
    """The cache key of the stack `train_cached` trains (also used by `saelib.cluster` to seal split stacks)."""
    return {"sae": cfg, "train": train_key(train), "data": data_key, "train_version": TRAIN_VERSION}


def _float32_outputs(fn: Callable, device: torch.device) -> Callable:
    """`fn` run under bfloat16 autocast on `device`, its floating-point tensor outputs cast back to float32."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = fn(*args, **kwargs)
        cast_back = [v.float() if torch.is_tensor(v) and v.is_floating_point() else v for v in out]
        return type(out)(*cast_back)  # SAEOutput / TopKStep (NamedTuples)

    return run


def fast_paths(sae: SAE, train: TrainConfig, device: torch.device) -> Callable[[], None]:
    """Switch on the fast paths of `train` for training `sae`: TF32 matmuls, and `forward` and the sparse training
    step wrapped in `torch.compile` (both) and bf16 autocast (`forward` only: the sparse step mixes a bf16 encoder
    output with the float32 decoder in `embedding_bag`, which refuses it), as instance attributes shadowing the
    methods.

    Returns:
        The function that undoes them (matmul precision restored, `sae`'s own methods back).
    """
    precision = torch.get_float32_matmul_precision()
    if train.tf32:
        torch.set_float32_matmul_precision("high")
    wrapped = []
    for name in ("forward", "topk_step", "sparse_step"):  # the sparse step of either name
        fn = getattr(sae, name, None)
        if fn is None:
            continue
        if train.torch_compile:
            fn = torch.compile(fn)
        autocast = train.autocast_bf16 and name == "forward"
        if autocast:
            fn = _float32_outputs(fn, device)
        if train.torch_compile or autocast:
            object.__setattr__(sae, name, fn)
            wrapped.append(name)

    def undo() -> None:
        torch.set_float32_matmul_precision(precision)
        for name in wrapped:
            sae.__dict__.pop(name, None)

    return undo


def prefetch_batches(stream: Iterator[Tensor], device: torch.device, depth: int = 2) -> Iterator[Tensor]:
    """The batches of `stream`, read `depth` ahead by a background thread; on CUDA pinned and copied to `device`
    asynchronously. Closing the generator (or dropping it) stops the thread; an error in it is raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    to_gpu = device.type == "cuda"

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in stream:
                if to_gpu:
                    x = x.pin_memory().to(device, non_blocking=True)
                if not put(x):
                    return
        except BaseException as error:  # handed to the consumer
            put(error)

    thread = threading.Thread(target=work, name="saelib-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
