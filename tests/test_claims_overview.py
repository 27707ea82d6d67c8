"""book/claims_overview.py: the intro's table, built from the claims rows each executed chapter displays."""

import importlib.util

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from saelib.chapters import common
from saelib.paths import repo_root

spec = importlib.util.spec_from_file_location("claims_overview", repo_root() / "book" / "claims_overview.py")
overview = importlib.util.module_from_spec(spec)
spec.loader.exec_module(overview)

ROWS = [
    common.claim("Stable latents carry more", "EV: stable > unstable", "0.8 vs 0.1", True, "much | little"),
    common.claim("Unstable latents are rare", "median frequency", 0.123456, False),
    common.claim("Explanations", "share tagged", float("nan"), None, "38.9% vs 11.3% (reported, secondary source)"),
    common.claim(
        "Comparable to related work", "within 0.1", 0.64, False, "0.80: related work, not this paper (X 2025)"
    ),
]


def shown_outputs(frame):
    """The display outputs `show_claims` publishes, as nbformat outputs (what papermill writes into a notebook)."""
    InteractiveShell.instance()  # display() publishes rich outputs only inside a shell, as in a kernel
    with capture_output() as captured:
        common.show_claims(frame)
    return [nbformat.v4.new_output("display_data", data=o.data, metadata=o.metadata) for o in captured.outputs]


def executed_notebook(path, title="# Chapter two\n\nText.", outputs=(), scale="default"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(title), nbformat.v4.new_code_cell("x", outputs=list(outputs))]
    nb.metadata["papermill"] = {"parameters": {"SCALE": scale}}
    nbformat.write(nb, path)
    return path


def test_show_claims_attaches_every_row_as_strings():
    outputs = shown_outputs(common.claims_frame(ROWS))
    assert len(outputs) == 1 and "text/html" in outputs[0]["data"]
    rows = outputs[0]["metadata"][common.CLAIMS_METADATA]
    assert common.CLAIMS_METADATA == overview.CLAIMS_METADATA
    assert [r["verdict"] for r in rows] == [
        common.HOLDS,
        common.DOES_NOT_HOLD,
        common.NOT_MEASURED,
        common.DOES_NOT_HOLD,
    ]
    assert rows[1]["ours"] == "0.123" and rows[2]["ours"] == "nan"
    assert set(rows[0]) == set(common.Claim._fields)


def test_a_chapter_is_read_with_its_title_scale_and_rows(tmp_path):
    path = executed_notebook(tmp_path / "02_asymmetry.ipynb", outputs=shown_outputs(common.claims_frame(ROWS)))
    chapter = overview.read_chapter(path)
    assert (chapter.stem, chapter.title, chapter.scale) == ("02_asymmetry", "Chapter two", "default")
    assert [r["claim"] for r in chapter.rows] == [r.claim for r in ROWS]
    assert overview.tally(chapter.rows) == {"holds": 1, "does not hold": 2, "not measured": 1}


def test_the_overview_counts_verdicts_and_lists_only_what_the_paper_states(tmp_path):
    done = overview.read_chapter(
        executed_notebook(tmp_path / "02_asymmetry.ipynb", outputs=shown_outputs(common.claims_frame(ROWS)))
    )
    failed = overview.read_chapter(
        executed_notebook(tmp_path / "03_geometry.ipynb", title="# Chapter three", scale="?")
    )
    assert failed.rows is None
    text = overview.overview_markdown([done, failed])
    assert "1 of the 3 measured verdicts hold" in text
    assert "{ref}`Chapter two <verdicts-02_asymmetry>` | default | 1 | 2 | 1 |" in text
    assert "{doc}`Chapter three <executed/03_geometry>` | ? | no claims table found" in text
    reported = text.split("beside ours:")[1]
    assert "Stable latents carry more" in reported and "much \\| little" in reported  # a pipe kept inside its cell
    assert "Explanations" in reported and "{ref}`chapter 2 <verdicts-02_asymmetry>`" in reported
    assert "Unstable latents are rare" not in reported  # the paper states nothing for it
    assert "Comparable to related work" not in reported  # another paper's number: not this paper's claim


def test_no_executed_chapter_says_how_to_make_them():
    assert "make book" in overview.overview_markdown([])


@pytest.mark.parametrize("name", ["01_stability", "02_asymmetry", "03_geometry", "04_synthetic", "05_pooling"])
def test_every_chapter_shows_its_claims_under_the_label_the_overview_links(name):
    source = (repo_root() / "notebooks" / f"{name}.py").read_text()
    assert f"# (verdicts-{name})=\n# ## Verdict" in source
    assert "common.show_claims(" in source
