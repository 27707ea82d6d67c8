"""A layer above the core, imported without its extra, says which extra to install."""

import subprocess
import sys

import pytest

from saelib.extras import EXTRAS, missing

BLOCK = """
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {blocked!r}:
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Block())
_find_spec = importlib.util.find_spec
def find_spec(name, package=None):
    return None if name.split(".")[0] == {blocked!r} else _find_spec(name, package)
importlib.util.find_spec = find_spec
import {layer}
"""


@pytest.mark.parametrize(
    "layer, blocked, extra", [("saelib.plots", "seaborn", "book"), ("saelib.lm", "transformers", "lm")]
)
def test_layer_without_its_extra_names_the_extra(layer, blocked, extra):
    code = BLOCK.format(blocked=blocked, layer=layer)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{layer} needs the [{extra}] extra ({blocked} not installed)" in proc.stderr, proc.stderr[-2000:]


def test_layers_import_with_their_extras_installed():
    proc = subprocess.run(
        [sys.executable, "-c", "import saelib.plots, saelib.lm"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_knows_installed_and_absent_modules():
    assert missing("book", ("matplotlib",)) == []
    assert missing("lm", ("transformers", "no_such_module_here")) == ["no_such_module_here"]
    assert set(EXTRAS) == {"lm", "book", "saelens"}
    with pytest.raises(ValueError, match="extra="):
        missing("gpu")
