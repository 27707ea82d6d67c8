"""The built book as a reader's browser shows it: each page opened in headless Chromium, then checked.

`render(page, screenshot)` asks Chromium for the page's DOM after its scripts ran (and a screenshot);
`page_problems(page, dom)` lists what a reader would see wrong: a page that did not load, a figure whose image is
missing or empty, an error or traceback in a cell's output, a glued value or glued figure that did not render (a
misspelled glue key renders as nothing, so the glue references in the page's source notebook are counted against
the rendered ones), a raw MyST role or directive left in the text, and internal links to missing pages or anchors.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's headless-capable Chromium (`apt-get install chromium`), or None."""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: every host name fails to resolve
    "--virtual-time-budget=15000",
]

GLUE_ROLE = re.compile(r"\{glue(?::text)?\}`[^`]+`")
GLUE_FIGURE = re.compile(r"^```\{glue:figure\}\s*(\S+)", re.MULTILINE)
RAW_MYST = re.compile(r"\{[a-z][\w:-]*\}`|^```\{|^:::\{", re.MULTILINE)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\b\w+Error: ")


def book_pages(html_root: Path) -> list[Path]:
    """Every HTML page of a built book (Sphinx's own folders left out), sorted."""
    skip = {"_static", "_sources", "_images", "_sphinx_design_static"}
    return sorted(p for p in html_root.rglob("*.html") if not skip & set(p.relative_to(html_root).parts))


def render(page: Path, screenshot: Path | None = None, timeout: float = 120) -> str:
    """The DOM of `page` after Chromium ran its scripts, offline; also saves a full-width screenshot if asked.

    Args:
        page: an HTML file.
        screenshot: where to save a PNG of the page (1280 px wide), or None.
        timeout: seconds per Chromium run.

    Returns:
        The serialised DOM ("" if Chromium printed nothing).
    """
    if CHROMIUM is None:
        raise RuntimeError("chromium not found: apt-get install chromium")
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout
    ).stdout
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [CHROMIUM, *FLAGS, "--window-size=1280,2400", f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            timeout=timeout,
        )
    return dom


class _Dom(HTMLParser):
    """What the checks need from a page: images, links, ids, classes in use, and the text a reader sees."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.outputs: list[set[str]] = []  # class sets of cell outputs (myst-nb: "output stream", "output traceback")
        self.figures: list[dict] = []  # per <figure>: its id and the images inside it
        self.text: list[str] = []
        self._skip = 0
        self._figure_depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        classes = (a.get("class") or "").split()
        self.classes += classes
        if "output" in classes:
            self.outputs.append(set(classes))
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "img" and a.get("src") is not None:
            self.images.append(a["src"])
            if self._figure_depth:
                self.figures[-1]["images"].append(a["src"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "figure":
            self._figure_depth += 1
            self.figures.append({"id": a.get("id"), "images": []})

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "figure":
            self._figure_depth -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def parse(html: str) -> _Dom:
    """The page's images, links, ids, classes and visible text."""
    dom = _Dom()
    dom.feed(html)
    return dom


def source_notebook(page: Path, html_root: Path) -> dict | None:
    """The notebook a page was built from (Sphinx copies it to `_sources/`), or None for a Markdown page."""
    src = html_root / "_sources" / page.relative_to(html_root).with_suffix(".ipynb")
    return json.loads(src.read_text()) if src.is_file() else None


def image_problem(src: str, page: Path) -> str | None:
    """Why an image source would show nothing (missing or empty file, empty data URI), or None."""
    if src.startswith("data:"):
        return None if len(src.split(",", 1)[-1]) > 16 else f"empty inline image {src[:40]!r}"
    if urlsplit(src).scheme in ("http", "https"):
        return f"image from the network {src!r}"
    path = (page.parent / unquote(urlsplit(src).path)).resolve()
    if not path.is_file():
        return f"missing image {src!r}"
    return None if path.stat().st_size > 0 else f"empty image {src!r}"


def link_problem(href: str, page: Path, html_root: Path, own_ids: set[str]) -> str | None:
    """Why an internal link would not resolve (no such page, or no such anchor in it), or None."""
    parts = urlsplit(href)
    if parts.scheme or href.startswith(("mailto:", "javascript:", "//")):
        return None
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"link to a missing page {href!r}"
    if not parts.fragment or target.suffix != ".html":
        return None
    ids = own_ids if target == page else parse(target.read_text()).ids
    return None if unquote(parts.fragment) in ids else f"link to a missing anchor {href!r}"


def page_problems(page: Path, html: str, html_root: Path) -> list[str]:
    """Everything on one rendered page that a reader would see wrong; empty when the page is fine.

    Args:
        page: the page's HTML file in the built book.
        html: its DOM as the browser rendered it (`render`).
        html_root: the built book's `_build/html` folder.

    Returns:
        One message per problem.
    """
    redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', page.read_text()[:2000])
    if redirect:  # Jupyter Book's index.html: only its target has to exist
        target = page.parent / redirect.group(1)
        return [] if target.is_file() else [f"redirect to a missing page {redirect.group(1)!r}"]
    if "</html>" not in html or "<main" not in html:
        return ["the page did not load"]
    dom = parse(html)
    text = "".join(dom.text)
    problems = [p for src in dom.images if (p := image_problem(src, page))]
    problems += [f"figure {f['id']!r} has no image" for f in dom.figures if not f["images"]]
    problems += [
        f"link: {p}" for href in dict.fromkeys(dom.links) if (p := link_problem(href, page, html_root, dom.ids))
    ]
    if any({"traceback", "error", "stderr"} & classes for classes in dom.outputs) or TRACEBACK.search(text):
        problems.append("a cell shows an error or a traceback")
    if "problematic" in dom.classes or "system-message" in dom.classes:
        problems.append("Sphinx left an unresolved reference or a system message on the page")
    problems += [f"raw MyST markup in the text: {m.group(0)!r}" for m in RAW_MYST.finditer(text)]
    nb = source_notebook(page, html_root)
    if nb is not None:
        markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        expected, shown = len(GLUE_ROLE.findall(markdown)), dom.classes.count("pasted-text")
        if shown < expected:
            problems.append(f"{expected - shown} of {expected} glued values are not on the page")
        figure_ids = {f["id"] for f in dom.figures if f["images"]}
        for key in GLUE_FIGURE.findall(markdown):
            name = re.search(r"```\{glue:figure\}\s*" + re.escape(key) + r"\s*\n:name:\s*(\S+)", markdown)
            if name and name.group(1) not in figure_ids:
                problems.append(f"glued figure {key!r} ({name.group(1)}) is not on the page")
    return problems
