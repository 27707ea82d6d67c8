"""The core imports without the heavy layers above it, and never imports from them."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import saelib

BLOCKED = ("transformers", "jupyter_book", "papermill", "seaborn", "matplotlib", "myst_nb", "sae_lens")
"""Packages the core must import without (the language-model layer, the book and its figures need them)."""

LAYERS = ("saelib.lm", "saelib.chapters", "saelib.plots")
"""The packages above the core: imports point down (chapters -> lm -> core), never back."""

NOT_CORE = ("cli", "__main__", "cluster")
"""Top-level modules that sit above the core: the command line, and `cluster` (the grid of `saelib.chapters` as Ray
tasks, the optional `[cluster]` extra)."""
"""Top-level modules that are entry points, not core: the command line reaches every layer."""


def core_modules() -> list[str]:
    """Names of the core's top-level modules (`saelib.<name>`, packages and entry points excluded)."""
    names = [m.name for m in pkgutil.iter_modules(saelib.__path__) if not m.ispkg and m.name not in NOT_CORE]
    assert {"config", "sae", "stability", "cache"} <= set(names), names  # the listing itself found the core
    return sorted(names)


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the core must import without it")
        return None
sys.meta_path.insert(0, Block())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker let {{name}} through")
import importlib
import saelib
for name in {modules!r}:
    importlib.import_module("saelib." + name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def test_core_imports_without_lm_book_and_plot_packages():
    code = BLOCKER.format(blocked=BLOCKED, modules=core_modules())
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(saelib.__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_blocker_catches_a_blocked_import():
    """The check above can fail: the same blocker stops a module that imports a blocked package."""
    code = BLOCKER.format(blocked=BLOCKED, modules=[]) + "\nimport seaborn\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "seaborn is blocked" in proc.stderr


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module a source file imports (absolute names; `from saelib import lm` counts as `saelib.lm`)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def upward_imports(source: str) -> list[str]:
    """The imports of `source` that reach a layer above the core."""
    return sorted(m for m in imported_modules(ast.parse(source)) if m.split(".")[:2] in [x.split(".") for x in LAYERS])


def test_core_never_imports_the_layers_above_it():
    folder = Path(saelib.__file__).parent
    bad = {name: upward_imports((folder / f"{name}.py").read_text()) for name in core_modules()}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_upward_import_scan_sees_every_import_form():
    src = (
        "import saelib.lm.store\nfrom saelib.chapters import grid\nfrom saelib import plots\n"
        "def f():\n    from saelib.lm.splice import spliced_ce\n"
    )
    assert upward_imports(src) == [
        "saelib.chapters",
        "saelib.chapters.grid",
        "saelib.lm.splice",
        "saelib.lm.splice.spliced_ce",
        "saelib.lm.store",
        "saelib.plots",
    ]
    assert upward_imports("from saelib import sae, subspace\nimport saelib.metrics\n") == []
