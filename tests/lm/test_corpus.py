"""Corpus reading, cleaning, contexts, deduplication and the train/eval split (no model needed)."""

from types import SimpleNamespace

import numpy as np
import pytest

from saelib.lm import corpus


class CharTokenizer:
    """A stand-in tokenizer: one id per character (offset by 3), BOS 1, padding 0."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 1000 + 3 for c in t] for t in texts]}


def test_fixture_corpus_reads_as_clean_paragraphs():
    docs = corpus.load_documents("fixture")
    assert len(docs) == 1 and docs[0].text.startswith("PRIDE AND PREJUDICE")
    assert "\n\n\n" not in docs[0].text and "  " not in docs[0].text
    assert len(docs[0].text) > 20_000


def test_text_source_folder_and_cleaning(tmp_path):
    (tmp_path / "a.txt").write_text("Hello   world.\r\nSecond line.\n\n\n\nNew  paragraph.\n")
    (tmp_path / "b.txt").write_text("Other file.")
    docs = corpus.load_documents(f"text:{tmp_path}")
    assert [d.name for d in docs] == ["text/a.txt", "text/b.txt"]
    assert docs[0].text == "Hello world. Second line.\n\nNew paragraph."


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("", ValueError, "empty"),
        ("   ", ValueError, "empty"),
        ("nosuchsource", ValueError, "unknown"),
        ("text:/no/such/file.txt", FileNotFoundError, "not found"),
    ],
)
def test_bad_corpus_specs(spec, error, words):
    with pytest.raises(error, match=words):
        corpus.load_documents(spec)


def test_empty_corpus_file_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(ValueError, match="holds no text"):
        corpus.load_documents(f"text:{tmp_path / 'empty.txt'}")


def test_missing_debian_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(corpus.DEB_ROOT_ENV, str(tmp_path))
    for source in ("austen", "wordnet"):
        with pytest.raises(FileNotFoundError, match="apt-get install"):
            corpus.load_documents(source)


def test_wordnet_reader_on_a_miniature_database(tmp_path, monkeypatch):
    folder = tmp_path / corpus.WORDNET_DIR
    folder.mkdir(parents=True)
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    line = "00001740 03 n 01 {w} 0 000 | {g}  \n"
    for pos in ("noun", "verb", "adj", "adv"):
        (folder / f"data.{pos}").write_text(header + line.format(w=f"big_{pos}", g=f'a {pos}; "an example"'))
    monkeypatch.setenv(corpus.DEB_ROOT_ENV, str(tmp_path))
    docs = corpus.load_documents("wordnet")
    assert [d.text for d in docs][0] == 'big noun: a noun; "an example"'
    assert len(docs) == 4


@pytest.mark.skipif(not (corpus._deb_path(corpus.AUSTEN_DIR) / "Rdata.rdx").is_file(), reason="r-cran-janeaustenr")
def test_austen_package_reads_six_novels():
    docs = corpus.read_austen()
    assert len(docs) == 6 and sum(len(d.text) for d in docs) > 3_500_000
    names = {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}
    assert {d.name for d in docs} == {f"austen/{n}" for n in names}
    assert docs[0].text.startswith("EMMA")


@pytest.mark.skipif(not (corpus._deb_path(corpus.WORDNET_DIR) / "data.noun").is_file(), reason="wordnet-base")
def test_wordnet_package_reads_all_glosses():
    docs = corpus.read_wordnet()
    assert sum(d.text.count("\n") + 1 for d in docs) == 117_659


def test_contexts_have_bos_first_fixed_length_padding_and_no_duplicates():
    tok = CharTokenizer()
    text = "abcdefghij" * 3  # 30 characters
    docs = [corpus.Document("a", text), corpus.Document("dup", text), corpus.Document("short", "xy")]
    ctx = corpus.tokenize_contexts(docs, tok, context_len=8, min_tail=2)
    assert ctx.dtype == np.int32 and ctx.shape[1] == 8
    assert (ctx[:, 0] == 1).all()
    # 30 tokens in pieces of 7: four full contexts and a tail of 2 (padded); the duplicate document adds nothing,
    # the 2-token document "xy" is kept as one padded context.
    assert len(ctx) == 6
    assert (ctx[4, 3:] == 0).all() and (ctx[4, 1:3] != 0).all()
    assert len({r.tobytes() for r in ctx}) == len(ctx)
    # a tail shorter than min_tail is dropped
    assert len(corpus.tokenize_contexts(docs[:1], tok, context_len=8, min_tail=3)) == 4


def test_tokenizer_without_pad_uses_bos_and_without_bos_uses_eos():
    assert corpus.bos_pad_ids(SimpleNamespace(bos_token_id=None, eos_token_id=7, pad_token_id=None)) == (7, 7)
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        corpus.bos_pad_ids(SimpleNamespace(bos_token_id=None, eos_token_id=None, pad_token_id=None))


def test_split_is_disjoint_deterministic_and_checked():
    ctx = np.arange(100 * 4, dtype=np.int32).reshape(100, 4)
    a, b = corpus.split_contexts(ctx, 10, seed=0), corpus.split_contexts(ctx, 10, seed=0)
    assert len(a.eval) == 10 and len(a.train) == 90
    assert np.array_equal(a.train, b.train)
    assert not {r.tobytes() for r in a.train} & {r.tobytes() for r in a.eval}
    with pytest.raises(ValueError, match="n_eval_contexts"):
        corpus.split_contexts(ctx, 100)


def test_hub_source_streams_the_first_documents(monkeypatch):
    """`hf:NAME[:CONFIG][@N]` (the paper scale's FineWeb): the first N `text` fields of the train split, streamed."""
    import sys
    import types

    from saelib.lm import corpus

    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter({"text": f"document {i}"} for i in range(100))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    docs = corpus.load_documents("hf:HuggingFaceFW/fineweb:sample-10BT@3")
    assert [d.text for d in docs] == ["document 0", "document 1", "document 2"]
    assert calls == [("HuggingFaceFW/fineweb", "sample-10BT", "train", True)]
    assert corpus.corpus_fingerprint("hf:a@3") != corpus.corpus_fingerprint("hf:a@4")
    with pytest.raises(ValueError, match="document count"):
        corpus.load_documents("hf:name@many")
