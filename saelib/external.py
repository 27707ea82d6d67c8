"""Per-feature stability for anyone's SAEs: readers for other libraries' folders, and one scoring call with a report.

- Readers (`read_sae`, `expand_paths`): SAELens folders (`cfg.json` + `sae_weights.safetensors`), sparsify folders
  (`cfg.json` + `sae.safetensors`, one folder per hookpoint, seeds as sibling folders), dictionary_learning folders
  (`config.json` + `ae.pt`), this project's stacks (`saelib.json`, one SAE per seed), globs, and SAELens pretrained
  releases by name (`saelens:RELEASE:SAE_ID`, through `sae_lens.SAE.from_pretrained`, when the network allows).
- `check_comparable`: same `d_in` and `d_sae`, and the same hook where the folders record one.
- `load_stack`: the SAEs as one `saelib.sae.SAE` stack of S seeds (e.g. to run the book's chapters on them).
- `score_saes`: the paper's anchor estimator (`saelib.stability.anchor_stability`'s rule, with each match's index),
  the all-pairs stability, Hungarian shared fraction and PW-MCC, the untrained-SAE null of the same shapes, written to
  a report folder (features table, summary.json, labels.safetensors, sweeps, and report.html rendered by papermill
  and nbconvert from `saelib/reports/stability_report.py`).

Memory: the S decoders and encoders `(S, d_sae, d_in)` in float32 plus one block of `chunk_size x chunk_size` cosines
(tiled over both seeds' latents) and `(S, S, d_sae)` all-pairs maxima; never an `S x S x d_sae x d_sae` array. The
Hungarian matchings of `pair_scores` match densely (a pair's whole `d_sae x d_sae` cost matrix) only up to
`matching.SPARSE_MATCH_ABOVE` latents; above, on a k-nearest-neighbour graph built in blocks of 1024 x 4096 cosines
(`--no-all-pairs` does not skip them; on CPU they are the slow part at large d_sae).
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from saelib.config import SAEConfig, resolve_device
from saelib.matching import match_seed_pair
from saelib.paths import atomic_write_bytes, atomic_write_json
from saelib.sae import SAE, load_sae
from saelib.stability import (
    LABEL_NAMES,
    STABLE,
    UNSTABLE,
    blockwise_row_max,
    cross_seed_max_cosine,
    endpoint_labels,
    null_sae,
    stability_from_max_cos,
)
from saelib.subspace import unit_rows

log = logging.getLogger(__name__)

PRETRAINED_PREFIX = "saelens:"
"""A path starting with this names a SAELens pretrained SAE: `saelens:RELEASE:SAE_ID`."""

SAE_FILES = ("saelib.json", "sae_weights.safetensors", "sae.safetensors", "ae.pt")
"""A folder holding one of these files is an SAE folder (`detect_format`)."""

REPORT_TEMPLATE = Path(__file__).parent / "reports" / "stability_report.py"
"""The parameterised Jupytext notebook that renders report.html."""


class ExternalSAE(NamedTuple):
    """One SAE read from disk, in SAELens's vocabulary (float32, on CPU)."""

    source: str
    """Where it came from: a folder, `folder#seed_N` for one seed of a saelib stack, or `saelens:RELEASE:ID`."""
    format: str
    """`saelens`, `sparsify`, `dictionary_learning` or `saelib`."""
    W_enc: Tensor
    """`(d_in, d_sae)`."""
    W_dec: Tensor
    """`(d_sae, d_in)`."""
    b_enc: Tensor
    """`(d_sae,)`."""
    b_dec: Tensor
    """`(d_in,)`."""
    hook: str | None
    """The hookpoint the folder records (None when it records none)."""
    k: int | None = None
    """Active latents per token for TopK SAEs, when recorded."""

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]


# --- Readers --------------------------------------------------------------------------------------------------------


def _f32(x: Tensor) -> Tensor:
    return x.detach().to("cpu", torch.float32).contiguous()


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable JSON file ({type(e).__name__})") from None


def _need(state: dict[str, Tensor], path: Path, *names: str) -> list[Tensor]:
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"{path} lacks the tensors {', '.join(missing)} (has {', '.join(sorted(state)) or 'none'})")
    return [state[n] for n in names]


def read_saelens(folder: Path) -> ExternalSAE:
    """A SAELens folder: `cfg.json` (`d_in`, `d_sae`, `hook_name` at the top or under `metadata`) and
    `sae_weights.safetensors` (`W_enc (d_in, d_sae)`, `W_dec (d_sae, d_in)`, `b_enc`, `b_dec`)."""
    folder = Path(folder)
    cfg = _json(folder / "cfg.json")
    path = folder / "sae_weights.safetensors"
    W_enc, W_dec, b_enc, b_dec = _need(load_file(str(path)), path, "W_enc", "W_dec", "b_enc", "b_dec")
    hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
    return ExternalSAE(str(folder), "saelens", _f32(W_enc), _f32(W_dec), _f32(b_enc), _f32(b_dec), hook, cfg.get("k"))


def read_sparsify(folder: Path) -> ExternalSAE:
    """A sparsify folder (`SparseCoder.save_to_disk`): `cfg.json` (`d_in`, `k`, ...) and `sae.safetensors`
    (`encoder.weight (d_sae, d_in)`, `encoder.bias`, `W_dec (d_sae, d_in)`, `b_dec`). sparsify names the folder after
    its hookpoint, which is taken as the hook."""
    folder = Path(folder)
    cfg = _json(folder / "cfg.json")
    path = folder / "sae.safetensors"
    state = load_file(str(path))
    enc, b_enc, W_dec, b_dec = _need(state, path, "encoder.weight", "encoder.bias", "W_dec", "b_dec")
    if "d_in" in cfg and cfg["d_in"] != W_dec.shape[1]:
        raise ValueError(f"{folder}: cfg.json says d_in={cfg['d_in']} but W_dec has shape {tuple(W_dec.shape)}")
    return ExternalSAE(
        str(folder), "sparsify", _f32(enc.T), _f32(W_dec), _f32(b_enc), _f32(b_dec), folder.name, cfg.get("k")
    )


def read_dictionary_learning(folder: Path) -> ExternalSAE:
    """A dictionary_learning folder: `ae.pt` (a state dict: `encoder.weight (d_sae, d_in)`, `encoder.bias`,
    `decoder.weight (d_in, d_sae)`, and `b_dec` (TopK, BatchTopK, JumpReLU) or `bias` (the standard AutoEncoder)) and
    an optional `config.json` whose `trainer` records `submodule_name` or `layer` (the hook) and `k`."""
    folder = Path(folder)
    path = folder / "ae.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that is not a plain state dict, or a truncated file
        raise ValueError(f"{path} is not a readable state dict ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    enc, b_enc, dec = _need(state, path, "encoder.weight", "encoder.bias", "decoder.weight")
    if "b_dec" not in state and "bias" not in state:
        raise ValueError(f"{path} has neither b_dec nor bias (has {', '.join(sorted(state))})")
    b_dec = state["b_dec"] if "b_dec" in state else state["bias"]
    trainer = (_json(folder / "config.json") if (folder / "config.json").is_file() else {}).get("trainer", {})
    hook = trainer.get("submodule_name") or (f"layer {trainer['layer']}" if "layer" in trainer else None)
    k = state["k"].item() if isinstance(state.get("k"), Tensor) else trainer.get("k")
    return ExternalSAE(str(folder), "dictionary_learning", _f32(enc.T), _f32(dec.T), _f32(b_enc), _f32(b_dec), hook, k)


def read_saelib(folder: Path) -> list[ExternalSAE]:
    """Every seed of a stack written by `saelib.sae.save_sae` (`saelib.json`), as `folder#seed_N`."""
    sae = load_sae(Path(folder))
    k = sae.cfg.k if sae.cfg.variant in ("topk", "batchtopk") else None
    return [
        ExternalSAE(
            f"{folder}#seed_{seed}",
            "saelib",
            _f32(sae.W_enc[s]),
            _f32(sae.W_dec[s]),
            _f32(sae.b_enc[s]),
            _f32(sae.b_dec[s]),
            None,
            k,
        )
        for s, seed in enumerate(sae.cfg.seeds)
    ]


def read_pretrained(name: str) -> ExternalSAE:
    """`saelens:RELEASE:SAE_ID` through `sae_lens.SAE.from_pretrained` (downloads; needs the network or a warm
    Hugging Face cache)."""
    parts = name[len(PRETRAINED_PREFIX) :].split(":", 1)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{name!r}: a pretrained SAE is named saelens:RELEASE:SAE_ID")
    try:
        from sae_lens import SAE as SaeLensSAE
    except ImportError:
        raise ValueError(f"{name!r}: loading pretrained SAEs needs sae-lens (pip install sae-lens)") from None
    try:
        sae = SaeLensSAE.from_pretrained(parts[0], parts[1], device="cpu")
    except Exception as e:  # network errors, unknown release or id: one line either way
        raise ValueError(f"{name!r} could not be loaded by SAELens ({type(e).__name__}: {e})") from None
    if isinstance(sae, tuple):  # older SAELens returned (sae, cfg, sparsity)
        sae = sae[0]
    hook = getattr(sae.cfg, "hook_name", None) or getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    W_enc, W_dec, b_enc, b_dec = (_f32(getattr(sae, n)) for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    return ExternalSAE(name, "saelens", W_enc, W_dec, b_enc, b_dec, hook, getattr(sae.cfg, "k", None))


def detect_format(folder: Path) -> str:
    """The format of an SAE folder, from the files it holds; a one-line `FileNotFoundError` naming it if none."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder: pass the folder that holds the SAE's files")
    if (folder / "saelib.json").is_file():
        return "saelib"
    if (folder / "sae_weights.safetensors").is_file():
        return "saelens"
    if (folder / "sae.safetensors").is_file():
        return "sparsify"
    if (folder / "ae.pt").is_file():
        return "dictionary_learning"
    inside = sorted(f.name for f in folder.iterdir() if f.is_dir() and any((f / n).is_file() for n in SAE_FILES))
    if inside:  # e.g. a sparsify run folder, one SAE per hookpoint: say which to pick
        shown = ", ".join(inside[:4]) + (", ..." if len(inside) > 4 else "")
        raise FileNotFoundError(f"{folder} holds no SAE itself but its folders {shown} do: pass {folder}/<one of them>")
    raise FileNotFoundError(
        f"{folder} holds no SAE: expected saelib.json (saelib), cfg.json + sae_weights.safetensors (SAELens), "
        "cfg.json + sae.safetensors (sparsify) or ae.pt (dictionary_learning)"
    )


def read_sae(path: str | Path) -> list[ExternalSAE]:
    """The SAEs at one path (a saelib stack gives one per seed, any other folder one)."""
    if str(path).startswith(PRETRAINED_PREFIX):
        return [read_pretrained(str(path))]
    fmt = detect_format(Path(path))
    if fmt == "saelib":
        return read_saelib(Path(path))
    return [
        {"saelens": read_saelens, "sparsify": read_sparsify, "dictionary_learning": read_dictionary_learning}[fmt](
            Path(path)
        )
    ]


def expand_paths(paths: Sequence[str | Path]) -> list[str]:
    """Paths with globs expanded (sorted); a glob that matches nothing raises a one-line `FileNotFoundError`."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = str(p)
        if not p.startswith(PRETRAINED_PREFIX) and glob.has_magic(p):
            hits = sorted(glob.glob(p))
            if not hits:
                raise FileNotFoundError(f"{p} matches no path")
            out += hits
        else:
            out.append(p)
    return out


def read_saes(paths: Sequence[str | Path]) -> list[ExternalSAE]:
    """Every SAE at `paths` (globs expanded), checked comparable (`check_comparable`)."""
    saes = [sae for p in expand_paths(paths) for sae in read_sae(p)]
    check_comparable(saes)
    return saes


def check_comparable(saes: Sequence[ExternalSAE]) -> None:
    """Raise a one-line `ValueError` naming the first SAE whose `d_in`, `d_sae` or recorded hook differs from the
    first SAE's (a hook only counts where both record one), or if there are fewer than 2 SAEs."""
    if len(saes) < 2:
        raise ValueError(f"stability needs at least 2 SAEs, got {len(saes)}: pass several seeds' folders or a glob")
    ref = saes[0]
    hook_ref = next((s for s in saes if s.hook is not None), None)
    for sae in saes[1:]:
        for name in ("d_in", "d_sae"):
            if getattr(sae, name) != getattr(ref, name):
                raise ValueError(
                    f"{sae.source} has {name}={getattr(sae, name)} but {ref.source} has {name}={getattr(ref, name)}: "
                    "not comparable"
                )
    for sae in saes:
        if hook_ref is not None and sae.hook is not None and sae.hook != hook_ref.hook:
            raise ValueError(
                f"{sae.source} was trained on hook {sae.hook!r} but {hook_ref.source} on {hook_ref.hook!r}: "
                "not comparable"
            )


def load_stack(paths: Sequence[str | Path], device: str | torch.device = "cpu") -> SAE:
    """The SAEs at `paths` as one `saelib.sae.SAE` stack of S seeds (TopK when every SAE records the same `k`, else
    ReLU: the directions, which is what stability compares, are copied as they are, biases too).

    Args:
        paths: folders or globs (`read_sae`), in seed order.
        device: where the stack lives.
    """
    saes = read_saes(paths)
    return stack_saes(saes, device)


def stack_saes(saes: Sequence[ExternalSAE], device: str | torch.device = "cpu") -> SAE:
    """Already-read SAEs as one stack (what `load_stack` returns; for a caller that also wants their sources)."""
    ks = {s.k for s in saes}
    k = next(iter(ks)) if len(ks) == 1 else None
    variant = "topk" if isinstance(k, int) and 1 <= k <= saes[0].d_sae else "relu"
    cfg = SAEConfig(d_in=saes[0].d_in, d_sae=saes[0].d_sae, variant=variant, k=k or 1, n_seeds=len(saes))
    sae = SAE(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(torch.stack([getattr(s, name) for s in saes]))
    return sae.to(device).eval()


# --- Scoring --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def anchor_matches(
    directions: Tensor,
    anchor: int = 0,
    chunk_size: int = 4096,
    progress: bool = False,
    col_chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Best match of each anchor latent in each other seed: the many-to-one argmax of `anchor_stability`.

    Args:
        directions: `(S, F, d)` decoder rows.
        anchor: the anchor seed's position.
        chunk_size: anchor rows per block.
        progress: a tqdm bar over the other seeds.
        col_chunk: the other seed's latents per block (None: `chunk_size`). One block of `chunk_size x col_chunk`
            cosines is all that exists at once (`stability.blockwise_row_max`), whatever F is.

    Returns:
        `max_cos (N, F)` and `argmax (N, F)` over the N = S - 1 other seeds in order.
    """
    S, F, _ = directions.shape
    if not 0 <= anchor < S:
        raise ValueError(f"anchor={anchor} must lie in [0, {S})")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    col_chunk = chunk_size if col_chunk is None else col_chunk
    if col_chunk < 1:
        raise ValueError(f"col_chunk={col_chunk} must be >= 1")
    dev = directions.device
    a = unit_rows(directions[anchor].float())  # (F, d): one seed normalised at a time, never a copy of all S
    others = [t for t in range(S) if t != anchor]
    best = torch.empty(len(others), F, device=dev)
    arg = torch.empty(len(others), F, dtype=torch.long, device=dev)
    buf = torch.empty(block_elements(F, chunk_size, col_chunk), device=dev)  # the one block, reused for every seed
    for n, t in enumerate(tqdm(others, desc="anchor matches", disable=not progress)):
        best[n], arg[n] = blockwise_row_max(a, unit_rows(directions[t].float()), chunk_size, col_chunk, buf)
    return best, arg


def block_elements(F: int, chunk_size: int, col_chunk: int | None = None) -> int:
    """Cosines in `anchor_matches`'s one block for F latents (times 4 for its bytes)."""
    return min(chunk_size, F) * min(chunk_size if col_chunk is None else col_chunk, F)


def anchor_p(max_cos: Tensor, threshold: float) -> Tensor:
    """`p_i` from `max_cos (N, F)`: the share of comparison seeds whose best match reaches `threshold`."""
    return (max_cos >= threshold).float().mean(0)


def threshold_sweep(max_cos: Tensor, thresholds: Sequence[float], epsilon: float) -> pd.DataFrame:
    """Share of anchor latents stable / unstable and mean p at each threshold (from `max_cos (N, F)`)."""
    rows = []
    for tau in thresholds:
        lab = endpoint_labels(anchor_p(max_cos, tau), epsilon)
        rows.append(
            {
                "threshold": float(tau),
                "mean_p": float(anchor_p(max_cos, tau).mean()),
                "stable": float((lab == STABLE).float().mean()),
                "unstable": float((lab == UNSTABLE).float().mean()),
            }
        )
    return pd.DataFrame(rows)


def n_sweep(max_cos: Tensor, threshold: float, epsilon: float) -> pd.DataFrame:
    """The estimator on the first n = 1..N comparison seeds: share stable / unstable and mean p (shows whether N
    is large enough for the labels to settle)."""
    rows = []
    for n in range(1, len(max_cos) + 1):
        p = anchor_p(max_cos[:n], threshold)
        lab = endpoint_labels(p, epsilon)
        rows.append(
            {
                "n": n,
                "mean_p": float(p.mean()),
                "stable": float((lab == STABLE).float().mean()),
                "unstable": float((lab == UNSTABLE).float().mean()),
            }
        )
    return pd.DataFrame(rows)


def pair_scores(
    decoder: Tensor, encoder: Tensor, pairs: Sequence[tuple[int, int]], threshold: float, method: str = "auto"
) -> pd.DataFrame:
    """Hungarian shared fraction (Paulo & Belrose 2025) and matched decoder cosine (PW-MCC's term) of each pair, as
    `saelib.matching.seed_pair_scores` but over the given pairs of unit directions `(S, F, d)`."""
    rows = []
    for s, t in pairs:
        pair = match_seed_pair(decoder, encoder, s, t, method)
        rows.append(
            {
                "s": s,
                "t": t,
                "shared_fraction": float(pair.shared(threshold).mean()),
                "matched_cosine": float(pair.decoder_cos.mean()),
            }
        )
    return pd.DataFrame(rows)


def _unit_directions(saes: list[ExternalSAE], device: torch.device) -> tuple[Tensor, Tensor]:
    """Unit decoder rows and encoder columns `(S, F, d)` of `saes`, filled one SAE at a time while `saes` is
    emptied, so that the raw weights and the stacks are never all held at once."""
    S, F, d = len(saes), saes[0].d_sae, saes[0].d_in
    dec = torch.empty(S, F, d, device=device)
    enc = torch.empty(S, F, d, device=device)
    for s in range(S):
        sae = saes[s]
        dec[s] = unit_rows(sae.W_dec.to(device))
        enc[s] = unit_rows(sae.W_enc.T.to(device))
        saes[s] = sae._replace(W_enc=torch.empty(0), W_dec=torch.empty(0))  # its weights may now be freed
        del sae
    return dec, enc


class StabilityScores(NamedTuple):
    """What `score_saes` computed (and, when given an `out` folder, wrote there)."""

    features: pd.DataFrame
    """One row per anchor latent: `p`, `label`, `mean_max_cos`, `all_pairs_stability` and, for each other SAE n
    (position in `summary["sources"]`), `match_<n>` and `cos_<n>`."""
    summary: dict[str, Any]
    """Sources, shapes, parameters and the headline numbers (real and null)."""
    pairs: pd.DataFrame
    """Whole-SAE scores per pair of SAEs, real (`kind == "sae"`) and null (`kind == "null"`)."""
    thresholds: pd.DataFrame
    """`threshold_sweep` of the real and the null SAEs (column `kind`)."""
    n_sweep: pd.DataFrame
    """`n_sweep` of the real SAEs."""
    labels: dict[str, Tensor]
    """What labels.safetensors holds: `p`, `label`, `max_cos (N, F)`, `argmax (N, F)`, `all_pairs (S, F)`."""
    out: Path | None
    """The report folder, if one was written."""


def score_saes(
    paths: Sequence[str | Path],
    anchor: int = 0,
    threshold: float = 0.7,
    epsilon: float = 0.05,
    *,
    out: str | Path | None = None,
    report: bool = True,
    all_pairs: bool = True,
    pairs: str = "anchor",
    null: bool = True,
    device: str | torch.device = "cpu",
    chunk_size: int = 4096,
    match_method: str = "auto",
    progress: bool = True,
) -> StabilityScores:
    """Per-feature stability of SAEs saved by SAELens, sparsify, dictionary_learning or saelib (one call).

    Args:
        paths: SAE folders, globs or `saelens:RELEASE:SAE_ID` names, one SAE per seed (a saelib stack counts as
            its seeds). They must share `d_in`, `d_sae` and, where recorded, the hook.
        anchor: position of the anchor SAE (paper's estimator: its latents are scored against the N others).
        threshold: cosine tau of a match.
        epsilon: endpoint labels: stable when `p >= 1 - epsilon`, unstable when `p <= epsilon`.
        out: report folder (features.parquet/csv, summary.json, labels.safetensors, sweeps, report.html).
        report: render report.html (needs papermill and nbconvert; skipped with a warning otherwise).
        all_pairs: also the all-pairs stability of the anchor's latents (`S (S - 1) / 2` products instead of N).
        pairs: whole-SAE scores over the `anchor` pairs (N matchings) or `all` pairs.
        null: score untrained SAEs of the same shapes too (doubles the cost).
        device: where the products run (`auto`: cuda if available).
        chunk_size: edge of the blocks of cosines (memory O(chunk_size^2) for the estimators).
        match_method: Hungarian matching, as in `saelib.matching.hungarian_match`.
        progress: tqdm progress bars.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must lie in (0, 1]")
    if not 0 <= epsilon < 0.5:
        raise ValueError(f"epsilon={epsilon} must lie in [0, 0.5)")
    if pairs not in ("anchor", "all"):
        raise ValueError(f"pairs={pairs!r} must be anchor or all")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    saes = read_saes(paths)
    S = len(saes)
    if not 0 <= anchor < S:
        raise ValueError(f"anchor={anchor} must lie in [0, {S}) for the {S} SAEs given")
    dev = resolve_device(device)
    sources = [{"source": s.source, "format": s.format, "hook": s.hook} for s in saes]
    dec, enc = _unit_directions(saes, dev)  # (S, F, d) each; empties `saes` as it goes
    S, F, d_in = dec.shape
    steps = tqdm(total=2 + all_pairs + 2 * null, desc="stability", disable=not progress)

    max_cos, argmax = anchor_matches(dec, anchor, chunk_size, progress)
    p = anchor_p(max_cos, threshold)
    label = endpoint_labels(p, epsilon)
    steps.update()
    others = [t for t in range(S) if t != anchor]
    features = pd.DataFrame(
        {
            "feature": np.arange(F),
            "p": p.cpu().numpy(),
            "label": [LABEL_NAMES[int(v)] for v in label.cpu()],
            "mean_max_cos": max_cos.mean(0).cpu().numpy(),
        }
    )
    all_pairs_stab = torch.full((S, F), torch.nan)
    if all_pairs:
        m, _ = cross_seed_max_cosine(dec, chunk_size=chunk_size)  # (S, S, F)
        all_pairs_stab = stability_from_max_cos(m, threshold)[0].cpu()
        del m
        features["all_pairs_stability"] = all_pairs_stab[anchor].numpy()
        steps.update()
    for n, t in enumerate(others):
        features[f"match_{t}"] = argmax[n].cpu().numpy()
        features[f"cos_{t}"] = max_cos[n].cpu().numpy()

    pair_list = [(anchor, t) for t in others] if pairs == "anchor" else list(itertools.combinations(range(S), 2))
    pair_table = pair_scores(dec, enc, pair_list, threshold, match_method).assign(kind="sae")
    del dec, enc  # before the null's directions: memory stays at two (S, F, d) arrays
    steps.update()
    taus = [round(x, 2) for x in np.arange(0.3, 0.96, 0.05)]
    sweeps = [threshold_sweep(max_cos, taus, epsilon).assign(kind="sae")]
    summary_null: dict[str, float] = {}
    if null:
        # An untrained SAE's encoder is its decoder transposed (tied init, `SAE.__init__`): one array serves both.
        null_dec = null_sae(SAEConfig(d_in=d_in, d_sae=F, n_seeds=S, k=1), device=dev).W_dec.detach()
        null_enc = null_dec
        null_max, _ = anchor_matches(null_dec, anchor, chunk_size, progress)
        null_p = anchor_p(null_max, threshold)
        sweeps.append(threshold_sweep(null_max, taus, epsilon).assign(kind="null"))
        steps.update()
        null_pairs = pair_scores(null_dec, null_enc, pair_list, threshold, match_method).assign(kind="null")
        pair_table = pd.concat([pair_table, null_pairs], ignore_index=True)
        summary_null = {
            "null_mean_p": float(null_p.mean()),
            "null_stable_fraction": float((endpoint_labels(null_p, epsilon) == STABLE).float().mean()),
            "null_shared_fraction": float(null_pairs.shared_fraction.mean()),
            "null_pw_mcc": float(null_pairs.matched_cosine.mean()),
        }
        del null_dec, null_enc, null_max
        steps.update()
    steps.close()

    real = pair_table[pair_table.kind == "sae"]
    summary: dict[str, Any] = {
        "sources": sources,
        "n_saes": S,
        "d_in": d_in,
        "d_sae": F,
        "anchor": anchor,
        "threshold": threshold,
        "epsilon": epsilon,
        "pairs": pairs,
        "mean_p": float(p.mean()),
        "label_counts": {name: int((label == code).sum()) for code, name in LABEL_NAMES.items()},
        "stable_fraction": float((label == STABLE).float().mean()),
        "unstable_fraction": float((label == UNSTABLE).float().mean()),
        "all_pairs_mean_stability": float(all_pairs_stab.nanmean()) if all_pairs else None,
        "shared_fraction": float(real.shared_fraction.mean()),
        "pw_mcc": float(real.matched_cosine.mean()),
        **summary_null,
    }
    labels = {"p": p.cpu(), "label": label.cpu(), "max_cos": max_cos.cpu(), "argmax": argmax.cpu()}
    if all_pairs:
        labels["all_pairs"] = all_pairs_stab
    scores = StabilityScores(
        features,
        summary,
        pair_table,
        pd.concat(sweeps, ignore_index=True),
        n_sweep(max_cos, threshold, epsilon),
        labels,
        None,
    )
    if out is None:
        return scores
    return write_report(scores, Path(out), render=report)


def write_report(scores: StabilityScores, out: Path, render: bool = True) -> StabilityScores:
    """Write `scores` to the folder `out`: features.parquet and features.csv, pairs.csv, thresholds.csv,
    n_sweep.csv, summary.json, labels.safetensors and (when `render`) report.html. Every file is written atomically.

    Returns:
        `scores` with `out` set, and `summary["report"]` saying whether report.html was rendered (and why not).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"features": scores.features, "pairs": scores.pairs, "thresholds": scores.thresholds}
    tables["n_sweep"] = scores.n_sweep
    for name, table in tables.items():
        atomic_write_bytes(out / f"{name}.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(out / "features.parquet", scores.features.to_parquet(index=False))
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # save_file writes a path: write beside, then rename
        save_file({k: v.contiguous() for k, v in scores.labels.items()}, str(Path(tmp) / "labels.safetensors"))
        Path(tmp, "labels.safetensors").replace(out / "labels.safetensors")
    summary = dict(scores.summary)
    summary["report"] = "not requested"
    atomic_write_json(out / "summary.json", summary)
    if render:
        summary["report"] = render_report(out)
        atomic_write_json(out / "summary.json", summary)
    return scores._replace(summary=summary, out=out)


def render_report(out: Path, timeout_s: int = 600) -> str:
    """Execute the report notebook on the folder `out` with papermill and convert it to `out/report.html` with
    nbconvert (input cells hidden). Returns `"report.html"`, or why it was not rendered (a missing package: the
    executed notebook is kept as report.ipynb when only nbconvert is missing)."""
    try:
        import jupytext
        import papermill
    except ImportError as e:
        log.warning("report.html not rendered: %s is not installed (pip install papermill jupytext nbconvert)", e.name)
        return f"not rendered: {e.name} is not installed"
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "report.ipynb"
        executed = Path(tmp) / "executed.ipynb"
        notebook = jupytext.read(REPORT_TEMPLATE)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(notebook, source)
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters={"REPORT_DIR": str(out)},
            cwd=str(out),
            progress_bar=False,
            execution_timeout=timeout_s,
        )
        try:
            from nbconvert import HTMLExporter  # pyright: ignore[reportMissingImports]
        except ImportError:
            shutil.copyfile(executed, out / "report.ipynb")
            log.warning("report.html not rendered: nbconvert is not installed; the executed notebook is report.ipynb")
            return "not rendered: nbconvert is not installed (executed notebook in report.ipynb)"
        html, _ = HTMLExporter(exclude_input=True).from_filename(str(executed))
    atomic_write_bytes(out / "report.html", html.encode())
    return "report.html"
