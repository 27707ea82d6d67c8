"""Model sources, collection with hooks, the sharded store and its batches; all offline.

The hub path is tested on tiny, randomly initialised models of the hub architectures (GPT-2, GPT-NeoX/Pythia,
Gemma 2) saved to a temporary folder with a tokenizer trained on the fixture text: no download anywhere.
The packaged Gemma 3 270M is converted once into the pytest cache folder and shared by the test modules.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_tiny_model

from saelib.lm import activations as A
from saelib.lm.config import ACTIVATION_SCALES, ActivationConfig

ARCHS = ("gpt2", "gpt_neox", "gemma2")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    folder = make_tiny_model(tmp_path_factory.mktemp(request.param), request.param)
    return A.load_model(str(folder), device="cpu")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2"))


def tiny_cfg(folder, **kw):
    base = dict(
        model=folder,
        layer=1,
        corpus="fixture",
        context_len=32,
        n_train_tokens=600,
        n_eval_contexts=4,
        contexts_per_shard=5,
        batch_contexts=3,
    )
    return ActivationConfig(**(base | kw))


# --- models ---------------------------------------------------------------------------------------------------------


def test_hub_architectures_load_offline_and_hooks_match_hidden_states(tiny):
    assert tiny.n_layers == 3 and tiny.d_model == 32
    ids = torch.randint(3, len(tiny.tokenizer), (2, 16))
    with torch.no_grad():
        hidden = tiny.model(ids, output_hidden_states=True).hidden_states  # embeddings, then each block
    for layer in range(tiny.n_layers - 1):  # the last entry has the final norm applied in some architectures
        torch.testing.assert_close(tiny.activations(ids, layer), hidden[layer + 1])
    assert tiny.activations(ids, 0, "mlp_out").shape == (2, 16, 32)


def test_collection_runs_no_later_block_and_no_head(tiny):
    calls = []
    blocks = tiny._blocks
    handles = [blocks[2].register_forward_hook(lambda *a: calls.append("block2"))]
    head = tiny.model.get_output_embeddings()
    handles.append(head.register_forward_hook(lambda *a: calls.append("head")))
    try:
        tiny.activations(torch.randint(3, 100, (1, 8)), 1)
    finally:
        for h in handles:
            h.remove()
    assert calls == []


def test_layer_out_of_range_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"layer=3 is out of range .*3 blocks: 0\.\.2"):
        tiny.activations(torch.ones(1, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="out of range"):
        A.collect_activations(tiny_cfg("x", layer=7), lm=tiny, progress=False)


def test_hub_name_without_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(A.ModelNotAvailableError) as info:
        A.load_model("EleutherAI/pythia-70m-deduped", device="cpu")
    message = str(info.value)
    assert "\n" not in message and "not available offline" in message and "hf download" in message


@pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")
def test_transformer_lens_backend_on_a_tiny_model(gpt2_folder):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok = A.load_model(gpt2_folder, device="cpu").tokenizer
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, d_head=8, n_ctx=64, d_vocab=len(tok), act_fn="gelu", normalization_type="LN"
    )
    lm = A.LanguageModel("tiny-tl", HookedTransformer(cfg), tok, backend="transformer_lens")
    ids = torch.randint(3, len(tok), (2, 10))
    _, cache = lm.model.run_with_cache(ids)
    torch.testing.assert_close(lm.activations(ids, 0), cache["blocks.0.hook_resid_post"])
    torch.testing.assert_close(lm.activations(ids, 1, "mlp_out"), cache["blocks.1.hook_mlp_out"])
    torch.testing.assert_close(lm.logits(ids, 0, edit=lambda a: a), lm.logits(ids))


# --- collection and the store -----------------------------------------------------------------------------------


def test_shard_round_trip_matches_direct_forward(tiny):
    cfg = tiny_cfg("tiny-" + type(tiny.model).__name__)
    store = A.collect_activations(cfg, lm=tiny, progress=False)
    assert store.d_in == 32 and len(store) == store.n_tokens >= cfg.n_train_tokens
    assert store.n_tokens < cfg.n_train_tokens + cfg.context_len
    contexts, meta = store.contexts(), store.metadata()
    assert (contexts[:, 0] == tiny.bos_id).all()
    assert (meta.position > 0).all()  # BOS never stored
    assert np.array_equal(meta.token_id, contexts[meta.context, meta.position])
    assert not (meta.token_id[meta.position > 0] == tiny.pad_id).all()
    # the first context's rows equal a direct forward pass (float16 storage)
    direct = tiny.activations(torch.from_numpy(contexts[:1].astype(np.int64)), cfg.layer)[0]
    rows = store.load_all()[meta.context == 0]
    valid = A.valid_positions(contexts[:1], tiny.pad_id)[0]
    torch.testing.assert_close(rows, direct[torch.from_numpy(valid)].half().float())
    # a second call is a cache hit
    assert A.collect_activations(cfg, lm=tiny, progress=False).path == store.path
    ev = store.eval
    assert ev.n_tokens > 0 and len(ev.contexts()) == cfg.n_eval_contexts
    assert not {r.tobytes() for r in ev.contexts()} & {r.tobytes() for r in contexts}


def test_batches_are_one_shuffled_pass_deterministic_per_seed(tiny):
    store = A.collect_activations(tiny_cfg("tiny-batches"), lm=tiny, progress=False)
    full = store.load_all()
    a = list(store.batches(64, seed=1, buffer_shards=2))
    b = list(store.batches(64, seed=1, buffer_shards=2))
    c = list(store.batches(64, seed=2, buffer_shards=2))
    assert all(x.dtype == torch.float32 and x.shape[1] == 32 for x in a)
    assert all(len(x) == 64 for x in a[:-1])
    cat = torch.cat(a)
    assert len(cat) == len(full)
    # the same multiset of rows, in a different order
    key = lambda t: t[torch.argsort(t[:, 0] * 1e3 + t[:, 1])]  # noqa: E731
    torch.testing.assert_close(key(cat), key(full))
    assert not torch.equal(cat, full)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(c), cat)
    assert sum(len(x) for x in store.batches(64, seed=0, drop_last=True)) == len(full) // 64 * 64
    assert store.load_all(max_tokens=10).shape == (10, 32)
    # batches larger than a buffer: never an empty batch
    big = list(store.batches(len(full) + 1, seed=0))
    assert len(big) == 1 and len(big[0]) == len(full)


def test_interrupted_collection_resumes_and_never_reads_a_half_shard(gpt2_folder, monkeypatch):
    lm = A.load_model(gpt2_folder, device="cpu")
    cfg = tiny_cfg(gpt2_folder, n_train_tokens=900)
    calls = {"n": 0}
    real = lm.activations

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(lm, "activations", flaky)
    with pytest.raises(KeyboardInterrupt):
        A.collect_activations(cfg, lm=lm, progress=False)
    partial = A.partial_dir(A.collection_dir(cfg))
    done = sorted((partial / "train").glob("shard_*.json"))
    assert len(done) == 2  # 5 contexts per shard, 3 per batch: two shards were whole before call 6
    # a shard file without its completion record (a write cut short) is never trusted
    (partial / "train" / "acts_00002.npy").write_bytes(b"garbage")
    monkeypatch.setattr(lm, "activations", real)
    resumed = A.collect_activations(cfg, lm=lm, progress=False)
    fresh_cfg = replace(cfg, seed=0, batch_contexts=4)  # another hash: a clean run from scratch
    fresh = A.collect_activations(fresh_cfg, lm=lm, progress=False)
    torch.testing.assert_close(resumed.load_all(), fresh.load_all())
    assert not partial.exists()


def test_store_rejects_missing_records_and_wrong_widths(tiny, tmp_path):
    import shutil

    store = A.collect_activations(tiny_cfg("tiny-errors"), lm=tiny, progress=False)
    with pytest.raises(A.ShardError, match="width 32, but the model's width is 640"):
        A.ActivationStore(store.path, expected_d_in=640)
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    (copy / "train" / "shard_00001.json").unlink()
    with pytest.raises(A.ShardError, match="no completion record"):
        A.ActivationStore(copy)
    shutil.rmtree(copy)
    shutil.copytree(store.path, copy)
    np.save(copy / "train" / "acts_00000.npy", np.zeros((3, 16), np.float16))
    with pytest.raises(A.ShardError, match="width 16"):
        A.ActivationStore(copy)
    with pytest.raises(A.ShardError, match="no readable info.json"):
        A.ActivationStore(tmp_path / "nothing")


def test_a_corrupted_sealed_store_is_recollected(tiny):
    cfg = tiny_cfg("tiny-corrupt")
    store = A.collect_activations(cfg, lm=tiny, progress=False)
    before = store.load_all()
    path = store.path / "train" / "acts_00000.npy"
    arr = np.load(path)
    arr[0, 0] += 1
    np.save(path, arr)
    again = A.collect_activations(cfg, lm=tiny, progress=False)
    torch.testing.assert_close(again.load_all(), before)


def test_valid_positions_skip_bos_and_trailing_padding_only():
    ctx = np.array([[5, 7, 0, 8, 0, 0], [5, 1, 2, 3, 4, 6]])
    assert A.valid_positions(ctx, pad_id=0).tolist() == [
        [False, True, True, True, False, False],
        [False, True, True, True, True, True],
    ]


def test_missing_corpus_is_a_clear_error(gpt2_folder, tmp_path):
    lm = A.load_model(gpt2_folder, device="cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        A.collect_activations(tiny_cfg(gpt2_folder, corpus=f"text:{tmp_path}/none.txt"), lm=lm, progress=False)


# --- the packaged Gemma 3 270M ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_gemma_shape_and_hooks(gemma):
    assert (gemma.n_layers, gemma.d_model, gemma.model.config.vocab_size) == (18, 640, 262_144)
    assert gemma.bos_id == 2 and gemma.pad_id == 0
    ids = gemma.tokenizer("It is a truth universally acknowledged", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == gemma.bos_id
    with torch.no_grad():
        hidden = gemma.model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(gemma.activations(ids, 6), hidden[7])


@pytest.mark.slow
def test_packaged_gemma_collects_a_few_contexts(gemma):
    cfg = replace(
        ACTIVATION_SCALES["smoke"], n_train_tokens=300, n_eval_contexts=2, contexts_per_shard=2, batch_contexts=2
    )
    store = A.collect_activations(cfg, lm=gemma, progress=False)
    assert store.d_in == 640 and 300 <= store.n_tokens < 300 + 128
    x = store.load_all()
    assert torch.isfinite(x).all() and x.abs().max() < 65504
    info = json.loads((store.path / "info.json").read_text())
    assert info["layer"] == 6 and info["model"] == "gemma3-270m"
    with pytest.raises(A.ShardError, match="width 640"):
        A.ActivationStore(store.path, expected_d_in=768)


@pytest.mark.parametrize(
    "field, value",
    [
        ("layer", -1),
        ("hook", "attn_out"),
        ("corpus", " "),
        ("context_len", 1),
        ("n_train_tokens", 0),
        ("dtype", "bfloat16"),
        ("backend", "jax"),
        ("model", ""),
    ],
)
def test_activation_config_errors_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=f"ActivationConfig.{field}"):
        ActivationConfig(**{field: value})


def test_named_scales_are_valid_and_the_packaged_model_is_the_offline_default():
    assert set(ACTIVATION_SCALES) == {"smoke", "default", "gpu", "paper"}
    assert ACTIVATION_SCALES["default"].model == A.PACKAGED_MODEL and ACTIVATION_SCALES["smoke"].corpus == "fixture"
    with pytest.raises(ValueError, match="transformers only"):
        A.load_model(A.PACKAGED_MODEL, backend="transformer_lens")
