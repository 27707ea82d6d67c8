import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """Every test gets its own empty artifact cache."""
    monkeypatch.setenv("SAELIB_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny random GPT-2 with a tokenizer trained on the fixture text (offline)."""
    from helpers import make_tiny_model

    from saelib.lm import activations as A

    return A.load_model(str(make_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")), device="cpu")


@pytest.fixture(scope="module")
def tiny_contexts(tiny_lm):
    """Five fixture contexts of 20 tokens for `tiny_lm`, the last one padded after 12 tokens."""
    from saelib.lm import corpus

    docs = corpus.load_documents("fixture")
    ctx = corpus.tokenize_contexts(docs, tiny_lm.tokenizer, context_len=20, min_tail=4)[:5].copy()
    ctx[-1, 12:] = tiny_lm.pad_id
    return ctx


@pytest.fixture(scope="session")
def gemma(request, tmp_path_factory):
    """The packaged Gemma 3 270M, converted once into the pytest cache (about a minute the first time) and shared by
    test modules and runs; with the cache plugin off (`-p no:cacheprovider`), into a temporary folder of this run."""
    from saelib.lm import activations as A

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("saelib-artifacts") if cache is not None else tmp_path_factory.mktemp("saelib-artifacts")
    return A.load_model(device="cpu", cache_root=root)
