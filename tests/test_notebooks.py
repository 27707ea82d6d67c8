"""Every notebook executes with papermill at SCALE="smoke", the book builds from them with warnings as errors, and
every page of it passes the reader's-browser check (tests/book_check.py)."""

import ast
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import book_check
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
    intro = (html.parent / "intro.html").read_text()  # the claims overview, gathered from every executed chapter
    assert "no claims table found" not in intro
    for path in NOTEBOOKS:
        assert f"executed/{path.stem}.html#verdicts-{path.stem.replace('_', '-')}" in intro, path.stem


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
    formula, no script comes from a CDN, and the stability distribution (the glued figure `fig-stability-distribution`)
    is on the page."""
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
    assert "Share of all alive latents" in text, "the distribution figure's caption is missing"
    # The image between its section's heading and its caption, and the file it points to.
    section = dom[dom.index("Is per-feature stability bimodal?") : dom.index("Share of all alive latents")]
    figures = re.findall(r'<img[^>]+src="([^"]+\.png)"', section)
    assert figures, "the stability distribution figure is missing from chapter 1"
    assert all((page.parent / src).is_file() for src in figures), "its image file is missing"


# ----- every page as a reader's browser shows it (tests/book_check.py), and proof that the check can fail

needs_chromium = pytest.mark.skipif(book_check.CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
SCREENSHOTS = ROOT / "_build" / "screenshots"


@pytest.mark.slow
@needs_chromium
def test_every_page_of_the_book_as_a_reader_sees_it(smoke_book):
    """Each page loads in headless Chromium (offline), every figure's image is there and non-empty, no cell shows
    an error, every glued value and figure rendered, no raw MyST is left, every internal link resolves; a screenshot
    of each page goes to _build/screenshots/."""
    result, html = smoke_book
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    root = html.parent.parent
    pages = book_check.book_pages(root)
    chapters = [root / "book" / "executed" / f"{p.stem}.html" for p in NOTEBOOKS]
    assert set(chapters) <= set(pages) and root / "book" / "methods.html" in pages
    problems = {}
    for page in pages:
        rel = page.relative_to(root)
        dom = book_check.render(page, SCREENSHOTS / rel.with_suffix(".png"))
        if found := book_check.page_problems(page, dom, root):
            problems[str(rel)] = found
        if page in chapters:
            assert book_check.parse(dom).images, f"{rel} shows no image"
    assert not problems, problems
    assert all((SCREENSHOTS / p.relative_to(root).with_suffix(".png")).stat().st_size > 0 for p in pages)


def _mutated_copy(root: Path, tmp: Path, name: str, edit) -> tuple[Path, Path]:
    """A copy of the built book where `edit(page_path, html_root)` changed chapter 2's page; its root and page."""
    copy = tmp / name
    shutil.copytree(root, copy)
    page = copy / "book" / "executed" / f"{NOTEBOOKS[1].stem}.html"
    edit(page, copy)
    return copy, page


@pytest.mark.slow
@needs_chromium
def test_reader_check_fails_on_a_removed_figure_a_lost_glue_value_or_raw_markup(smoke_book, tmp_path):
    result, html = smoke_book
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    root = html.parent.parent
    page = root / "book" / "executed" / f"{NOTEBOOKS[1].stem}.html"
    assert book_check.page_problems(page, book_check.render(page), root) == []

    def delete_image(page, copy):
        src = book_check.parse(page.read_text()).figures[0]["images"][0]
        (page.parent / src).unlink()

    def drop_figure(page, copy):
        text = page.read_text()
        start = text.index("<figure")
        page.write_text(text[:start] + text[text.index("</figure>", start) + len("</figure>") :])

    def lose_glue_value(page, copy):  # what a misspelled {glue:text} key renders: nothing
        page.write_text(re.sub(r'<span class="pasted-text">[^<]*</span>', "", page.read_text(), count=1))

    def raw_role(page, copy):
        page.write_text(page.read_text().replace("<p>", "<p>{numref}`fig-nowhere` ", 1))

    def error_cell(page, copy):  # how myst-nb renders a cell that raised
        out = '<div class="output traceback highlight-ipythontb"><pre>Traceback (most recent call last)</pre></div>'
        page.write_text(page.read_text().replace("<p>", out + "<p>", 1))

    def broken_link(page, copy):
        (copy / "book" / "methods.html").unlink()

    expected = {
        error_cell: "error or a traceback",
        broken_link: "link to a missing page",
        delete_image: "missing image",
        drop_figure: "is not on the page",
        lose_glue_value: "glued values are not on the page",
        raw_role: "raw MyST markup",
    }
    for edit, message in expected.items():
        copy, mutated = _mutated_copy(root, tmp_path, edit.__name__, edit)
        found = book_check.page_problems(mutated, book_check.render(mutated), copy)
        assert any(message in p for p in found), (edit.__name__, found)


TINY_NOTEBOOK = """
# %% [markdown]
# # Tiny
#
# The answer is {glue:text}`answer`; see {numref}`fig-tiny`.

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
from myst_nb import glue

glue("answer", 42, display=False)
plt.plot([1, 2, 3])
glue("fig_tiny", plt.gcf(), display=False)
plt.close()

# %% [markdown]
# ```{glue:figure} fig_tiny
# :name: fig-tiny
#
# A line.
# ```
"""


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("misspell", [None, "answer", "fig_tiny"])
def test_reader_check_sees_a_misspelled_glue_key_in_a_real_build(tmp_path, misspell):
    """A one-page book built for real (papermill, then jupyter-book without -W): with a glue key misspelled in the
    text, the number or the figure is silently missing from the page, and the check says so; spelled right, no
    problem."""
    source = TINY_NOTEBOOK
    if misspell:
        source = source.replace(f"`{misspell}`", f"`{misspell}x`").replace(f"}} {misspell}\n", f"}} {misspell}x\n")
    nb = jupytext.reads(source, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, tmp_path / "src.ipynb")
    book = tmp_path / "book"
    book.mkdir()
    papermill.execute_notebook(
        str(tmp_path / "src.ipynb"), str(book / "page.ipynb"), kernel_name="python3", progress_bar=False
    )
    (book / "_config.yml").write_text(
        'title: tiny\nexecute:\n  execute_notebooks: "off"\nsphinx:\n  config:\n    numfig: true\n'
    )
    (book / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    build = subprocess.run([str(BIN / "jupyter-book"), "build", str(book)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:]
    root = book / "_build" / "html"
    page = root / "page.html"
    found = book_check.page_problems(page, book_check.render(page), root)
    if misspell is None:
        assert found == []
    else:
        assert found and ("glued" in found[0]), found
