import json
from typing import NamedTuple

import pandas as pd
import pytest
import torch

from saelib import cache
from saelib.config import SAEConfig


def _build_counter(calls):
    def build(work):
        calls.append(work)
        (work / "a.txt").write_text("hello")
        (work / "sub").mkdir(exist_ok=True)
        (work / "sub" / "b.bin").write_bytes(b"\x00\x01")

    return build


def test_hash_changes_with_any_field_and_is_stable():
    a = SAEConfig(d_in=8, d_sae=16, k=4)
    assert cache.config_hash(a) == cache.config_hash(SAEConfig(d_in=8, d_sae=16, k=4))
    assert cache.config_hash(a) != cache.config_hash(SAEConfig(d_in=8, d_sae=16, k=2))
    assert cache.config_hash({"b": 1, "a": 2}) == cache.config_hash({"a": 2, "b": 1})


def test_builds_once_then_hits(_artifacts_in_tmp):
    calls = []
    p1 = cache.cached_artifact("k", "x", {"v": 1}, _build_counter(calls))
    p2 = cache.cached_artifact("k", "x", {"v": 1}, _build_counter(calls))
    assert p1 == p2 and len(calls) == 1
    assert p1.parent.parent == _artifacts_in_tmp
    assert cache.load_config(p1) == {"v": 1}
    assert cache.verify_manifest(p1)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_artifact_is_rebuilt(damage):
    calls = []
    p = cache.cached_artifact("k", "x", {"v": 1}, _build_counter(calls))
    target = p / "sub" / "b.bin"
    if damage == "truncate":
        target.write_bytes(b"\x00")
    elif damage == "flip":
        target.write_bytes(b"\x00\x02")
    elif damage == "delete":
        target.unlink()
    else:
        (p / cache.MANIFEST).write_text("{not json")
    assert not cache.verify_manifest(p)
    p2 = cache.cached_artifact("k", "x", {"v": 1}, _build_counter(calls))
    assert len(calls) == 2 and cache.verify_manifest(p2) and (p2 / "sub" / "b.bin").read_bytes() == b"\x00\x01"


def test_failed_build_leaves_no_sealed_artifact_and_keeps_partial():
    def boom(work):
        (work / "checkpoint.pt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached_artifact("k", "x", {"v": 2}, boom)
    final = cache.artifact_dir("k", "x", {"v": 2})
    assert not final.exists()
    assert (cache.partial_dir(final) / "checkpoint.pt").read_text() == "half"

    seen = []

    def resume(work):
        seen.append((work / "checkpoint.pt").read_text())
        (work / "out").write_text("done")

    p = cache.cached_artifact("k", "x", {"v": 2}, resume)
    assert seen == ["half"] and cache.verify_manifest(p)


def test_atomic_json_roundtrip(tmp_path):
    cache.atomic_write_json(tmp_path / "x.json", {"cfg": SAEConfig(d_in=2, d_sae=4, k=2)})
    assert json.loads((tmp_path / "x.json").read_text())["cfg"]["d_sae"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_bad_names_rejected():
    with pytest.raises(ValueError, match="name"):
        cache.artifact_dir("k", "../x", {})


class _Result(NamedTuple):
    values: torch.Tensor
    n: int


def test_cached_result_computes_once_and_reads_back():
    calls = []

    def compute():
        calls.append(1)
        return _Result(torch.arange(3.0), 7), pd.DataFrame({"a": [1, 2]})

    a = cache.cached_result("results", "t", {"x": 1}, compute)
    b = cache.cached_result("results", "t", {"x": 1}, compute)
    assert len(calls) == 1  # the second call reads the stored copy
    assert isinstance(b[0], _Result) and torch.equal(b[0].values, a[0].values) and b[0].n == 7
    assert b[1].a.tolist() == [1, 2]
    folder = cache.artifact_dir("results", "t", {"x": 1})
    assert cache.verify_manifest(folder) and (folder / "result.pt").is_file()
    cache.cached_result("results", "t", {"x": 2}, compute)  # another key: computed again
    assert len(calls) == 2


def test_concurrent_builders_of_one_artifact_build_it_once(tmp_path):
    import threading
    import time

    from saelib.cache import cached_artifact

    builds = []

    def build(work):
        builds.append(work)
        time.sleep(0.3)  # long enough for the second caller to arrive while the first is building
        (work / "x.txt").write_text("x")

    out = []
    threads = [
        threading.Thread(target=lambda: out.append(cached_artifact("k", "n", {"a": 1}, build, root=tmp_path)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert len(builds) == 1 and out[0] == out[1] and (out[0] / "x.txt").read_text() == "x"


def test_build_locks_live_outside_the_artifact_folders(tmp_path):
    from saelib.cache import cached_artifact

    folder = cached_artifact("k", "n", {"a": 2}, lambda work: (work / "y.txt").write_text("y"), root=tmp_path)
    assert [p.name for p in (tmp_path / "k").iterdir()] == [folder.name]


def test_cached_result_from_an_older_library_is_recomputed(tmp_path, monkeypatch):
    """A pickled result whose class has since moved (an older saelib wrote it) is rebuilt, not an error."""
    from saelib import cache

    monkeypatch.setenv("SAELIB_ARTIFACTS", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return 42

    assert cache.cached_result("t", "r", {"a": 1}, compute) == 42
    real_load = torch.load
    failures = iter([AttributeError("Can't get attribute 'MaskedSplice' on <module 'saelib.metrics'>")])

    def load_once_broken(*args, **kwargs):
        err = next(failures, None)
        if err is not None:
            raise err
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load_once_broken)
    assert cache.cached_result("t", "r", {"a": 1}, compute) == 42
    assert len(calls) == 2  # recomputed once
