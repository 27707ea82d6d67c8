"""Every notebook executes with papermill at SCALE="smoke", and the book builds from them with warnings as errors."""

import ast
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import jupytext
import papermill
import pytest

from saelib.paths import repo_root

ROOT = repo_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
BIN = Path(sys.executable).parent


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_with_one_parameters_cell(path):
    nb = jupytext.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    for node in ast.walk(ast.parse(code[0].source)):
        if isinstance(node, ast.Assign):
            assert isinstance(node.value, ast.Constant), "parameters must be literals"
    for c in code:
        tree = ast.parse(c.source)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{path.name} defines functions or classes; move them into saelib"


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """Every notebook executed at SCALE="smoke", and the book built from them (once per module): the HTML folder of
    the executed chapters, or the failed build's output."""
    tmp_path = tmp_path_factory.mktemp("smoke_book")
    book = tmp_path / "book_src"
    (book / "book" / "executed").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    for f in (ROOT / "book").glob("*.*"):
        shutil.copy(f, book / "book" / f.name)
    with pytest.MonkeyPatch.context() as mp:  # its own empty artifact cache, as every test has (conftest)
        mp.setenv("SAELIB_ARTIFACTS", str(tmp_path / "artifacts"))
        for path in NOTEBOOKS:
            src = tmp_path / f"{path.stem}.ipynb"
            nb = jupytext.read(path)
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            jupytext.write(nb, src)
            papermill.execute_notebook(
                str(src),
                str(book / "book" / "executed" / src.name),
                parameters={"SCALE": "smoke", "DEVICE": "cpu"},
                kernel_name="python3",
                progress_bar=False,
                cwd=str(ROOT),
            )
    result = subprocess.run(
        [str(BIN / "jupyter-book"), "build", str(book), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        cwd=book,
    )
    return result, book / "_build" / "html" / "book" / "executed"


@pytest.mark.slow
def test_notebooks_execute_at_smoke_scale_and_book_builds(smoke_book):
    result, html = smoke_book
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert any(html.glob("*.html"))
    page = (html / f"{NOTEBOOKS[0].stem}.html").read_text()
    assert "data:image/png" in page or ".png" in page, "figures missing from the rendered chapter"


class _PageText(HTMLParser):
    """The text a reader sees (scripts and styles left out)."""

    def __init__(self):
        super().__init__()
        self.text, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium on PATH")
def test_chapter_one_renders_math_and_its_figure_offline(smoke_book):
    """Chapter 1 as a reader sees it in a browser with no network: MathJax, bundled with the book, has typeset every
    formula, no script comes from a CDN, and Figure 1 is on the page."""
    result, html = smoke_book
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    page = html / f"{NOTEBOOKS[0].stem}.html"
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: every host name fails to resolve
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "</html>" in dom, "chromium returned no page"
    assert "_static/mathjax/" in dom, "the page does not load the bundled MathJax"
    assert not re.search(r"https?://[^\s\"'<>]*mathjax", dom, re.IGNORECASE), "the page loads MathJax from the network"
    assert "<mjx-container" in dom, "MathJax typeset nothing"
    parser = _PageText()
    parser.feed(dom)
    text = "".join(parser.text)
    assert "\\(" not in text and "\\)" not in text, "raw inline math left in the page text"
    assert "Share of all alive latents" in text, "Figure 1's caption is missing"
    # Figure 1: the image between its section's heading and its caption, and the file it points to.
    section = dom[dom.index("Is per-feature stability bimodal?") : dom.index("Figure 1.")]
    figures = re.findall(r'<img[^>]+src="([^"]+\.png)"', section)
    assert figures, "Figure 1 is missing from chapter 1"
    assert all((page.parent / src).is_file() for src in figures), "Figure 1's image file is missing"
