"""What latents respond to: top-activating contexts and how concentrated their triggers are on one token string
(chapter 2 of the book: unstable latents are dominated by surface-form triggers).

- `top_activations`: the `n_top` largest activations of every latent over a store split, with their rows (the
  token ids and contexts stored with the shards say which token and context each row is), and the latents of a
  few random rows (the non-activating examples of detection scoring).
- `trigger_stats`: per latent, the share of its top activations that fall on its most common token string and the
  entropy of the triggering token strings.
- `context_window`, `top_contexts_table`, `html_table`: readable contexts with the trigger token highlighted.
- `surface_form_share`: the share of explanations describing a surface form (substring, punctuation, formatting,
  single token), by the deterministic keyword rules `SURFACE_FORM_RULES`.

The automatic explanations scored by detection live in `saelib.lm.explainer`.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saelib.metrics import stream_chunks
from saelib.sae import SAE

log = logging.getLogger(__name__)


# --- Top activations ----------------------------------------------------------------------------------------------


class TopActivations(NamedTuple):
    """The largest activations of every latent over the rows of a store split."""

    values: Tensor
    """`(S, n_top, d_sae)` activations, largest first (0 where the latent fired on fewer than n_top rows)."""
    rows: Tensor
    """`(S, n_top, d_sae)` long: the row of each activation in the split (-1 where `values` is 0)."""
    n_firing: Tensor
    """`(S, d_sae)` long: rows on which the latent fires."""
    random_rows: Tensor
    """`(n_random,)` long: uniformly drawn rows of the split."""
    random_active: Tensor
    """`(S, n_random, d_sae)` bool: whether each latent fires on each random row."""
    n_rows: int
    """Rows scanned."""


def _row_chunks(source, max_rows: int | None, chunk: int = 2048):
    """Rows of a store (its shards in order, which is the order of `metadata()`) or of a tensor, in chunks."""
    parts = source if isinstance(source, Tensor) else (source.shard(i) for i in range(source.n_shards))
    n = 0
    for x in stream_chunks(parts, max_tokens=max_rows, chunk=chunk):
        yield n, x
        n += len(x)


@torch.no_grad()
def top_activations(
    sae: SAE, source, *, n_top: int = 20, max_rows: int | None = None, n_random: int = 500, seed: int = 0
) -> TopActivations:
    """The `n_top` largest activations of every latent of every seed, streamed over a store split.

    Args:
        sae: the stack (S seeds; `sae.select([...])` for fewer).
        source: an `ActivationStore` split (rows in `metadata()` order) or activations `(N, d_in)`.
        n_top: activations kept per latent.
        max_rows: scan only the first rows.
        n_random: random rows whose latents are recorded (non-activating examples).
        seed: seed of the random rows.
    """
    if n_top < 1:
        raise ValueError(f"n_top={n_top} must be >= 1")
    dev = sae.W_dec.device
    S, F = sae.n_seeds, sae.cfg.d_sae
    total = len(source) if max_rows is None else min(max_rows, len(source))
    gen = torch.Generator().manual_seed(seed)
    rand_rows = torch.randperm(total, generator=gen)[: min(n_random, total)].sort().values
    rand_active = torch.zeros(S, len(rand_rows), F, dtype=torch.bool)
    best_v = torch.zeros(S, n_top, F, device=dev)
    best_r = torch.full((S, n_top, F), -1, dtype=torch.long, device=dev)
    n_firing = torch.zeros(S, F, dtype=torch.long, device=dev)
    n = 0
    for start, x in _row_chunks(source, max_rows):
        z = sae.encode(x.to(dev, torch.float32))  # (S, B, d_sae)
        n_firing += (z > 0).sum(1)
        rows = torch.arange(start, start + len(x), device=dev).view(1, -1, 1).expand(S, -1, F)
        v, i = torch.cat([best_v, z], 1).topk(n_top, dim=1)  # (S, n_top, d_sae)
        best_v, best_r = v, torch.cat([best_r, rows], 1).gather(1, i)
        inside = (rand_rows >= start) & (rand_rows < start + len(x))
        if inside.any():
            rand_active[:, inside] = (z[:, (rand_rows[inside] - start).to(dev)] > 0).cpu()
        n = start + len(x)
    best_r = torch.where(best_v > 0, best_r, torch.full_like(best_r, -1))
    return TopActivations(best_v.cpu(), best_r.cpu(), n_firing.cpu(), rand_rows, rand_active, n)


# --- Surface-form statistics --------------------------------------------------------------------------------------


def token_strings(tokenizer, token_ids, normalize: bool = True) -> dict[int, str]:
    """Each token id's string (`tokenizer.decode([id])`); with `normalize`, stripped of spaces and lower-cased, so
    that " The", "the" and "THE" count as one surface form."""
    out = {}
    for t in sorted({int(t) for t in np.asarray(token_ids).ravel()}):
        s = tokenizer.decode([t]) if tokenizer is not None else str(t)
        out[t] = s.strip().lower() if normalize else s
    return out


def trigger_stats(
    top: TopActivations, token_id: np.ndarray, tokenizer=None, *, normalize: bool = True, min_count: int | None = None
) -> pd.DataFrame:
    """How concentrated each latent's triggers are: one row per (seed, latent).

    Over the latent's top activations, the trigger is the token at the activating position. Reported: `n_top`
    (activations used), `top_token` (most common trigger string), `top_share` (share of the top activations on it),
    `entropy_bits` (Shannon entropy of the trigger strings, at most log2(n_top)) and `n_distinct`. Latents with
    fewer than `min_count` activations (default: the full n_top) get NaN, since fewer samples lower the entropy.

    Args:
        top: `top_activations` of a split.
        token_id: `(N,)` token id of each row of that split (`store.metadata().token_id`).
        tokenizer: maps ids to strings (None: ids are their own strings).
        normalize: strip and lower-case token strings (see `token_strings`).
        min_count: activations a latent needs for its statistics.
    """
    S, n_top, F = top.rows.shape
    min_count = n_top if min_count is None else min_count
    rows = top.rows.numpy()
    ids = np.where(rows >= 0, np.asarray(token_id)[np.clip(rows, 0, None)], -1)  # (S, n_top, F)
    strings = token_strings(tokenizer, ids[ids >= 0], normalize)
    names = sorted(set(strings.values()))
    code_of = {t: names.index(s) for t, s in strings.items()}
    codes = np.vectorize(lambda t: code_of.get(int(t), -1), otypes=[int])(ids) if ids.size else ids
    records = []
    for s in range(S):
        for f in range(F):
            c = codes[s, :, f]
            c = c[c >= 0]
            if len(c) < max(min_count, 1):
                records.append((s, f, len(c), None, np.nan, np.nan, np.nan))
                continue
            vals, counts = np.unique(c, return_counts=True)
            p = counts / counts.sum()
            records.append(
                (
                    s,
                    f,
                    len(c),
                    names[vals[counts.argmax()]],
                    float(p.max()),
                    float(-(p * np.log2(p)).sum()) + 0.0,
                    len(vals),
                )
            )
    return pd.DataFrame(
        records, columns=["seed", "latent", "n_top", "top_token", "top_share", "entropy_bits", "n_distinct"]
    )


# --- Readable contexts --------------------------------------------------------------------------------------------


def context_window(
    contexts: np.ndarray,
    context: int,
    position: int,
    *,
    left: int = 12,
    right: int = 4,
    pad_id: int | None = None,
    bos_id: int | None = None,
) -> tuple[list[int], int, list[int]]:
    """Token ids `(before, trigger, after)` around `contexts[context, position]`, without BOS and padding."""
    row = np.asarray(contexts)[context]
    skip = {pad_id, bos_id} - {None}
    before = [int(t) for t in row[max(0, position - left) : position] if int(t) not in skip]
    after = [int(t) for t in row[position + 1 : position + 1 + right] if int(t) not in skip]
    return before, int(row[position]), after


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~$])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\n", "⏎").replace("\r", ""))


def _html(text: str) -> str:
    return html.escape(text.replace("\n", "⏎").replace("\r", ""))


def render_context(tokenizer, before: list[int], trigger: int, after: list[int], style: str = "html") -> str:
    """One line of text with the trigger token highlighted: `<mark><b>tok</b></mark>` (html, the rest escaped),
    `**tok**` (markdown, other characters escaped), `<<tok>>` (plain, for explainer prompts) or nothing marked
    (`none`, for detection prompts, which end at the trigger). Line breaks show as ⏎."""
    if tokenizer is None:
        b, t, a = (" ".join(map(str, ids)) for ids in (before, [trigger], after))
    else:
        b, t, a = tokenizer.decode(before), tokenizer.decode([trigger]), tokenizer.decode(after)
    if style == "html":
        t = t.replace("\n", "⏎")
        lead = t[: len(t) - len(t.lstrip())]
        return f"{_html(b)}{_html(lead)}<mark><b>{_html(t.strip()) or '␣'}</b></mark>{_html(a)}"
    if style == "markdown":
        t = t.replace("\n", "⏎")
        lead = t[: len(t) - len(t.lstrip())]
        return f"{_md(b)}{_md(lead)}**{_md(t.strip()) or '␣'}**{_md(a)}"
    if style == "plain":
        return f"{b}<<{t}>>{a}".replace("\n", "⏎")
    if style == "none":
        return f"{b}{t}{a}".replace("\n", "⏎")
    raise ValueError(f"style={style!r} must be html, markdown, plain or none")


def top_contexts_table(
    top: TopActivations,
    meta,
    contexts: np.ndarray,
    tokenizer,
    seed: int,
    features,
    *,
    n: int = 5,
    left: int = 12,
    right: int = 4,
    pad_id=None,
    bos_id=None,
    style: str = "html",
) -> pd.DataFrame:
    """The `n` top contexts of each of `features` (seed position `seed`), trigger highlighted (`render_context`).

    Args:
        top: `top_activations` of a split; meta: that split's `TokenMetadata`; contexts: its `contexts()`.
        tokenizer: decodes ids.
        seed: seed position within `top`.
        features: latent indices.
    """
    records = []
    for f in features:
        for r in range(min(n, top.rows.shape[1])):
            row = int(top.rows[seed, r, f])
            if row < 0:
                break
            b, t, a = context_window(
                contexts,
                int(meta.context[row]),
                int(meta.position[row]),
                left=left,
                right=right,
                pad_id=pad_id,
                bos_id=bos_id,
            )
            records.append(
                {
                    "latent": int(f),
                    "rank": r + 1,
                    "activation": float(top.values[seed, r, f]),
                    "context": render_context(tokenizer, b, t, a, style),
                }
            )
    return pd.DataFrame(records, columns=["latent", "rank", "activation", "context"])


def html_table(df: pd.DataFrame, floatfmt: str = "{:.2f}") -> str:
    """An HTML table of `df` whose cells are used as they are (so `render_context(..., "html")` keeps its marks);
    myst-nb's default markdown renderer (CommonMark) has no tables, HTML renders everywhere."""
    return df.to_html(escape=False, index=False, float_format=floatfmt.format, border=0)


# --- Surface forms in explanations ----------------------------------------------------------------------------------

SURFACE_FORM_RULES: dict[str, re.Pattern[str]] = {
    "substring": re.compile(
        r"\bsub-?strings?\b|\bsub-?words?\b|\bword (?:pieces?|fragments?|parts?)\b|\bparts? of (?:a |the )?words?\b"
        r"|\bprefix(?:es)?\b|\bsuffix(?:es)?\b|\bletter (?:sequences?|combinations?)\b|\bcharacter sequences?\b"
    ),
    "punctuation": re.compile(
        r"\bpunctuation\b|\bcommas?\b|\bperiods?\b|\bfull stops?\b|\bcolons?\b|\bsemicolons?\b|\bquot(?:e|es|ation)"
        r"|\bapostrophes?\b|\bhyphens?\b|\bdash(?:es)?\b|\bbrackets?\b|\bparenthes[ie]s\b|\bquestion marks?\b"
        r"|\bexclamation\b|\bellips[ie]s\b"
    ),
    "formatting": re.compile(
        r"\bformat(?:ting|ted)?\b|\bwhitespace\b|\bnew ?lines?\b|\bline breaks?\b|\bindent(?:ation|ed)?\b"
        r"|\btabs?\b|\bmarkdown\b|\bhtml\b|\bmarkup\b|\bcapitali[sz](?:ed|ation)\b"
        r"|\bupper[- ]?case\b|\blower[- ]?case\b"
        r"|\bbullet(?: points?)?\b|\bheadings?\b|\bheaders?\b|\bcode blocks?\b"
    ),
    "single token": re.compile(
        r"\b(?:single|specific|particular|one|exact|same|individual) (?:tokens?|words?)\b"
        r"|\b(?:the )?(?:token|word) [\"'\u201c\u2018`]|\bonly (?:on )?(?:the )?(?:token|word)\b"
    ),
}
"""Deterministic keyword rules (lower-cased text, regular expressions) of the four surface-form categories the paper
counts in explanations (arXiv 2606.12138, as reported by a secondary source: "substring" appears in 38.9% of unstable
latents' explanations against 11.3% of stable ones). An explanation may fall in several categories, or in none.
`substring` covers substrings, sub-words, word pieces, prefixes and suffixes; `single token` covers explanations
naming one token or word ("the token 'the'", "a specific word")."""


def surface_form_categories(explanation: str) -> set[str]:
    """The `SURFACE_FORM_RULES` categories whose rule matches `explanation` (lower-cased)."""
    text = explanation.lower()
    return {name for name, rule in SURFACE_FORM_RULES.items() if rule.search(text)}


def surface_form_share(explanations: Iterable[str | None]) -> dict[str, float]:
    """Share of `explanations` in each surface-form category, by `SURFACE_FORM_RULES`.

    Args:
        explanations: strings (None or empty ones, explanations that failed, are left out).

    Returns:
        `{category: share}` for the four categories, `"any"` (share in at least one), `"substring (word)"` (share
        containing the literal word "substring", the paper's own count) and `"n"` (explanations counted). Shares
        are NaN when no explanation is counted.
    """
    texts = [e for e in explanations if isinstance(e, str) and e.strip()]
    n = len(texts)
    cats = [surface_form_categories(t) for t in texts]
    out: dict[str, float] = {}
    for name in SURFACE_FORM_RULES:
        out[name] = sum(name in c for c in cats) / n if n else float("nan")
    out["any"] = sum(bool(c) for c in cats) / n if n else float("nan")
    out["substring (word)"] = sum("substring" in t.lower() for t in texts) / n if n else float("nan")
    out["n"] = n
    return out
