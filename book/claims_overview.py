"""Sphinx extension: the intro page's table of the paper's claims, the numbers it reports, ours, and the verdicts.

```{claims-overview}
```

reads every executed chapter (`book/executed/NN_name.ipynb`, written by papermill before the book is built), takes
the claims rows that chapter displayed with `saelib.chapters.common.show_claims` (stored as output metadata), and
renders two tables: each chapter's tally of verdicts, and every row for which the paper reports something, with a
link to the chapter's verdict section (the label `verdicts-NN_name` above it). Nothing in them is typed by hand: a
re-executed chapter changes the intro at the next build. A chapter not executed yet is listed as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

CLAIMS_METADATA = "saelib_claims"  # = saelib.chapters.common.CLAIMS_METADATA (kept literal: no torch import here)
NOT_REPORTED = "not reported"
RELATED_WORK = "related work, not this paper"  # how a claims row marks a number from other papers: left out here
VERDICTS = ("holds", "does not hold", "not measured")


class Chapter(NamedTuple):
    """What the overview needs of one executed chapter."""

    stem: str
    """The notebook's name without extension, e.g. `02_asymmetry`."""
    title: str
    """Its first `# ` heading."""
    scale: str
    """The `SCALE` papermill ran it with (`?` when not recorded)."""
    rows: list[dict[str, str]] | None
    """Its claims rows (None: the notebook shows no claims table, e.g. it failed before the end)."""


def read_chapter(path: Path) -> Chapter:
    """The title, scale and claims rows of one executed notebook (an `.ipynb` in nbformat 4).

    Args:
        path: the executed notebook.

    Returns:
        Its `Chapter`; `rows` is the last claims table it displayed, or None when it displayed none.
    """
    nb = json.loads(path.read_text())
    title = path.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            lines = "".join(cell.get("source", "")).splitlines()
            heads = [line[2:].strip() for line in lines if line.startswith("# ")]
            if heads:
                title = heads[0]
                break
    rows = None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            found = out.get("metadata", {}).get(CLAIMS_METADATA)
            if found is not None:
                rows = found
    scale = nb.get("metadata", {}).get("papermill", {}).get("parameters", {}).get("SCALE", "?")
    return Chapter(path.stem, title, str(scale), rows)


def _cell(text: Any) -> str:
    """Text safe inside a Markdown pipe-table cell."""
    return str(text).replace("\n", " ").replace("|", "\\|")


def _short(stem: str) -> str:
    """`02_asymmetry` -> `chapter 2`; a name without a number as it is."""
    number = stem.split("_", 1)[0]
    return f"chapter {int(number)}" if number.isdigit() else stem


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def tally(rows: list[dict[str, str]]) -> dict[str, int]:
    """How many rows have each verdict (every verdict present, 0 when absent)."""
    return {v: sum(r.get("verdict") == v for r in rows) for v in VERDICTS}


def overview_markdown(chapters: list[Chapter], doc_prefix: str = "executed/") -> str:
    """The overview as MyST Markdown: a sentence, the per-chapter tally and the rows the paper reports a value for.

    Args:
        chapters: the executed chapters in book order.
        doc_prefix: the chapters' document path relative to the page that holds the directive.

    Returns:
        MyST Markdown text (two pipe tables).
    """
    if not chapters:
        return "*No chapter has been executed yet: run `make book` (or `make book SCALE=smoke`).*"
    link = {c.stem: f"{{ref}}`{_short(c.stem)} <verdicts-{c.stem}>`" for c in chapters if c.rows is not None}
    per_chapter, reported = [], []
    for c in chapters:
        if c.rows is None:
            page = f"{{doc}}`{c.title} <{doc_prefix}{c.stem}>`"
            per_chapter.append([page, c.scale, "no claims table found", "", ""])
            continue
        t = tally(c.rows)
        page = f"{{ref}}`{c.title} <verdicts-{c.stem}>`"
        per_chapter.append([page, c.scale, str(t["holds"]), str(t["does not hold"]), str(t["not measured"])])
        reported += [
            [r["claim"], r["paper"], r["ours"], f"**{r['verdict']}**", link[c.stem]]
            for r in c.rows
            if r.get("paper", NOT_REPORTED) != NOT_REPORTED and RELATED_WORK not in r.get("paper", "")
        ]
    totals = [tally(c.rows) for c in chapters if c.rows is not None]
    held, failed = sum(t["holds"] for t in totals), sum(t["does not hold"] for t in totals)
    scales = sorted({c.scale for c in chapters if c.rows is not None})
    lines = [
        f"At the scale the book was built with ({', '.join(scales) or '?'}), {held} of the {held + failed} measured "
        "verdicts hold. Per chapter:",
        "",
        *_table(["Chapter", "scale", "holds", "does not hold", "not measured"], per_chapter),
        "",
        "Every verdict for which the paper states something (its abstract's claims, and numbers a secondary source "
        "reports from its body), beside ours:",
        "",
        *_table(["Claim", "Paper", "Ours", "Verdict", "Where"], reported),
    ]
    return "\n".join(lines)


class ClaimsOverview(SphinxDirective):
    """`{claims-overview}`: the overview of every executed chapter's claims (see the module docstring)."""

    has_content = False
    option_spec = {"executed": str}

    def run(self) -> list[nodes.Node]:
        here = Path(self.env.doc2path(self.env.docname)).parent
        folder = here / self.options.get("executed", "executed")
        paths = sorted(folder.glob("[0-9]*.ipynb"))
        for p in paths:
            self.env.note_dependency(str(p))
        prefix = folder.relative_to(here).as_posix() + "/"
        text = overview_markdown([read_chapter(p) for p in paths], prefix)
        container = nodes.container(classes=["claims-overview"])
        self.state.nested_parse(StringList(text.splitlines(), source=self.env.docname), self.content_offset, container)
        return [container]


def setup(app):
    app.add_directive("claims-overview", ClaimsOverview)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
