"""Every notebook executes with papermill at SCALE="smoke", and the book builds from them with warnings as errors."""

import ast
import shutil
import subprocess
import sys
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


@pytest.mark.slow
def test_notebooks_execute_at_smoke_scale_and_book_builds(tmp_path):
    book = tmp_path / "book_src"
    (book / "book" / "executed").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    for f in (ROOT / "book").glob("*.*"):
        shutil.copy(f, book / "book" / f.name)
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
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = book / "_build" / "html" / "book" / "executed"
    assert any(html.glob("*.html"))
    page = (html / f"{NOTEBOOKS[0].stem}.html").read_text()
    assert "data:image/png" in page or ".png" in page, "figures missing from the rendered chapter"
