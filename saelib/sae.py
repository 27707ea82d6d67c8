"""S sparse autoencoders of one shape, stacked on a leading seed axis and run with batched matmuls.

Shapes follow SAELens and sparsify: `W_enc (S, d_in, d_sae)`, `b_enc (S, d_sae)`, `W_dec (S, d_sae, d_in)`,
`b_dec (S, d_in)`. Seed `s` is initialised from its own `torch.Generator` (seeded from `cfg.seed + s`), so a stack of S
seeds holds exactly the SAEs that S single-seed runs would start from. Decoder rows have unit norm.

Variants (`SAEConfig.variant`):
- `topk`: keep the k largest pre-activations of each token (Gao et al. 2024).
- `batchtopk`: keep the `B * k` largest over the batch while training; at inference a single threshold per SAE,
  the running mean of the smallest kept activation (Bussmann et al. 2024), which makes it a JumpReLU.
- `relu`: ReLU with an L1 penalty on latents (Bricken et al. 2023).
- `jumprelu`: ReLU gated by a learned per-latent threshold, trained with straight-through estimators of the step
  function and an L0 penalty (Rajamanoharan et al. 2024).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from saelib.config import SAEConfig, derive_seed
from saelib.paths import atomic_write_json


class SAEOutput(NamedTuple):
    """Output of `SAE.forward`."""

    x_hat: Tensor
    """Reconstructions `(S, B, d_in)`."""
    latents: Tensor
    """Latent activations `(S, B, d_sae)` (TopK: without gradient; the reconstruction is decoded sparsely)."""
    pre: Tensor
    """Pre-activations `(S, B, d_sae)`."""


def check_activations(x: Tensor, d_in: int, name: str = "activations") -> None:
    """Raise a one-line `ValueError` naming `name` unless `x` is `(..., d_in)`, floating and finite."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[-1] != d_in:
        raise ValueError(f"{name} have shape {tuple(x.shape)}, expected (..., d_in={d_in})")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} contain {bad} NaN or inf values")


class _Threshold(torch.autograd.Function):
    """A function of `(pre, theta, bandwidth)` whose gradient for theta is straight-through: the step function's
    derivative is estimated by the rectangle kernel `K = 1[|pre - theta| < eps / 2] / eps` (Rajamanoharan et al.
    2024, arXiv 2407.14435)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, float], output: Tensor) -> None:
        pre, theta, bandwidth = inputs
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth

    @staticmethod
    def saved(ctx: Any) -> tuple[Tensor, Tensor, Tensor]:
        """`(pre, theta, K)`."""
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        return pre, theta, ((pre - theta).abs() < eps / 2).to(pre.dtype) / eps


class _JumpReLU(_Threshold):
    """`pre * 1[pre > theta]`, with the straight-through gradient for theta."""

    @staticmethod
    def forward(pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, theta, kernel = _Threshold.saved(ctx)
        return grad * (pre > theta), (-(theta * kernel) * grad).sum_to_size(theta.shape), None


class _Step(_Threshold):
    """`1[pre > theta]` with the same straight-through gradient for theta (used by the L0 penalty)."""

    @staticmethod
    def forward(pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        _, theta, kernel = _Threshold.saved(ctx)
        return None, (-kernel * grad).sum_to_size(theta.shape), None


def _sparse_encoder_grads(x: Tensor, latent: Tensor, token: Tensor, g: Tensor, d_sae: int) -> tuple[Tensor, Tensor]:
    """Gradients of `W_enc (S, d_in, d_sae)` and of the encoder bias `(S, 1, d_sae)` when the loss depends on the
    pre-activations only at the entries `(s, token[s, n], latent[s, n])`, with gradient `g[s, n]`: a sparse-dense
    product with `N` non-zeros per seed instead of the dense `B * d_sae`.

    One product per seed, as S single-seed runs compute it: one product over the whole stack sorts S times more
    entries at once and cost the stack its lead over sequential runs (`benchmarks/bench_train.py`)."""
    S, N = latent.shape
    grad_bias = torch.zeros(S, d_sae, dtype=g.dtype, device=g.device).scatter_add_(1, latent, g)
    grad_W = g.new_empty(S, d_sae, x.shape[-1])
    for s in range(S):
        G = torch.sparse_coo_tensor(
            torch.stack([latent[s], token[s]]), g[s], (d_sae, x.shape[1]), check_invariants=False
        )
        grad_W[s] = torch.sparse.mm(G, x[s])
    grad_W = grad_W.transpose(1, 2)  # (S, d_in, d_sae)
    return grad_W, grad_bias.unsqueeze(1)


def _token_index(S: int, B: int, k: int, device: torch.device) -> Tensor:
    """`(S, B * k)`: the token of each entry of a per-token selection `(S, B, k)` flattened."""
    return torch.arange(B, device=device).repeat_interleave(k).expand(S, -1)


class _SparseEncoder(torch.autograd.Function):
    """Encoder and TopK or BatchTopK selection, with a sparse backward pass.

    The loss depends on the pre-activations only at the selected entries, so the encoder-weight gradient is the
    product of the inputs with a matrix holding `k` non-zeros per token (on average, for BatchTopK): a sparse-dense
    product costing `B * k * d_in` per seed instead of the dense `B * d_sae * d_in`.

    Returns `values (S, N)`, `latent (S, N)` and `token (S, N)` of the selected entries (TopK: `N = B * k`, token
    major; BatchTopK: the `B * k` largest over the batch, sorted by token).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, bias: Tensor, k: int, batch: bool) -> tuple[Tensor, Tensor, Tensor]:
        S, B, F = x.shape[0], x.shape[1], W_enc.shape[-1]
        n = min(B * k, B * F) if batch else B * k
        values, latent = x.new_empty(S, n), torch.empty(S, n, dtype=torch.long, device=x.device)
        # One seed at a time through one reused (B, d_sae) buffer: the stack never holds all S dense
        # pre-activations, so it moves no more memory per seed than S single-seed runs (which it used to lose to).
        pre = x.new_empty(B, F)
        for s in range(S):
            torch.addmm(bias[s], x[s], W_enc[s], out=pre)
            if batch:  # the B * k largest over the batch
                values[s], latent[s] = pre.view(-1).topk(n, sorted=False)
            else:
                v, i = pre.topk(k, dim=-1, sorted=False)
                values[s], latent[s] = v.view(-1), i.view(-1)
        if batch:  # in token order (for the decoder's bags); `latent` held flat (token * F + latent) indices
            latent, order = latent.sort(-1)
            values = values.gather(-1, order)
            token, latent = latent // F, latent % F
        else:
            token = torch.arange(B, device=x.device).repeat_interleave(k).expand(S, -1)
        ctx.save_for_backward(x, latent, token)
        ctx.d_sae = F
        ctx.mark_non_differentiable(latent, token)
        return values, latent, token

    @staticmethod
    def backward(
        ctx: Any, g_values: Tensor, _g_latent: Tensor | None, _g_token: Tensor | None
    ) -> tuple[None, Tensor, Tensor, None, None]:
        x, latent, token = ctx.saved_tensors
        grad_W, grad_bias = _sparse_encoder_grads(x, latent, token, g_values, ctx.d_sae)
        return None, grad_W, grad_bias, None, None


class SparseStep(NamedTuple):
    """What `SAE.sparse_step` returns: a TopK or BatchTopK training forward pass kept sparse."""

    x_hat: Tensor
    """Reconstructions `(S, B, d_in)`."""
    values: Tensor
    """Selected latents' values `(S, N)` after ReLU (TopK: `N = B * k`; BatchTopK: the `B * k` largest of the
    batch)."""
    latent: Tensor
    """Their latent indices `(S, N)`."""
    token: Tensor
    """Their token indices `(S, N)`, non-decreasing."""
    aux_hat: Tensor | None
    """AuxK: reconstruction of the residual by the top `aux_k` dead latents of each token `(S, B, d_in)`, no bias;
    None without dead latents."""


class SAE(nn.Module):
    """`cfg.n_seeds` SAEs of one shape; every method works on all seeds at once."""

    log_threshold: nn.Parameter
    """JumpReLU only: log of each latent's threshold `(S, d_sae)`."""
    threshold: Tensor
    """BatchTopK only: the inference threshold of each SAE `(S,)` (a buffer; NaN before the first training batch)."""

    def __init__(self, cfg: SAEConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        S, d_in, d_sae = cfg.n_seeds, cfg.d_in, cfg.d_sae
        W_dec = torch.empty(S, d_sae, d_in)
        for s, seed in enumerate(cfg.seeds):
            gen = torch.Generator().manual_seed(derive_seed(seed, "sae-init"))
            W_dec[s] = torch.randn(d_sae, d_in, generator=gen)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)  # (S, d_sae, d_in)
        self.W_enc = nn.Parameter(W_dec.transpose(1, 2).clone())  # (S, d_in, d_sae): tied init, Gao et al.
        self.b_enc = nn.Parameter(torch.zeros(S, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(S, d_in))
        if cfg.variant == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((S, d_sae), cfg.jumprelu_init_threshold).log())
        if cfg.variant == "batchtopk":
            # Inference threshold per SAE; NaN until the first training batch sets it.
            self.register_buffer("threshold", torch.full((S,), float("nan")))
        self.to(device)

    @property
    def n_seeds(self) -> int:
        return self.cfg.n_seeds

    def _seed_batch(self, x: Tensor) -> Tensor:
        """`(B, d_in)` shared by all seeds, or `(S, B, d_in)` one batch per seed, as `(S, B, d_in)`."""
        check_activations(x, self.cfg.d_in)
        if x.ndim == 2:
            return x.unsqueeze(0).expand(self.n_seeds, -1, -1)
        if x.ndim != 3 or x.shape[0] != self.n_seeds:
            raise ValueError(
                f"activations have shape {tuple(x.shape)}, expected (B, d_in) or (S={self.n_seeds}, B, d_in)"
            )
        return x

    def pre_acts(self, x: Tensor) -> Tensor:
        """Pre-activations `(S, B, d_sae)` of x `(B, d_in)` or `(S, B, d_in)`."""
        x = self._seed_batch(x).to(self.W_enc.dtype)
        return torch.baddbmm(self._encoder_bias(), x, self.W_enc)

    def _encoder_bias(self) -> Tensor:
        """`b_enc - b_dec @ W_enc` `(S, 1, d_sae)`, so that `pre = x @ W_enc + bias = (x - b_dec) @ W_enc + b_enc`:
        x then needs no gradient, and the backward pass runs one large matmul (for W_enc) instead of two."""
        return self.b_enc.unsqueeze(1) - torch.bmm(self.b_dec.unsqueeze(1), self.W_enc)

    def activate(self, pre: Tensor) -> Tensor:
        """Latents `(S, B, d_sae)` from pre-activations, by the variant's rule (training or inference mode)."""
        v = self.cfg.variant
        if v == "topk":
            values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, values.relu())
        if v == "batchtopk":
            if self.training or torch.isnan(self.threshold).any():
                return self._batch_topk(pre)
            return pre * (pre > self.threshold.view(-1, 1, 1))
        if v == "relu":
            return pre.relu()
        return _JumpReLU.apply(pre, self.log_threshold.exp().unsqueeze(1), self.cfg.jumprelu_bandwidth)

    def _batch_topk(self, pre: Tensor) -> Tensor:
        S, B, F = pre.shape
        flat = pre.relu().reshape(S, B * F)
        values, idx = flat.topk(min(B * self.cfg.k, B * F), dim=-1, sorted=False)
        z = torch.zeros_like(flat).scatter_(-1, idx, values).view(S, B, F)
        if self.training:
            self._update_threshold(values)
        return z

    @torch.no_grad()
    def _update_threshold(self, values: Tensor) -> None:
        """BatchTopK: move the inference threshold towards the smallest positive kept activation `values (S, N)`
        (set it on the first batch, then a running mean with weight 0.01)."""
        pos = torch.where(values > 0, values, torch.inf).amin(dim=-1)  # (S,)
        pos = torch.where(torch.isinf(pos), torch.zeros_like(pos), pos)
        first = torch.isnan(self.threshold)
        self.threshold.copy_(torch.where(first, pos, 0.99 * self.threshold + 0.01 * pos))

    def encode(self, x: Tensor) -> Tensor:
        """Latents `(S, B, d_sae)` of x `(B, d_in)` or `(S, B, d_in)`."""
        return self.activate(self.pre_acts(x))

    def decode(self, z: Tensor) -> Tensor:
        """Reconstructions `(S, B, d_in)` of latents `(S, B, d_sae)`."""
        return torch.baddbmm(self.b_dec.unsqueeze(1), z, self.W_dec)

    def sparse_step(self, x: Tensor, dead: Tensor | None = None, aux_k: int = 256) -> SparseStep:
        """TopK or BatchTopK forward pass for training, sparse end to end (same values and gradients as `forward`
        in training mode; BatchTopK also updates its inference threshold as `forward` does).

        Args:
            x: activations `(B, d_in)` or `(S, B, d_in)`.
            dead: `(S, d_sae)` bool of latents counted as dead, for the AuxK loss (Gao et al. 2024, A.2); None
                skips it.
            aux_k: dead latents used by AuxK per token (at most the number of dead latents).
        """
        variant = self.cfg.variant
        if variant not in ("topk", "batchtopk"):
            raise ValueError(f"sparse_step needs the topk or batchtopk variant, not {variant!r}")
        x = self._seed_batch(x).to(self.W_enc.dtype)
        bias = self._encoder_bias()
        values, latent, token = _SparseEncoder.apply(x, self.W_enc, bias, self.cfg.k, variant == "batchtopk")
        values = values.relu()
        if variant == "batchtopk" and self.training:
            self._update_threshold(values)
        x_hat = self.decode_entries(values, latent, token, x.shape[1])
        aux_hat = None if dead is None else self._aux_reconstruction(x, bias, dead, aux_k)
        return SparseStep(x_hat, values, latent, token, aux_hat)

    def _aux_reconstruction(self, x: Tensor, bias: Tensor, dead: Tensor, aux_k: int) -> Tensor:
        """AuxK: each token's reconstruction `(S, B, d_in)` (no bias) by its top `aux_k` dead latents (ReLU).

        Computed on the dead columns only, gathered into dense `(S, d_in, D)` and `(S, D, d_in)` blocks (D: the most
        dead latents of any seed; a seed with fewer pads with masked columns): three GEMMs of `B * D * d_in`, so its
        cost follows the number of dead latents, not `d_sae` or `aux_k`."""
        S, B, d_in = x.shape
        D = int(dead.sum(-1).max())
        order = dead.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :D]  # (S, D): dead first
        real = dead.gather(1, order)  # (S, D)
        W_enc = self.W_enc.gather(2, order.unsqueeze(1).expand(S, d_in, D))
        pre = torch.baddbmm(bias.gather(2, order.unsqueeze(1)), x, W_enc)  # (S, B, D)
        keep = real.unsqueeze(1).expand(S, B, D)
        if aux_k < D:
            top = pre.masked_fill(~keep, -torch.inf).topk(aux_k, dim=-1, sorted=False).indices
            keep = torch.zeros_like(keep).scatter_(-1, top, True) & keep
        z = torch.where(keep, pre, torch.zeros_like(pre)).relu()
        return torch.bmm(z, self.W_dec.gather(1, order.unsqueeze(-1).expand(S, D, d_in)))

    def decode_entries(self, values: Tensor, latent: Tensor, token: Tensor, n_tokens: int) -> Tensor:
        """Reconstructions `(S, n_tokens, d_in)` from selected entries `(S, N)`: `values`, their `latent`s and
        their `token`s (non-decreasing along N), any number per token (BatchTopK). One `embedding_bag` over the
        stacked decoder with one bag per (seed, token): `N / (n_tokens * d_sae)` of the dense decoder's cost."""
        S, N = latent.shape
        F = self.cfg.d_sae
        counts = torch.zeros(S, n_tokens, dtype=torch.long, device=latent.device)
        counts.scatter_add_(1, token, torch.ones_like(token))
        offsets = (counts.cumsum(-1) - counts) + torch.arange(S, device=latent.device).view(S, 1) * N
        out = nn.functional.embedding_bag(
            (latent + torch.arange(S, device=latent.device).view(S, 1) * F).reshape(-1),
            self.W_dec.reshape(S * F, self.cfg.d_in),
            offsets.reshape(-1),
            per_sample_weights=values.reshape(-1),
            mode="sum",
        )
        return out.view(S, n_tokens, self.cfg.d_in) + self.b_dec.unsqueeze(1)

    def decode_sparse(self, values: Tensor, idx: Tensor, bias: bool = True) -> Tensor:
        """Reconstructions `(S, B, d_in)` from the k active latents of each token: values and indices `(S, B, k)`.

        Equal to `decode` of the scattered latents, at `k / d_sae` of its cost: one `embedding_bag` over the
        stacked decoder `(S * d_sae, d_in)`, with each seed's indices offset into its own block of rows.
        """
        S, B, k = idx.shape
        offsets = torch.arange(S, device=idx.device).mul_(self.cfg.d_sae).view(S, 1, 1)
        out = nn.functional.embedding_bag(
            (idx + offsets).view(S * B, k),
            self.W_dec.reshape(S * self.cfg.d_sae, self.cfg.d_in),
            per_sample_weights=values.reshape(S * B, k),
            mode="sum",
        )
        out = out.view(S, B, self.cfg.d_in)
        return out + self.b_dec.unsqueeze(1) if bias else out

    def forward(self, x: Tensor) -> SAEOutput:
        pre = self.pre_acts(x)
        if self.cfg.variant == "topk":  # sparse decoding; the dense latents are returned without gradient
            values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            values = values.relu()
            with torch.no_grad():
                z = torch.zeros_like(pre).scatter_(-1, idx, values)
            return SAEOutput(self.decode_sparse(values, idx), z, pre)
        z = self.activate(pre)
        return SAEOutput(self.decode(z), z, pre)

    def l0_penalty_terms(self, pre: Tensor) -> Tensor:
        """JumpReLU: expected active latents per token `(S,)`, differentiable in the thresholds."""
        theta = self.log_threshold.exp().unsqueeze(1)
        return _Step.apply(pre, theta, self.cfg.jumprelu_bandwidth).sum(-1).mean(-1)

    @torch.no_grad()
    def fold_input_scale_(self, c: float) -> None:
        """Make an SAE trained on `c * x` take raw `x`: afterwards `self(x).x_hat == old(c * x).x_hat / c`.

        The latents are divided by c as well (biases and thresholds scale with them), so decoder rows keep unit norm
        and the encoder weights are unchanged. Every variant's activation is positively homogeneous once its
        thresholds are scaled, so the same latents stay active.
        """
        if not c > 0:
            raise ValueError(f"scale c={c} must be positive")
        self.b_enc /= c
        self.b_dec /= c
        if self.cfg.variant == "jumprelu":
            self.log_threshold.sub_(torch.log(torch.tensor(c, dtype=self.log_threshold.dtype)))
        if self.cfg.variant == "batchtopk":
            self.threshold /= c

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grads_(self) -> None:
        """Drop the gradient component along each decoder row, so that unit-norm rows stay on the sphere."""
        if self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= torch.linalg.vecdot(g, self.W_dec).unsqueeze(-1) * self.W_dec

    @torch.no_grad()
    def decoder_directions(self) -> Tensor:
        """Unit decoder rows `(S, d_sae, d_in)`: the features' directions in activation space."""
        return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def encoder_directions(self) -> Tensor:
        """Unit encoder columns as rows `(S, d_sae, d_in)`."""
        w = self.W_enc.transpose(1, 2)
        return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def select(self, seeds: list[int] | range) -> SAE:
        """A new stack holding copies of the given seed positions of this one."""
        seeds = list(seeds)
        if not seeds or any(not 0 <= s < self.n_seeds for s in seeds):
            raise ValueError(f"seeds={seeds} must be non-empty positions in [0, {self.n_seeds})")
        from dataclasses import replace

        out = SAE(replace(self.cfg, n_seeds=len(seeds)), device=self.W_dec.device)
        out.load_state_dict({k: v[seeds].clone() for k, v in self.state_dict().items()})
        out.train(self.training)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Saving and loading: one SAELens-loadable folder per seed (cfg.json + sae_weights.safetensors) beside our own config.

SAELENS_ARCHITECTURE = {"topk": "topk", "batchtopk": "jumprelu", "relu": "standard", "jumprelu": "jumprelu"}
"""SAELens inference architecture of each variant (a trained BatchTopK SAE is a JumpReLU SAE at inference)."""


def saelens_state(sae: SAE, s: int) -> tuple[dict, dict[str, Tensor]]:
    """SAELens `cfg.json` dict and state dict of seed position `s`."""
    cfg = sae.cfg
    arch = SAELENS_ARCHITECTURE[cfg.variant]
    names = ("W_enc", "W_dec", "b_enc", "b_dec")
    state = {name: getattr(sae, name)[s].detach().cpu().contiguous().clone() for name in names}
    if cfg.variant == "jumprelu":
        state["threshold"] = sae.log_threshold[s].detach().exp().cpu().contiguous()
    elif cfg.variant == "batchtopk":
        state["threshold"] = torch.full((cfg.d_sae,), float(sae.threshold[s].nan_to_num(0.0)))
    sl_cfg = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_training_version": None, "saelib_variant": cfg.variant, "saelib_seed": cfg.seeds[s]},
    }
    if arch == "topk":
        sl_cfg["k"] = cfg.k
    return sl_cfg, state


def save_sae(sae: SAE, folder: Path) -> None:
    """Write `folder/saelib.json` and, per seed, `folder/seed_<seed>/{cfg.json, sae_weights.safetensors}`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s, seed in enumerate(sae.cfg.seeds):
        sl_cfg, state = saelens_state(sae, s)
        sub = folder / f"seed_{seed}"
        sub.mkdir(exist_ok=True)
        save_file(state, str(sub / "sae_weights.safetensors"))
        atomic_write_json(sub / "cfg.json", sl_cfg)
    atomic_write_json(folder / "saelib.json", {"sae": sae.cfg})


def load_sae(folder: Path, device: str | torch.device = "cpu") -> SAE:
    """Load a stack written by `save_sae` (in inference mode)."""
    folder = Path(folder)
    meta = folder / "saelib.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{folder} holds no saelib.json: not an SAE folder written by save_sae")
    cfg = SAEConfig(**json.loads(meta.read_text())["sae"])
    sae = SAE(cfg)
    with torch.no_grad():
        for s, seed in enumerate(cfg.seeds):
            state = load_file(str(folder / f"seed_{seed}" / "sae_weights.safetensors"))
            for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
                getattr(sae, name)[s] = state[name]
            if cfg.variant == "jumprelu":
                sae.log_threshold[s] = state["threshold"].log()
            elif cfg.variant == "batchtopk":
                sae.threshold[s] = state["threshold"][0]
    return sae.to(device).eval()
