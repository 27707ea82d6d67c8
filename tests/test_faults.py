"""Fault injection: each failure a hostile run can cause (issue 15) is reproduced and its recovery asserted."""

from __future__ import annotations

import errno
import json
import logging

import pytest
import torch

from saelib import cache, train
from saelib.cache import DiskFullError, artifact_dir, cached_artifact, partial_dir, verify_manifest
from saelib.config import SAEConfig, TrainConfig
from saelib.train import TRAIN_VERSION, train_cached, train_key, train_saes

CFG = SAEConfig(d_in=8, d_sae=16, k=2, n_seeds=2)
TRAIN = TrainConfig(n_tokens=1024, batch_size=128, checkpoint_every=2, device="cpu")


@pytest.fixture
def data():
    return torch.randn(512, 8, generator=torch.Generator().manual_seed(0))


def _saes_partial(data) -> tuple:
    key = {"sae": CFG, "train": train_key(TRAIN), "data": "x", "train_version": TRAIN_VERSION}
    final = artifact_dir("saes", "faults", key)
    return final, partial_dir(final)


def _reference(data):
    return train_saes(CFG, TRAIN, data, progress=False).sae


# --- checkpoints and the .partial folder ------------------------------------------------------------------------


def test_corrupt_checkpoint_is_discarded_and_training_starts_over(data, tmp_path, caplog):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a pickle at all")
    with caplog.at_level(logging.WARNING, logger="saelib.train"):
        sae = train_saes(CFG, TRAIN, data, checkpoint_dir=tmp_path, progress=False).sae
    assert "discarding unreadable checkpoint" in caplog.text
    torch.testing.assert_close(sae.W_dec, _reference(data).W_dec, rtol=0, atol=0)


def test_truncated_checkpoint_in_a_partial_does_not_block_the_artifact(data):
    final, work = _saes_partial(data)
    (work / "checkpoint").mkdir(parents=True)
    good = torch.save({"x": torch.zeros(1000)}, work / "checkpoint" / "checkpoint.pt")
    del good
    blob = (work / "checkpoint" / "checkpoint.pt").read_bytes()
    (work / "checkpoint" / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    sae, _ = train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    assert verify_manifest(final) and not work.exists()
    torch.testing.assert_close(sae.W_dec, _reference(data).W_dec, rtol=0, atol=0)


def test_leftover_tmp_files_are_removed_and_the_build_seals(data):
    final, work = _saes_partial(data)
    (work / "checkpoint").mkdir(parents=True)
    (work / "checkpoint" / "checkpoint.pt.tmp12345").write_bytes(b"half a checkpoint")
    train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    assert verify_manifest(final)
    assert not (final / "checkpoint").exists()
    assert not any("tmp" in p.name for p in final.rglob("*"))


def test_stale_files_in_a_partial_are_cleared_before_the_build(data):
    final, work = _saes_partial(data)
    (work / "junk").mkdir(parents=True)
    (work / "junk" / "old.bin").write_bytes(b"x")
    (work / "stray.txt").write_text("left by someone")
    (work / "checkpoint").mkdir()
    (work / "checkpoint" / "notes.txt").write_text("not a checkpoint")
    train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    manifest = json.loads((final / cache.MANIFEST).read_text())
    assert not any(k.startswith(("junk", "stray", "checkpoint")) for k in manifest)
    assert verify_manifest(final)


def test_a_valid_checkpoint_in_a_partial_is_kept_and_resumed(data, monkeypatch):
    final, work = _saes_partial(data)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    real = train._clip_per_seed_

    def flaky(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Stop
        real(params, max_norm)

    monkeypatch.setattr(train, "_clip_per_seed_", flaky)
    with pytest.raises(Stop):
        train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    assert (work / "checkpoint" / "checkpoint.pt").is_file()
    (work / "stray.txt").write_text("junk")
    monkeypatch.setattr(train, "_clip_per_seed_", real)
    sae, _ = train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    assert verify_manifest(final) and not (final / "stray.txt").exists()
    torch.testing.assert_close(sae.W_dec, _reference(data).W_dec, rtol=0, atol=0)


def test_stale_files_in_a_cached_result_partial_are_cleared():
    final = artifact_dir("results", "r", {"a": 1})
    work = partial_dir(final)
    work.mkdir(parents=True)
    (work / "junk.txt").write_text("x")
    assert cache.cached_result("results", "r", {"a": 1}, lambda: 3) == 3
    assert not (final / "junk.txt").exists() and verify_manifest(final)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_no_tmp(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train.torch, "save", _enospc)
    with pytest.raises(DiskFullError) as info:
        train_saes(CFG, TRAIN, data, checkpoint_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "no space left on device" in message and str(tmp_path) in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_torch_short_write_counts_as_disk_full(data, tmp_path, monkeypatch):
    def short_write(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 48")

    monkeypatch.setattr(train.torch, "save", short_write)
    with pytest.raises(DiskFullError, match="no space left on device"):
        train_saes(CFG, TRAIN, data, checkpoint_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_the_final_save_names_the_path(data, monkeypatch):
    final, work = _saes_partial(data)
    monkeypatch.setattr(train, "save_sae", _enospc)
    with pytest.raises(DiskFullError) as info:
        train_cached("faults", CFG, TRAIN, data, data_key="x", progress=False)
    message = str(info.value)
    assert "no space left on device" in message and str(work) in message and "\n" not in message
    assert not final.exists()


def test_disk_full_in_any_build_is_one_line():
    def build(work):
        raise OSError(errno.ENOSPC, "No space left on device", str(work / "big.bin"))

    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*big\.bin"):
        cached_artifact("results", "full", {}, build)


def test_permission_error_replacing_a_corrupt_artifact_names_the_folder(monkeypatch):
    final = artifact_dir("results", "locked", {})
    final.mkdir(parents=True)
    (final / "cfg.json").write_text("{}")  # no manifest: corrupt

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", "cfg.json")

    monkeypatch.setattr(cache.shutil, "rmtree", denied)
    with pytest.raises(PermissionError, match=str(final)):
        cached_artifact("results", "locked", {}, lambda work: None)


# --- the command line ----------------------------------------------------------------------------------------------


def _cli(capsys, argv) -> tuple[int, str]:
    from saelib import cli

    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "nonsense:0:1"])
def test_cli_bad_device_is_one_line_exit_2_and_creates_nothing(capsys, device, tmp_path, monkeypatch):
    root = tmp_path / "cli-artifacts"
    monkeypatch.setenv("SAELIB_ARTIFACTS", str(root))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in ("synthetic", "collect", "grid"):
        code, err = _cli(capsys, [command, "--scale", "smoke", "--device", device])
        assert code == 2 and err.count("\n") == 1 and f"--device {device!r}" in err and "use " in err
        assert not root.exists()


def test_cli_unknown_scale_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    code, err = _cli(capsys, ["grid", "--scale", "huge", "--device", "cpu"])
    assert code == 2 and err.count("\n") == 1 and "--scale" in err and "smoke" in err


def test_cli_missing_corpus_is_one_line_exit_2(capsys, monkeypatch):
    from saelib.lm import activations

    def missing(*a, **k):
        raise FileNotFoundError("corpus source 'austen' not found: no /usr/share/x.rdx;\nsudo apt-get install x")

    monkeypatch.setattr(activations, "collect_activations", missing)
    code, err = _cli(capsys, ["collect", "--scale", "smoke", "--device", "cpu"])
    assert code == 2 and err.count("\n") == 1 and "austen" in err and "apt-get install" in err


def test_cli_runtime_failure_is_one_line_exit_1(capsys, monkeypatch):
    from saelib.chapters import grid

    def full(*a, **k):
        raise cache.disk_full_error("/data/artifacts/saes/x.partial")

    monkeypatch.setattr(grid, "run_grid", full)
    code, err = _cli(capsys, ["grid", "--scale", "smoke", "--device", "cpu"])
    assert code == 1 and err.count("\n") == 1 and "no space left on device" in err and "x.partial" in err


def test_activation_config_names_the_scales():
    from saelib.lm.config import ACTIVATION_SCALES, activation_config

    assert activation_config("smoke") is ACTIVATION_SCALES["smoke"]
    with pytest.raises(ValueError, match="'bogus'.*smoke, default, gpu, paper"):
        activation_config("bogus")


# --- validation gaps ----------------------------------------------------------------------------------------------


def test_integer_activations_are_refused_before_any_cast(tmp_path):
    x = torch.randint(0, 5, (512, 8))
    with pytest.raises(ValueError, match="must be floating point"):
        train_saes(CFG, TRAIN, x, checkpoint_dir=tmp_path, progress=False)
    norm = TrainConfig(n_tokens=1024, batch_size=128, normalize_activations=True, device="cpu")
    with pytest.raises(ValueError, match="must be floating point"):
        train_saes(CFG, norm, x, progress=False)

    class Batches:
        def batches(self, batch_size, *, seed):
            yield from x.split(batch_size)

    with pytest.raises(ValueError, match="must be floating point"):
        train_saes(CFG, TRAIN, Batches(), progress=False)


@pytest.mark.parametrize("name", ["/nonexistent/model", "./no/such/folder", "~/no-such-model-dir", "a/b/c"])
def test_load_model_of_a_missing_local_folder_says_so(name):
    from saelib.lm.activations import load_model

    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_model(name, device="cpu")
    assert "hf download" not in str(info.value) and name in str(info.value)


# --- time-based checkpoints and SIGTERM --------------------------------------------------------------------------


def test_time_based_checkpoints(data, tmp_path, monkeypatch):
    saved = []
    real = train._save_checkpoint
    monkeypatch.setattr(train, "_save_checkpoint", lambda path, state: (saved.append(state["step"]), real(path, state)))
    every_step = TrainConfig(n_tokens=1024, batch_size=128, checkpoint_seconds=1e-9, device="cpu")
    train_saes(CFG, every_step, data, checkpoint_dir=tmp_path, progress=False)
    assert saved == list(range(1, 9))
    saved.clear()
    never = TrainConfig(n_tokens=1024, batch_size=128, checkpoint_seconds=0, device="cpu")
    train_saes(CFG, never, data, checkpoint_dir=tmp_path / "b", progress=False)
    assert saved == []
    assert train_key(every_step) == train_key(never)  # not part of the cache key
    with pytest.raises(ValueError, match="checkpoint_seconds"):
        TrainConfig(n_tokens=1, checkpoint_seconds=-1)


def test_sigterm_writes_a_checkpoint_at_a_step_boundary_and_resumes_bit_identical(data, tmp_path, monkeypatch):
    import os
    import signal

    class Terminated(Exception):
        pass

    def outer_handler(signum, frame):
        raise Terminated

    calls = {"n": 0}
    real = train._clip_per_seed_

    def send_sigterm_mid_step(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # in the middle of step 3: the step still completes
        real(params, max_norm)

    previous = signal.signal(signal.SIGTERM, outer_handler)
    try:
        monkeypatch.setattr(train, "_clip_per_seed_", send_sigterm_mid_step)
        cfg = TrainConfig(n_tokens=1024, batch_size=128, checkpoint_seconds=0, device="cpu")
        with pytest.raises(Terminated):
            train_saes(CFG, cfg, data, checkpoint_dir=tmp_path, progress=False)
        assert signal.getsignal(signal.SIGTERM) is outer_handler  # the caller's handler is back
        assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 3
        monkeypatch.setattr(train, "_clip_per_seed_", real)
        resumed = train_saes(CFG, cfg, data, checkpoint_dir=tmp_path, progress=False).sae
    finally:
        signal.signal(signal.SIGTERM, previous)
    torch.testing.assert_close(resumed.W_dec, _reference(data).W_dec, rtol=0, atol=0)
    torch.testing.assert_close(resumed.W_enc, _reference(data).W_enc, rtol=0, atol=0)


_KILLED_RUN = """
import sys, time, torch
from saelib import train
from saelib.config import SAEConfig, TrainConfig
real = train._clip_per_seed_
def slow(params, max_norm):  # about 20 ms a step, so that the parent can kill it mid-run
    time.sleep(0.02)
    real(params, max_norm)
train._clip_per_seed_ = slow
cfg = SAEConfig(d_in=8, d_sae=16, k=2, n_seeds=2)
tc = TrainConfig(n_tokens=128 * 400, batch_size=128, checkpoint_seconds=0.05, device="cpu")
data = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
train.train_cached("killed", cfg, tc, data, data_key="x", progress=False)
"""


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_a_killed_training_run_resumes_to_identical_artifacts(signame, tmp_path, monkeypatch):
    import hashlib
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = SAEConfig(d_in=8, d_sae=16, k=2, n_seeds=2)
    tc = TrainConfig(n_tokens=128 * 400, batch_size=128, checkpoint_seconds=0.05, device="cpu")
    data = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    key = {"sae": cfg, "train": train_key(tc), "data": "x", "train_version": TRAIN_VERSION}
    killed_root = tmp_path / "killed"
    env = {**os.environ, "SAELIB_ARTIFACTS": str(killed_root)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN], env=env)
    ckpt = partial_dir(artifact_dir("saes", "killed", key, root=killed_root)) / "checkpoint" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more steps and checkpoints
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(getattr(signal, signame))
    assert proc.wait(60) == -getattr(signal, signame)
    assert not artifact_dir("saes", "killed", key, root=killed_root).exists()
    step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step < tc.n_steps

    def digests(root):
        monkeypatch.setenv("SAELIB_ARTIFACTS", str(root))
        train_cached("killed", cfg, tc, data, data_key="x", progress=False)
        folder = artifact_dir("saes", "killed", key, root=root)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digests(killed_root) == digests(tmp_path / "clean")
