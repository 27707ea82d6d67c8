"""book/run_notebooks.py: what `make book` runs; chapter headers, streamed progress, and the timing table."""

import importlib.util
import json

import pytest

from saelib.paths import repo_root

spec = importlib.util.spec_from_file_location("run_notebooks", repo_root() / "book" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_notebooks)

NOTEBOOK = """# %% [markdown]
# # Tiny

# %% tags=["parameters"]
SCALE = "default"
DEVICE = "auto"

# %%
import logging, sys
from tqdm.auto import tqdm
logging.getLogger("saelib.cache").info("building step-%s", SCALE)
for _ in tqdm(range(3), desc="tiny bar"):
    pass
assert SCALE != "broken"
"""


def test_format_seconds_known_answers():
    assert run_notebooks.format_seconds(12.34) == "12.3s"
    assert run_notebooks.format_seconds(75.2) == "1m15s"
    assert run_notebooks.format_seconds(3725) == "1h02m05s"


def test_timing_table_lists_every_chapter_and_the_total():
    table = run_notebooks.timing_table([("01_a", "ok", 30.0), ("02_b", "FAILED", 90.0)])
    lines = table.splitlines()
    assert lines[0].split() == ["chapter", "status", "wall", "time"]
    assert lines[2].split() == ["01_a", "ok", "30.0s"] and lines[3].split() == ["02_b", "FAILED", "1m30s"]
    assert lines[-1].split() == ["total", "2m00s"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["smoke", "broken"])
def test_runner_streams_progress_and_ends_with_a_table(tmp_path, capsys, scale):
    nb = tmp_path / "01_tiny.py"
    nb.write_text(NOTEBOOK)
    args = [str(nb), "--scale", scale, "--build", str(tmp_path / "build"), "--executed", str(tmp_path / "executed")]
    status = run_notebooks.main(args)
    out, err = capsys.readouterr()
    assert "=== chapter 1/1: 01_tiny (SCALE=" in err
    table = (out + err)[(out + err).index("chapter  ") :]
    if scale == "broken":
        assert status == 1 and "01_tiny  FAILED" in table and "01_tiny failed" in err
        return
    assert status == 0
    assert f"building step-{scale}" in err, "the library's log reaches the terminal"
    assert "tiny bar: 100%" in err, "tqdm bars reach the terminal"
    assert "01_tiny  ok" in table and "total" in table
    assert (tmp_path / "executed" / "01_tiny.ipynb").is_file()
    assert set(json.loads((tmp_path / "build" / f"timings-{scale}.json").read_text())) == {"01_tiny"}


def test_parameters_are_json_where_they_parse():
    got = run_notebooks.parse_parameters([["SAE_PATHS", '["runs/seed*/"]'], ["N", "3"], ["NAME", "runs/a"]])
    assert got == {"SAE_PATHS": ["runs/seed*/"], "N": 3, "NAME": "runs/a"}
    assert run_notebooks.parse_parameters(None) == {}
