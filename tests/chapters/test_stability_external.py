"""Chapter 1 on external SAEs (saelib.chapters.stability_external, the notebook parameter SAE_PATHS): the weight-only
analyses agree with the chapter's own functions on the same stack, every key the page glues exists, and notebook 01
executes at smoke scale on SAEs written by a fixture."""

import json
import re

import jupytext
import papermill
import pytest
import torch

from saelib import external
from saelib.chapters import stability as chapter
from saelib.chapters import stability_external as ext
from saelib.config import SAEConfig
from saelib.paths import repo_root
from saelib.sae import SAE, save_sae
from saelib.stability import STABLE, UNSTABLE, feature_stability

NOTEBOOK = repo_root() / "notebooks" / "01_stability.py"
GLUE_ROLE = re.compile(r"\{glue(?::text)?\}`([^`:]+)(?::[^`]*)?`")
GLUE_FIGURE = re.compile(r"^```\{glue:figure\}\s*(\S+)", re.MULTILINE)
N_SHARED = 12
"""Latents every fixture SAE shares exactly (the other 20 of 32 are random)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two saelib stacks of 2 seeds each (4 SAEs, d_in 16, 32 latents) whose first N_SHARED decoder rows are the
    same directions, at different scales: those latents are stable, the random rest (cosines ~0.25 in 16-d) not."""
    root = tmp_path_factory.mktemp("runs")
    base = torch.randn(N_SHARED, 16, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        sae = SAE(SAEConfig(d_in=16, d_sae=32, n_seeds=2, k=4, seed=10 * i))
        with torch.no_grad():
            sae.W_dec[:, :N_SHARED] = base * (1 + i)
        save_sae(sae, root / f"run{i}")
    return root


def page_keys() -> set[str]:
    """Every glue key chapter 1's page uses (values and figures)."""
    markdown = "\n".join(c.source for c in jupytext.read(NOTEBOOK).cells if c.cell_type == "markdown")
    return set(GLUE_ROLE.findall(markdown)) | set(GLUE_FIGURE.findall(markdown))


def test_weight_only_sections_equal_the_chapters_functions_on_the_same_stack(runs):
    study = chapter.study("smoke", "cpu")
    result = ext.run(json.dumps([str(runs / "run*")]), study)  # a JSON string, as papermill -p passes it
    assert list(result.sources.source) == [f"{runs}/run0#seed_0", f"{runs}/run0#seed_1"] + [
        f"{runs}/run1#seed_10",
        f"{runs}/run1#seed_11",
    ]
    ref = feature_stability(external.load_stack([runs / "run0", runs / "run1"]), study.grid.stability)
    torch.testing.assert_close(result.split.stability, ref.stability)
    shared = result.split.label[:, :N_SHARED]
    assert (shared == STABLE).all() and (result.split.label[:, N_SHARED:] == UNSTABLE).float().mean() > 0.8
    assert result.counts.values.sum() == 4 * 32 and result.counts.loc[0, "stable"] >= N_SHARED
    assert result.confusion.values.sum() == 4 * 32
    assert len(result.by_reference_seeds) == 3 and list(result.by_threshold.threshold) == list(study.grid.thresholds)
    s = ext.summary(result)
    assert s["ref_mean_stability"] == pytest.approx(float(ref.stability.mean()))
    assert s["ref_seeds"] == 4 and s["ref_n_comparisons"] == 3 and s["tau"] == study.grid.stability.threshold
    assert s["ref_null_stability"] < s["ref_mean_stability"]
    assert s["ref_explained_variance"] != s["ref_explained_variance"] and s["model"] == ext.NOT_AVAILABLE  # skipped
    figures = {k for k in page_keys() if k.startswith("fig_")}
    assert page_keys() - figures <= set(s), f"page keys missing: {page_keys() - figures - set(s)}"
    verdicts = {c.claim[:30]: c.verdict for c in ext.claims(s)}
    assert verdicts["Trained features reappear acro"] == "holds"


def test_paths_parse_and_fail_plainly(tmp_path):
    assert ext.parse_paths('["a/*", "b"]') == ["a/*", "b"]
    assert ext.parse_paths("runs/seed*") == ["runs/seed*"] and ext.parse_paths(["x", tmp_path]) == ["x", str(tmp_path)]
    with pytest.raises(ValueError, match="SAE_PATHS"):
        ext.parse_paths("[not json")
    with pytest.raises(ValueError, match="SAE_PATHS is empty"):
        ext.parse_paths([])
    with pytest.raises(FileNotFoundError, match="matches no path"):
        ext.run(str(tmp_path / "nothing*"), chapter.study("smoke", "cpu"))


@pytest.mark.slow
def test_notebook_01_executes_on_external_saes_and_glues_every_key(runs, tmp_path):
    nb = jupytext.read(NOTEBOOK)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "01.ipynb", tmp_path / "01_executed.ipynb"
    jupytext.write(nb, src)
    papermill.execute_notebook(
        str(src),
        str(out),
        parameters={"SCALE": "smoke", "DEVICE": "cpu", "SAE_PATHS": [str(runs / "run*")]},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(repo_root()),
    )
    cells = json.loads(out.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    glued = {o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})}
    assert page_keys() <= glued, f"not glued: {page_keys() - glued}"
    notes = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("rendered on external SAEs" in "".join(n) and "run1#seed_11" in "".join(n) for n in notes)
    assert not any(o["output_type"] == "error" for o in outputs)
