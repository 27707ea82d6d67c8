"""Automatic explanations of latents, scored by detection (delphi / SAEBench style), from any OpenAI-compatible chat
endpoint.

- `ExplainerConfig.from_env()`: the endpoint named by environment variables; `chat_completion`: one call with bounded
  retries (429, 5xx, connection errors) and one deadline for the whole call.
- `explain_feature`: a one-line explanation from a latent's top contexts; `detection_score`: given only the
  explanation, the model says which of held-out activating and random non-activating contexts activate the latent
  (the score is the balanced accuracy); `explain_and_score`: both for many latents, a failure recorded per latent.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from saelib.lm.interp import TopActivations, context_window, render_context

log = logging.getLogger(__name__)

ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "SAELIB_EXPLAINER_BASE_URL", "SAELIB_EXPLAINER_MODEL", "SAELIB_EXPLAINER_API_KEY"
"""Environment variables naming the explainer endpoint (`{base}/chat/completions`), its model and its key."""


# --- Automatic explanations (delphi / SAEBench style) -------------------------------------------------------------


@dataclass(frozen=True)
class ExplainerConfig:
    """An OpenAI-compatible chat endpoint and how explanations are asked for and scored."""

    base_url: str
    """Endpoint root; requests go to `{base_url}/chat/completions`."""
    model: str
    """Model name sent with every request."""
    api_key: str | None = None
    """Bearer token (never written to the cache)."""
    n_explain: int = 10
    """Top contexts shown to the explainer (the even ranks of the top activations)."""
    n_score: int = 10
    """Held-out activating contexts scored (the odd ranks), and as many random non-activating ones."""
    left: int = 16
    """Tokens of context before the trigger."""
    right: int = 4
    """Tokens after the trigger in explanation prompts (detection prompts end at the token scored)."""
    temperature: float = 0.0
    """Sampling temperature."""
    max_tokens: int = 256
    """Longest reply."""
    timeout_s: float = 120.0
    """Deadline of one call in seconds, retries and a slowly dripping reply included."""
    max_retries: int = 4
    """Retries of a request that failed with HTTP 429, 5xx or a connection error (0: no retry)."""
    backoff_s: float = 1.0
    """Wait before the first retry; it doubles with every retry (a `Retry-After` header is honoured up to
    `backoff_max_s`)."""
    backoff_max_s: float = 30.0
    """Longest wait between two attempts."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"ExplainerConfig.base_url={self.base_url!r} must start with http:// or https://")
        if not self.model:
            raise ValueError("ExplainerConfig.model is empty")
        if self.n_explain < 1 or self.n_score < 1:
            raise ValueError("ExplainerConfig.n_explain and n_score must be >= 1")
        if not self.timeout_s > 0:
            raise ValueError(f"ExplainerConfig.timeout_s={self.timeout_s!r} must be > 0")
        if self.max_retries < 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("ExplainerConfig.max_retries, backoff_s and backoff_max_s must be >= 0")

    @classmethod
    def from_env(cls, **overrides) -> ExplainerConfig | None:
        """From `SAELIB_EXPLAINER_BASE_URL`, `SAELIB_EXPLAINER_MODEL` and optional `SAELIB_EXPLAINER_API_KEY`;
        None when the first two are not both set."""
        base, model = os.environ.get(ENV_BASE_URL, "").strip(), os.environ.get(ENV_MODEL, "").strip()
        if not base or not model:
            return None
        return cls(base_url=base.rstrip("/"), model=model, api_key=os.environ.get(ENV_API_KEY) or None, **overrides)

    def cache_key(self) -> dict:
        """Everything that determines the replies, without the key (nor the retry settings, which do not)."""
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_IN_KEY}


_NOT_IN_KEY = ("api_key", "max_retries", "backoff_s", "backoff_max_s")


class ExplainerError(RuntimeError):
    """The endpoint failed or replied with something that is not a chat completion."""


RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses after which a request is retried (any other 5xx is retried too)."""


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


def _retry_after(e: urllib.error.HTTPError) -> float | None:
    try:
        return max(0.0, float(e.headers.get("Retry-After", "")))
    except (TypeError, ValueError):
        return None


def _read_before(resp, deadline: float, url: str) -> bytes:
    """The body of `resp`, read in pieces with the socket's timeout set to the time left, so that a reply that
    drips slowly cannot outlast `deadline` (a plain `read()` bounds each socket read only)."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    parts = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the reply from {url} did not finish before the deadline")
        if sock is not None:
            sock.settimeout(left)
        piece = resp.read1(65536)
        if not piece:
            return b"".join(parts)
        parts.append(piece)


def chat_completion(cfg: ExplainerConfig, messages: list[dict]) -> str:
    """POST `{base_url}/chat/completions` and return the first choice's message content.

    HTTP 429 and 5xx replies and connection errors are retried up to `cfg.max_retries` times with exponential
    backoff; the whole call, retries and reading the reply included, ends within `cfg.timeout_s` seconds.

    Raises:
        ExplainerError: the endpoint failed (after the retries), ran past the deadline, or sent something that is
            not a chat completion with a text content (malformed JSON, `content: null`, ...); one line.
    """
    body = json.dumps(
        {"model": cfg.model, "messages": messages, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    url = f"{cfg.base_url.rstrip('/')}/chat/completions"
    deadline = time.monotonic() + cfg.timeout_s
    where = f"explainer endpoint {cfg.base_url}"
    attempt = 0
    while True:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExplainerError(f"{where} did not answer within timeout_s={cfg.timeout_s}")
            try:
                with urllib.request.urlopen(req, timeout=left) as resp:
                    raw = _read_before(resp, deadline, url)
            except urllib.error.HTTPError as e:
                if e.code in RETRY_STATUS or e.code >= 500:
                    raise _Retry(f"HTTP {e.code}", _retry_after(e)) from None
                raise ExplainerError(f"{where} answered HTTP {e.code}") from None
            except (TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(e, TimeoutError) or isinstance(reason, TimeoutError):
                    raise ExplainerError(f"{where} did not answer within timeout_s={cfg.timeout_s}") from None
                raise _Retry(f"connection failed: {reason}") from None
            except http.client.HTTPException as e:  # e.g. the connection closed in the middle of the reply
                raise _Retry(f"connection failed: {type(e).__name__}") from None
            break
        except _Retry as r:
            attempt += 1
            wait = min(cfg.backoff_max_s, r.wait if r.wait is not None else cfg.backoff_s * 2 ** (attempt - 1))
            if attempt > cfg.max_retries:
                raise ExplainerError(f"{where} failed after {attempt} attempts: {r}") from None
            if time.monotonic() + wait >= deadline:
                raise ExplainerError(f"{where} failed ({r}) and timeout_s={cfg.timeout_s} leaves no retry") from None
            log.info("%s: %s; retry %d/%d in %.2g s", where, r, attempt, cfg.max_retries, wait)
            time.sleep(wait)
    try:
        reply = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ExplainerError(f"{where} sent a reply that is not JSON: {raw[:80]!r}") from None
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise ExplainerError(f"{where} sent no text in choices[0].message.content (got {content!r})")
    return content.strip()


EXPLAIN_SYSTEM = (
    "You are explaining a latent feature of a sparse autoencoder trained on a language model's activations. "
    "You are shown text excerpts where the feature activates strongly; the token where it activates is marked "
    "<<like this>>. Reply with one short line describing what the feature responds to (a token, a word, a "
    "syntactic role, a topic, ...). Begin the line with 'TOKEN:' if the feature responds to a particular token or "
    "spelling largely regardless of its meaning or context (a surface form), otherwise with 'CONTEXT:'. No preamble."
)
DETECT_SYSTEM = (
    "A sparse autoencoder feature is described by an explanation. For each numbered text excerpt, decide whether "
    "the feature activates on the LAST token of the excerpt. Reply with only a JSON list of 0s and 1s, one per "
    "excerpt, in order (1: activates, 0: does not)."
)


class Explanation(NamedTuple):
    """An explainer's reply."""

    text: str
    """The one-line explanation (without its tag)."""
    surface_form: bool | None
    """True when the explainer tagged it `TOKEN:` (a surface-form trigger), False for `CONTEXT:`, None untagged."""


def explain_feature(cfg: ExplainerConfig, examples: list[str]) -> Explanation:
    """A one-line explanation from contexts whose trigger is marked `<<tok>>` (`render_context(..., "plain")`)."""
    user = "\n".join(f"Example {i + 1}: {e}" for i, e in enumerate(examples))
    reply = chat_completion(cfg, [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}])
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    m = re.match(r"^\W*(TOKEN|CONTEXT)\W*:\s*(.*)$", line, flags=re.IGNORECASE)
    if m is None:
        return Explanation(line, None)
    return Explanation(m.group(2).strip(), m.group(1).upper() == "TOKEN")


def parse_labels(reply: str, n: int) -> list[int] | None:
    """The n 0/1 labels of a detection reply (a JSON list, else the reply's first n lone 0/1 digits); None if absent."""
    m = re.search(r"\[[^\[\]]*\]", reply)
    if m:
        try:
            vals = json.loads(m.group(0))
            if len(vals) == n and all(int(v) in (0, 1) for v in vals):
                return [int(v) for v in vals]
        except (ValueError, TypeError):
            pass
    digits = re.findall(r"(?<![\d.])[01](?![\d.])", reply)
    return [int(d) for d in digits] if len(digits) == n else None


class DetectionScore(NamedTuple):
    """How well an explanation lets the explainer's model tell activating from non-activating contexts."""

    balanced_accuracy: float
    """Mean of the recall on activating and on non-activating contexts (0.5: chance); NaN if the reply was unusable."""
    recall: float
    """Share of activating contexts labelled 1."""
    specificity: float
    """Share of non-activating contexts labelled 0."""
    n_positive: int
    """Activating contexts scored."""
    n_negative: int
    """Non-activating contexts scored."""


def detection_score(
    cfg: ExplainerConfig, explanation: str, positives: list[str], negatives: list[str], *, seed: int = 0
) -> DetectionScore:
    """Detection scoring (delphi, SAEBench): the model labels a shuffled mix of held-out activating contexts and
    random non-activating ones, each ending at the token in question, given only the explanation."""
    items = [(t, 1) for t in positives] + [(t, 0) for t in negatives]
    if not positives or not negatives:
        raise ValueError("positives and negatives must both be non-empty")
    order = np.random.default_rng(seed).permutation(len(items))
    texts, truth = [items[i][0] for i in order], np.array([items[i][1] for i in order])
    user = f"Explanation: {explanation}\n\n" + "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    reply = chat_completion(cfg, [{"role": "system", "content": DETECT_SYSTEM}, {"role": "user", "content": user}])
    labels = parse_labels(reply, len(texts))
    if labels is None:
        log.warning("unusable detection reply: %.80s", reply)
        return DetectionScore(np.nan, np.nan, np.nan, len(positives), len(negatives))
    pred = np.array(labels)
    recall, spec = float(pred[truth == 1].mean()), float(1 - pred[truth == 0].mean())
    return DetectionScore((recall + spec) / 2, recall, spec, len(positives), len(negatives))


def explain_and_score(
    cfg: ExplainerConfig,
    top: TopActivations,
    meta,
    contexts: np.ndarray,
    tokenizer,
    seed: int,
    features,
    *,
    pad_id=None,
    bos_id=None,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Explain each of `features` (seed position `seed`) from its even-ranked top contexts and score the explanation
    on its odd-ranked ones against random rows where it does not fire. One row per latent: `latent`,
    `explanation`, `surface_form` (the explainer's tag), the `DetectionScore` fields and `error` (None, or why the
    explainer failed for this latent: the batch goes on, the latent's explanation is None and its scores NaN)."""
    rng = np.random.default_rng(rng_seed)
    win = {"left": cfg.left, "pad_id": pad_id, "bos_id": bos_id}
    records = []
    for f in features:
        rows = [int(r) for r in top.rows[seed, :, f] if r >= 0]
        shown, held = rows[0::2][: cfg.n_explain], rows[1::2][: cfg.n_score]
        silent = top.random_rows[~top.random_active[seed, :, f]].numpy()
        if not shown or not held or not len(silent):
            records.append(_failed(f, "too few activating or non-activating contexts"))
            continue
        neg_rows = rng.choice(silent, size=min(len(held), len(silent)), replace=False)
        examples = [
            render_context(
                tokenizer,
                *context_window(contexts, int(meta.context[r]), int(meta.position[r]), right=cfg.right, **win),
                "plain",
            )
            for r in shown
        ]
        score_seed = int(rng.integers(1 << 31))  # drawn whatever happens, so that a failure shifts no other latent

        def ending_at(r):  # noqa: E306 - a context that ends at the token scored
            b, t, _ = context_window(contexts, int(meta.context[r]), int(meta.position[r]), right=0, **win)
            return render_context(tokenizer, b, t, [], "none")

        try:
            explanation = explain_feature(cfg, examples)
            score = detection_score(
                cfg,
                explanation.text,
                [ending_at(r) for r in held],
                [ending_at(int(r)) for r in neg_rows],
                seed=score_seed,
            )
        except ExplainerError as e:
            log.warning("latent %d: %s", int(f), e)
            records.append(_failed(f, str(e)))
            continue
        records.append(
            {
                "latent": int(f),
                "explanation": explanation.text,
                "surface_form": explanation.surface_form,
                **score._asdict(),
                "error": None,
            }
        )
    return pd.DataFrame(records, columns=["latent", "explanation", "surface_form", *DetectionScore._fields, "error"])


def _failed(latent, error: str) -> dict:
    """The row of a latent that got no explanation, and why."""
    return {
        "latent": int(latent),
        "explanation": None,
        "surface_form": None,
        **dict.fromkeys(DetectionScore._fields, np.nan),
        "error": error,
    }
