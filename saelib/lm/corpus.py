"""Real English text that installs from a package registry, cut into fixed-length token contexts.

The default corpus (`"austen+wordnet"`, about 3.1M Gemma 3 tokens) joins two Debian packages, so that it installs
offline-reproducibly by a pinned name (`data/README.md` has provenance and licenses):

- `austen`: Jane Austen's six novels (public domain) from `r-cran-janeaustenr` (an R data package; we read its
  lazy-load database with the `rdata` package, no R needed at run time); narrative English, about 0.89M tokens.
- `wordnet`: every gloss of WordNet 3.0 from `wordnet-base` ("lemma: definition; "example sentence""), everyday
  vocabulary of all parts of speech, about 2.2M tokens.

`hf:NAME[:CONFIG][@N]` streams the `text` field of the first N documents of a hub dataset (needs the network and
the `datasets` package; the paper scale reads FineWeb this way), `text:PATH` reads a plain-text file or a folder of
`*.txt` files instead (paragraphs split at blank lines), and
`fixture` is the small committed sample under `data/fixtures/` that the tests and the smoke scale use.
Contexts are `context_len` tokens with BOS first, cut from each document's token stream; a document's tail is
padded when it holds at least `min_tail` tokens and dropped otherwise; exact duplicate contexts are dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from saelib.paths import data_dir

DEFAULT_CORPUS = "austen+wordnet"
"""The default corpus: both Debian-packaged sources below."""

FIXTURE_CORPUS = "fixture"
"""The committed sample text (`data/fixtures/corpus_sample.txt`), for tests and the smoke scale."""

DEB_ROOT_ENV = "SAELIB_DEB_ROOT"
"""Prefix under which the Debian packages' files are looked up (default `/`); set it to a folder where the `.deb`
files were unpacked with `dpkg-deb -x` to use them without installing them."""

AUSTEN_DIR = "usr/lib/R/site-library/janeaustenr/data"
WORDNET_DIR = "usr/share/wordnet"

INSTALL_HINT = (
    "install it with `apt-get install --no-install-recommends r-cran-janeaustenr=1.0.0-1 wordnet-base=1:3.0-37`, "
    f"or unpack those .deb files with `dpkg-deb -x` into a folder and point ${DEB_ROOT_ENV} at it"
)


class Document(NamedTuple):
    """One source document: a novel, one WordNet part of speech, or one text file."""

    name: str
    text: str


def _deb_path(rel: str) -> Path:
    return Path(os.environ.get(DEB_ROOT_ENV) or "/") / rel


def _clean(text: str) -> str:
    """Normalise line ends and whitespace; keep paragraph breaks (blank lines) and nothing else."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def read_austen() -> list[Document]:
    """Jane Austen's six novels from the `janeaustenr` R package's lazy-load database (one document per novel)."""
    folder = _deb_path(AUSTEN_DIR)
    rdx_path, rdb_path = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not rdx_path.is_file() or not rdb_path.is_file():
        raise FileNotFoundError(f"corpus source 'austen' not found: no {rdx_path}; {INSTALL_HINT}")
    import warnings

    import rdata

    def unserialize(raw: bytes):
        with warnings.catch_warnings():  # rdata warns that a bare serialization stream has no file header
            warnings.simplefilter("ignore")
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    # An R lazy-load database: the .rdx index (a gzipped serialized list) maps each object to (offset, length)
    # in the .rdb file, where each object is a 4-byte big-endian length followed by a zlib stream.
    index = unserialize(gzip.decompress(rdx_path.read_bytes()))
    rdb = rdb_path.read_bytes()
    docs = []
    for name, (offset, length) in sorted(index["variables"].items(), key=lambda kv: int(kv[1][0])):
        chunk = rdb[int(offset) : int(offset) + int(length)]
        lines = unserialize(zlib.decompress(chunk[4:]))
        docs.append(Document(f"austen/{name}", _clean("\n".join(str(x) for x in lines))))
    return docs


def read_wordnet() -> list[Document]:
    """All WordNet 3.0 glosses, `lemma: gloss` one per line, one document per part of speech."""
    folder = _deb_path(WORDNET_DIR)
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{pos}"
        if not path.is_file():
            raise FileNotFoundError(f"corpus source 'wordnet' not found: no {path}; {INSTALL_HINT}")
        lines = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the license header
                    continue
                head, sep, gloss = line.partition(" | ")
                fields = head.split()
                if not sep or len(fields) < 5:
                    continue
                lemma = re.sub(r"\(.*\)$", "", fields[4]).replace("_", " ")
                lines.append(f"{lemma}: {gloss.strip()}")
        # Single newlines keep glosses apart without making each one a paragraph of its own.
        docs.append(Document(f"wordnet/{pos}", "\n".join(lines)))
    return docs


def read_text(path: str | Path) -> list[Document]:
    """A plain UTF-8 text file, or every `*.txt` file under a folder (one document per file)."""
    path = Path(path).expanduser()
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise FileNotFoundError(f"corpus text not found: {path} (expected a .txt file or a folder of .txt files)")
    return [Document(f"text/{f.name}", _clean(f.read_text(encoding="utf-8"))) for f in files]


def read_hub(spec: str) -> list[Document]:
    """The first N documents (`text` field) of a hub dataset, from `NAME[:CONFIG][@N]` (default N: 100,000),
    streamed with the `datasets` package (split `train`)."""
    name, _, count = spec.partition("@")
    name, _, config = name.partition(":")
    try:
        n_docs = int(count) if count else 100_000
    except ValueError:
        raise ValueError(f"corpus source hf:{spec!r}: the document count after @ must be an integer") from None
    try:
        import datasets
    except ImportError:
        raise ImportError(f"corpus source hf:{spec} needs the datasets package: pip install datasets") from None
    stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
    docs = []
    for i, row in enumerate(stream):
        if i == n_docs:
            break
        docs.append(Document(f"hf/{name}/{i}", _clean(row["text"])))
    return docs


def fixture_path() -> Path:
    """The committed sample text used by the tests and the smoke scale."""
    return data_dir() / "fixtures" / "corpus_sample.txt"


def load_documents(corpus: str) -> list[Document]:
    """Documents of a corpus spec: sources joined by `+` from `austen`, `wordnet`, `fixture`, `text:PATH`.

    Raises:
        FileNotFoundError: a source is not installed (the message says how to install it).
        ValueError: an unknown source name, or a corpus with no text at all.
    """
    if not corpus or not corpus.strip():
        raise ValueError("corpus is empty; use e.g. 'austen+wordnet', 'fixture' or 'text:/path/to/file.txt'")
    docs: list[Document] = []
    for source in corpus.split("+"):
        source = source.strip()
        if source == "austen":
            docs += read_austen()
        elif source == "wordnet":
            docs += read_wordnet()
        elif source == FIXTURE_CORPUS:
            docs += read_text(fixture_path())
        elif source.startswith("text:"):
            docs += read_text(source[len("text:") :])
        elif source.startswith("hf:"):
            docs += read_hub(source[len("hf:") :])
        else:
            raise ValueError(
                f"corpus source {source!r} is unknown; use austen, wordnet, fixture, text:PATH or hf:NAME[:CONFIG][@N]"
            )
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ValueError(f"corpus {corpus!r} holds no text")
    return docs


def source_files(corpus: str) -> list[Path]:
    """The files a corpus spec reads (for a cheap fingerprint of the corpus without parsing it)."""
    files: list[Path] = []
    for source in corpus.split("+"):
        source = source.strip()
        if source == "austen":
            files += [_deb_path(AUSTEN_DIR) / n for n in ("Rdata.rdx", "Rdata.rdb")]
        elif source == "wordnet":
            files += [_deb_path(WORDNET_DIR) / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
        elif source == FIXTURE_CORPUS:
            files.append(fixture_path())
        elif source.startswith("text:"):
            path = Path(source[len("text:") :]).expanduser()
            files += sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    return files


def corpus_fingerprint(corpus: str) -> str:
    """sha256 over the names, sizes and modification times of the corpus's files ("" if one is missing)."""
    h = hashlib.sha256()
    h.update("+".join(src.strip() for src in corpus.split("+") if src.strip().startswith("hf:")).encode())
    for f in source_files(corpus):
        try:
            st = f.stat()
        except OSError:
            return ""
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def bos_pad_ids(tokenizer) -> tuple[int, int]:
    """The BOS id (else EOS, as GPT-2 and Pythia use `<|endoftext|>` for both) and the padding id (else BOS)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start contexts with")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    return int(bos), int(pad)


def tokenize_contexts(docs: Sequence[Document], tokenizer, context_len: int = 128, min_tail: int = 32) -> np.ndarray:
    """Cut documents into contexts of `context_len` tokens, BOS first, duplicates dropped.

    Args:
        docs: documents from `load_documents`.
        tokenizer: a Hugging Face tokenizer (BOS and padding ids from `bos_pad_ids`).
        context_len: tokens per context, BOS included.
        min_tail: a document's last piece is kept (padded) when it has at least this many tokens.

    Returns:
        `(n_contexts, context_len)` int32 token ids, in document order; padding (if any) at the end of a row.
    """
    if context_len < 2:
        raise ValueError(f"context_len={context_len} must be >= 2 (BOS plus at least one token)")
    bos, pad = bos_pad_ids(tokenizer)
    body = context_len - 1
    rows: list[np.ndarray] = []
    seen: set[bytes] = set()
    for doc in docs:
        # Tokenise line by line (fast tokenizers are quicker on many short strings than on one long one); line
        # ends stay in the text, so the stream differs from tokenising the whole document only at line ends.
        pieces = doc.text.splitlines(keepends=True)
        ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
        stream = np.fromiter((t for seq in ids for t in seq), dtype=np.int64)
        for start in range(0, len(stream), body):
            piece = stream[start : start + body]
            if len(piece) < min(body, min_tail):
                continue
            row = np.full(context_len, pad, dtype=np.int32)
            row[0] = bos
            row[1 : 1 + len(piece)] = piece
            key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            if key in seen:  # exact duplicate contexts would over-weight repeated boilerplate
                continue
            seen.add(key)
            rows.append(row)
    if not rows:
        raise ValueError(f"the corpus gave no context of {context_len} tokens (min_tail={min_tail})")
    return np.stack(rows)


class ContextSplit(NamedTuple):
    """Token contexts split into training and held-out evaluation sets."""

    train: np.ndarray
    """`(n_train, context_len)` int32, shuffled."""
    eval: np.ndarray
    """`(n_eval, context_len)` int32, shuffled."""


def split_contexts(contexts: np.ndarray, n_eval: int, seed: int = 0) -> ContextSplit:
    """Shuffle contexts with `seed` and hold out the first `n_eval` of them for evaluation."""
    if not 0 < n_eval < len(contexts):
        raise ValueError(f"n_eval_contexts={n_eval} must lie in [1, {len(contexts) - 1}] for {len(contexts)} contexts")
    order = np.random.default_rng(seed).permutation(len(contexts))
    return ContextSplit(train=contexts[order[n_eval:]], eval=contexts[order[:n_eval]])
