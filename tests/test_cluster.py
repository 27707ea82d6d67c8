"""The grid on a local Ray cluster: the same artifacts as the serial run, byte for byte, even when a training task
is killed mid-run and retried; and a grid point's seeds trained as several stacks equal one stack."""

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_model, sparse_data, tiny_grid_study

from saelib import cluster, train
from saelib.chapters import grid
from saelib.config import SAEConfig, TrainConfig
from saelib.paths import ARTIFACTS_ENV
from saelib.train import train_saes


@pytest.mark.parametrize("variant", ["topk", "batchtopk", "relu", "jumprelu"])
def test_seeds_split_into_stacks_equal_one_stack(variant):
    x = sparse_data(n=2048, d=16, f=24)
    cfg = SAEConfig(d_in=16, d_sae=32, variant=variant, k=4, n_seeds=5, seed=3)
    tc = TrainConfig(n_tokens=4096, batch_size=256, lr=3e-3, dead_after_tokens=256, device="cpu")
    one = train_saes(cfg, tc, x, progress=False)
    split = cluster.train_split(cfg, tc, x, seeds_per_stack=2, progress=False)  # stacks of 2, 2 and 1 seeds
    assert [p.seeds for p in cluster.split_seeds(cfg, 2)] == [[3, 4], [5, 6], [7]]
    assert split.sae.cfg == cfg
    # Seeds never interact, so only the batched kernels' rounding can differ between a stack of 5 and of 2. The
    # dense variants' bmm computes each seed's product alike: measured difference 0. TopK's sparse backward
    # (`torch.sparse.mm` over the rows of all seeds at once) sums in an order that depends on the stack's size:
    # measured at most 4.5e-7 after these 16 steps, on weights of order 0.1-1.
    for name, p in one.sae.state_dict().items():
        torch.testing.assert_close(split.sae.state_dict()[name], p, atol=2e-6, rtol=1e-6, equal_nan=True)
    torch.testing.assert_close(torch.tensor(split.history["fvu"]), torch.tensor(one.history["fvu"]))


def test_split_seeds_rejects_an_empty_stack():
    with pytest.raises(ValueError, match="seeds_per_stack"):
        cluster.split_seeds(SAEConfig(d_in=4, d_sae=8, k=2, n_seeds=2), 0)


def test_grid_cli_rejects_a_bad_seeds_per_task(capsys):
    pytest.importorskip("ray")
    from saelib import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["grid", "--scale", "smoke", "--device", "cpu", "--ray", "--seeds-per-task", "0"])
    assert exit_.value.code == cli.EXIT_BAD_INPUT
    assert "seeds_per_task=0 must be >= 1" in capsys.readouterr().err


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2", n_layers=3, d=32))


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def _serial(study, root: Path, monkeypatch):
    """The serial run into `root`, with one torch thread as a Ray task has (`num_cpus=1`), so that the float
    reductions run in the same order."""
    monkeypatch.setenv(ARTIFACTS_ENV, str(root))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = grid.run_grid(study, progress=False)[0]
        for point, entry in grid.all_points(study):  # the reference point's budget curve and reference SAEs too
            grid.score_entry(point, entry, progress=False)
        return table
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_ray_grid_writes_the_serial_artifacts_byte_for_byte(local_ray, folder, tmp_path, monkeypatch):
    study = tiny_grid_study(folder)
    serial = _serial(study, tmp_path / "serial", monkeypatch)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "ray"))
    table = cluster.run_grid_ray(study, progress=False)
    assert table.equals(serial)
    ours, theirs = _files(tmp_path / "ray"), _files(tmp_path / "serial")
    assert ours.keys() == theirs.keys() and any(k.startswith("saes/") for k in ours)
    assert [k for k in ours if ours[k] != theirs[k]] == []
    # A rerun finds everything in the cache: no task trains or scores again.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*") if p.is_file()}
    cluster.run_grid_ray(study, progress=False)
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*") if p.is_file()}


def _kill_training_task(root: Path, killed: list[int], stop: threading.Event) -> None:
    """Once the training task has written a checkpoint, SIGKILL its worker (found by Ray's process title)."""
    import psutil

    while not stop.is_set() and not killed:
        if any(root.glob("saes/*.partial/checkpoint/checkpoint.pt")):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if (proc.info["cmdline"] or [""])[0].startswith("ray::grid_train"):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_training_task_is_retried_and_gives_the_same_artifacts(local_ray, folder, tmp_path, monkeypatch):
    # one grid point, trained long enough (a few seconds) to be killed after its first checkpoints
    study = tiny_grid_study(folder, layers=(2,), sizes=(48,))
    study = replace(study, train=replace(study.train, n_tokens=128 * 1500, checkpoint_every=100))
    serial = _serial(study, tmp_path / "serial", monkeypatch)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "ray"))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_training_task, args=(tmp_path / "ray", killed, stop))
    killer.start()
    try:
        table = cluster.run_grid_ray(study, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "the training task finished before it could be killed"
    assert table.equals(serial)
    ours, theirs = _files(tmp_path / "ray"), _files(tmp_path / "serial")
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert not list((tmp_path / "ray").rglob("*.partial"))


@pytest.mark.slow
def test_ray_seeds_split_across_tasks_match_one_stack(local_ray, folder, tmp_path, monkeypatch):
    study = tiny_grid_study(folder, layers=(2,), sizes=(48,))
    _serial(study, tmp_path / "serial", monkeypatch)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "ray"))
    cluster.run_grid_ray(study, seeds_per_task=2, progress=False)  # stacks of 2 and 1 seeds, sealed as one
    entry = grid.reference_entry(study)
    with monkeypatch.context() as m:  # read from the cache (the key the serial run uses), never trained here
        m.setattr(train, "train_saes", lambda *a, **k: pytest.fail("the split stack is not in the cache"))
        split, _ = grid.train_entry(study, entry, progress=False)
    assert not list((tmp_path / "ray").rglob(".parts/*"))
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "serial"))
    one, _ = grid.train_entry(study, entry, progress=False)
    assert split.cfg == one.cfg
    for name, p in one.state_dict().items():  # TopK's sparse backward: rounding only (see the test above)
        torch.testing.assert_close(split.state_dict()[name], p, atol=2e-6, rtol=1e-6)
