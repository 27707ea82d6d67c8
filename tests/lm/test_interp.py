"""Top activations, trigger statistics, readable contexts and the explainer (against a real local HTTP endpoint)."""

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import torch

from saelib.config import SAEConfig
from saelib.lm import explainer, interp
from saelib.lm.store import TokenMetadata
from saelib.sae import SAE


class FakeStore:
    """Rows split over shards, like `ActivationStore` (rows numbered across shards in order)."""

    def __init__(self, x, sizes):
        self.parts = list(x.split(sizes))
        self.n_shards = len(self.parts)

    def shard(self, i):
        return self.parts[i]

    def __len__(self):
        return sum(len(p) for p in self.parts)


class WordTokenizer:
    """Token id i is the word `VOCAB[i]`; decode joins with spaces (leading space on every word but BOS)."""

    VOCAB = ["<pad>", "<bos>", "the", "The", "cat", "sat", "on", "mat", "dog", "a*b", "\n"]

    def decode(self, ids):
        return "".join(self.VOCAB[int(i)] if self.VOCAB[int(i)] == "\n" else " " + self.VOCAB[int(i)] for i in ids)


def test_top_activations_against_brute_force():
    sae = SAE(SAEConfig(d_in=6, d_sae=16, variant="relu", n_seeds=2)).eval()
    with torch.no_grad():
        sae.b_enc.fill_(-1.0)  # some latents fire rarely
    x = torch.randn(700, 6) * 1.5
    top = interp.top_activations(sae, FakeStore(x, [250, 300, 150]), n_top=5, n_random=40)
    with torch.no_grad():
        z = sae.encode(x)  # (S, N, F)
    v, r = z.topk(5, dim=1)
    torch.testing.assert_close(top.values, v)
    ok = v > 0
    assert torch.equal(top.rows[ok], r[ok]) and (top.rows[~ok] == -1).all()
    assert torch.equal(top.n_firing, (z > 0).sum(1))
    assert top.n_rows == 700 and len(top.random_rows) == 40 and len(set(top.random_rows.tolist())) == 40
    assert torch.equal(top.random_active, z[:, top.random_rows] > 0)
    part = interp.top_activations(sae, x, n_top=5, max_rows=100, n_random=10)
    torch.testing.assert_close(part.values, z[:, :100].topk(5, dim=1).values)
    assert part.n_rows == 100 and part.random_rows.max() < 100


def _top(rows_per_feature, n_top):
    """A `TopActivations` whose latent f's top rows are `rows_per_feature[f]` (seed 0 only)."""
    F = len(rows_per_feature)
    rows = torch.full((1, n_top, F), -1, dtype=torch.long)
    values = torch.zeros(1, n_top, F)
    for f, rs in enumerate(rows_per_feature):
        rows[0, : len(rs), f] = torch.tensor(rs)
        values[0, : len(rs), f] = torch.linspace(5, 1, len(rs))
    return interp.TopActivations(
        values,
        rows,
        torch.tensor([[len(r) for r in rows_per_feature]]),
        torch.arange(0),
        torch.zeros(1, 0, F, dtype=torch.bool),
        100,
    )


def test_trigger_stats_known_answers():
    token_id = np.array([4, 4, 4, 4, 2, 3, 5, 6, 7, 8, 2, 3])  # row -> token id
    top = _top([[0, 1, 2, 3], [4, 6, 7, 8], [4, 5, 10, 11], [0, 1]], n_top=4)
    df = interp.trigger_stats(top, token_id, WordTokenizer()).set_index("latent")
    assert df.loc[0, "top_share"] == 1.0 and df.loc[0, "entropy_bits"] == 0.0 and df.loc[0, "top_token"] == "cat"
    assert df.loc[1, "entropy_bits"] == pytest.approx(2.0) and df.loc[1, "n_distinct"] == 4
    # "the" and "The" are one surface form once normalised.
    assert df.loc[2, "top_share"] == 1.0 and df.loc[2, "top_token"] == "the"
    raw = interp.trigger_stats(top, token_id, WordTokenizer(), normalize=False).set_index("latent")
    assert raw.loc[2, "top_share"] == 0.5 and raw.loc[2, "entropy_bits"] == pytest.approx(1.0)
    # Too few activations: no statistics (fewer samples would bias the entropy down).
    assert np.isnan(df.loc[3, "top_share"]) and df.loc[3, "n_top"] == 2
    low = interp.trigger_stats(top, token_id, None, min_count=2).set_index("latent")
    assert low.loc[3, "top_share"] == 1.0 and low.loc[3, "top_token"] == "4"


def test_context_window_and_rendering():
    contexts = np.array([[1, 2, 4, 5, 6, 9, 7, 0, 0], [1, 3, 8, 10, 5, 0, 0, 0, 0]])
    b, t, a = interp.context_window(contexts, 0, 5, left=10, right=3, pad_id=0, bos_id=1)
    assert (b, t, a) == ([2, 4, 5, 6], 9, [7])
    tok = WordTokenizer()
    md = interp.render_context(tok, b, t, a, "markdown")
    assert md == r" the cat sat on **a\*b** mat"
    assert interp.render_context(tok, b, t, a, "plain") == " the cat sat on<< a*b>> mat"
    assert interp.render_context(tok, [3], 9, [2, 10], "html") == " The <mark><b>a*b</b></mark> the⏎"
    assert interp.render_context(WordTokenizer(), [], 4, [], "html") == " <mark><b>cat</b></mark>"
    assert "&lt;bos&gt;" in interp.render_context(tok, [1], 4, [], "html")  # HTML is escaped
    assert interp.render_context(tok, b, t, [], "none") == " the cat sat on a*b"
    b, t, a = interp.context_window(contexts, 1, 3, left=2, right=2, pad_id=0, bos_id=1)
    assert interp.render_context(tok, b, t, a, "markdown") == " The dog**⏎** sat"
    with pytest.raises(ValueError, match="style"):
        interp.render_context(tok, b, t, a, "latex")


def test_top_contexts_table_and_html():
    contexts = np.array([[1, 2, 4, 5, 6, 7], [1, 3, 8, 5, 6, 7]])
    meta = TokenMetadata(
        np.array([2, 4, 5, 6, 7, 3, 8, 5, 6, 7]), np.array([0] * 5 + [1] * 5), np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    )
    top = _top([[1, 6], [2]], n_top=3)
    df = interp.top_contexts_table(
        top, meta, contexts, WordTokenizer(), 0, [0, 1], n=3, left=2, right=1, pad_id=0, bos_id=1, style="markdown"
    )
    assert list(df.latent) == [0, 0, 1] and list(df["rank"]) == [1, 2, 1]
    assert df.context[0] == " the **cat** sat" and df.context[1] == " The **dog** sat"
    df = interp.top_contexts_table(
        top, meta, contexts, WordTokenizer(), 0, [0, 1], n=3, left=2, right=1, pad_id=0, bos_id=1
    )
    table = interp.html_table(df)
    assert table.count("<tr") == 4 and "<td>5.00</td>" in table
    assert "<td>the <mark><b>cat</b></mark> sat</td>" in table  # marks survive, not escaped twice


def test_parse_labels():
    assert explainer.parse_labels("[1, 0, 1]", 3) == [1, 0, 1]
    assert explainer.parse_labels("Sure! Labels: [0,0]\n", 2) == [0, 0]
    assert explainer.parse_labels("1\n0\n1", 3) == [1, 0, 1]
    assert explainer.parse_labels("[1, 0]", 3) is None and explainer.parse_labels("no idea", 2) is None


# --- A real OpenAI-compatible endpoint on 127.0.0.1, served by the test itself ------------------------------------


class FakeChat(BaseHTTPRequestHandler):
    """Explains any latent as the token 'cat'; detects contexts whose last word is 'cat' (or says 1 to all)."""

    requests: list = []
    mode = "smart"

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if FakeChat.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        if system == explainer.EXPLAIN_SYSTEM:
            content = "TOKEN: the word 'cat'\nextra line ignored"
        else:
            items = [ln.split(". ", 1)[1] for ln in user.splitlines() if ln[:1].isdigit()]
            labels = [int(t.split()[-1] == "cat") if FakeChat.mode == "smart" else 1 for t in items]
            content = f"Here you go: {json.dumps(labels)}"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeChat.requests, FakeChat.mode = [], "smart"
    monkeypatch.setenv(explainer.ENV_BASE_URL, f"http://127.0.0.1:{server.server_address[1]}/v1/")
    monkeypatch.setenv(explainer.ENV_MODEL, "fake-model")
    monkeypatch.setenv(explainer.ENV_API_KEY, "secret")
    yield server
    server.shutdown()
    server.server_close()


def test_explainer_config_from_env(monkeypatch):
    monkeypatch.delenv(explainer.ENV_BASE_URL, raising=False)
    monkeypatch.setenv(explainer.ENV_MODEL, "m")
    assert explainer.ExplainerConfig.from_env() is None
    monkeypatch.setenv(explainer.ENV_BASE_URL, "http://localhost:1/v1/")
    monkeypatch.delenv(explainer.ENV_API_KEY, raising=False)
    cfg = explainer.ExplainerConfig.from_env(n_score=3)
    assert cfg.base_url == "http://localhost:1/v1" and cfg.api_key is None and cfg.n_score == 3
    assert "api_key" not in explainer.ExplainerConfig("http://x", "m", api_key="k").cache_key()
    with pytest.raises(ValueError, match="base_url"):
        explainer.ExplainerConfig("localhost:1", "m")


def test_explain_and_detect_through_a_local_endpoint(endpoint):
    cfg = explainer.ExplainerConfig.from_env()
    exp = explainer.explain_feature(cfg, ["the <<cat>> sat", "a <<cat>>"])
    assert exp == explainer.Explanation("the word 'cat'", True)
    req = FakeChat.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    assert req["body"]["model"] == "fake-model" and "Example 2: a <<cat>>" in req["body"]["messages"][1]["content"]
    score = explainer.detection_score(cfg, exp.text, ["the cat", "a big cat", "my cat"], ["the dog", "a mat"])
    assert score == explainer.DetectionScore(1.0, 1.0, 1.0, 3, 2)
    FakeChat.mode = "yes"
    assert explainer.detection_score(cfg, exp.text, ["the cat"], ["the dog"]).balanced_accuracy == 0.5
    FakeChat.mode = "error"
    with pytest.raises(explainer.ExplainerError, match="HTTP 500"):
        explainer.explain_feature(dataclasses.replace(cfg, backoff_s=0.001), ["x"])


def test_explain_and_score_end_to_end(endpoint):
    # Latent 0 fires on "cat" (rows 0, 2, 4, 6); random non-firing rows end at other words.
    contexts = np.array([[1, 2, 4, 5, 2, 4, 6, 2, 4, 7, 2, 4, 8]])
    meta = TokenMetadata(contexts[0, 1:], np.zeros(12, dtype=int), np.arange(1, 13))
    cat_rows = [1, 4, 7, 10]  # rows whose token is "cat"
    top = interp.TopActivations(
        torch.tensor([[[4.0], [3.0], [2.0], [1.0]]]),
        torch.tensor([[[r] for r in cat_rows]]),
        torch.tensor([[4]]),
        torch.tensor([0, 2, 3, 5]),
        torch.tensor([[[False], [False], [False], [False]]]),
        12,
    )
    cfg = explainer.ExplainerConfig.from_env(n_explain=2, n_score=2, left=3)
    df = explainer.explain_and_score(cfg, top, meta, contexts, WordTokenizer(), 0, [0], pad_id=0, bos_id=1)
    r = df.iloc[0]
    assert r.explanation == "the word 'cat'" and r.surface_form and r.balanced_accuracy == 1.0
    assert r.n_positive == 2 and r.n_negative == 2
    shown = FakeChat.requests[0]["body"]["messages"][1]["content"]
    assert "<< cat>>" in shown and shown.count("Example") == 2  # the even ranks are shown, the odd ones held out


# --- Faults of the endpoint: a scripted server on 127.0.0.1 ------------------------------------------------------


def _completion(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next step of `script`: an HTTP status, `"ok"`, `"null"`, `"garbage"` or
    `"drip"` (a valid reply sent one byte every 50 ms); `"ok"` once the script is exhausted."""

    script: list = []
    served: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        step = Scripted.script.pop(0) if Scripted.script else "ok"
        Scripted.served.append(step)
        if isinstance(step, int):
            self.send_response(step)
            if step == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = {"ok": _completion("CONTEXT: fine"), "null": _completion(None), "garbage": b"{not json"}.get(
            step, _completion("CONTEXT: slow")
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if step == "drip":
            try:
                for byte in data:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up at its deadline
                pass
        else:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.script, Scripted.served = [], []
    cfg = explainer.ExplainerConfig(
        f"http://127.0.0.1:{server.server_address[1]}/v1", "m", timeout_s=5, backoff_s=0.001, backoff_max_s=0.01
    )
    yield cfg
    server.shutdown()
    server.server_close()


def test_explainer_retries_5xx_then_succeeds(scripted):
    Scripted.script = [500, 503, "ok"]
    assert explainer.chat_completion(scripted, []) == "CONTEXT: fine"
    assert Scripted.served == [500, 503, "ok"]


def test_explainer_retries_429_and_gives_up_after_max_retries(scripted):
    Scripted.script = [429] * 10
    with pytest.raises(explainer.ExplainerError, match=r"failed after 3 attempts: HTTP 429"):
        explainer.chat_completion(dataclasses.replace(scripted, max_retries=2), [])
    assert Scripted.served == [429] * 3


def test_explainer_does_not_retry_a_client_error(scripted):
    Scripted.script = [400, "ok"]
    with pytest.raises(explainer.ExplainerError, match="HTTP 400"):
        explainer.chat_completion(scripted, [])
    assert Scripted.served == [400]


def test_explainer_retries_connection_errors():
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = explainer.ExplainerConfig(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5, max_retries=2, backoff_s=0.001)
    with pytest.raises(explainer.ExplainerError, match="failed after 3 attempts: connection failed"):
        explainer.chat_completion(cfg, [])


@pytest.mark.parametrize(("step", "match"), [("null", "no text.*None"), ("garbage", "not JSON")])
def test_null_content_or_malformed_json_is_an_error_not_text(scripted, step, match):
    Scripted.script = [step]
    with pytest.raises(explainer.ExplainerError, match=match):
        explainer.explain_feature(scripted, ["x"])


def test_a_slow_drip_cannot_outlast_the_deadline(scripted):
    Scripted.script = ["drip"]  # about 60 bytes at 50 ms each: 3 s, each read well inside any per-read timeout
    start = time.monotonic()
    with pytest.raises(explainer.ExplainerError, match="timeout_s=0.5"):
        explainer.chat_completion(dataclasses.replace(scripted, timeout_s=0.5), [])
    assert time.monotonic() - start < 1.5


def test_retry_settings_are_not_part_of_the_cache_key():
    a = explainer.ExplainerConfig("http://x", "m")
    assert a.cache_key() == dataclasses.replace(a, max_retries=0, backoff_s=9).cache_key()
    with pytest.raises(ValueError, match="timeout_s"):
        explainer.ExplainerConfig("http://x", "m", timeout_s=0)


def test_explain_and_score_records_failures_and_goes_on(scripted):
    contexts = np.array([[1, 2, 4, 5, 2, 4, 6, 2, 4, 7, 2, 4, 8]])
    meta = TokenMetadata(contexts[0, 1:], np.zeros(12, dtype=int), np.arange(1, 13))
    top = interp.TopActivations(
        torch.tensor([[[4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]]]),
        torch.tensor([[[1, 1], [4, 4], [7, 7], [10, 10]]]),
        torch.tensor([[4, 4]]),
        torch.tensor([0, 2, 3, 5]),
        torch.zeros(1, 4, 2, dtype=torch.bool),
        12,
    )
    cfg = dataclasses.replace(scripted, n_explain=2, n_score=2, left=3, max_retries=0)
    Scripted.script = ["null", "ok", "ok"]  # latent 0's explanation fails; latent 1 is explained and scored
    df = explainer.explain_and_score(cfg, top, meta, contexts, WordTokenizer(), 0, [0, 1], pad_id=0, bos_id=1)
    assert list(df.latent) == [0, 1] and "error" in df.columns
    assert pd.isna(df.explanation[0]) and np.isnan(df.balanced_accuracy[0]) and "no text" in df.error[0]
    assert df.explanation[1] == "fine" and pd.isna(df.error[1]) and df.error.notna().sum() == 1
