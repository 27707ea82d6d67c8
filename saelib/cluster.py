"""Chapter 1's grid on a Ray cluster, and a grid point's seeds split into several stacks (several GPUs).

Without Ray, `saelib.chapters.grid.run_grid` trains and scores the grid points one after another in one process.
`run_grid_ray` makes each unit of work a Ray task that asks for the resources it needs:

- `grid_collect`: the activation store of one layer (`activations/`);
- `grid_train`: one grid point's stack of seeds (`saes/`), after its layer's collection; with `seeds_per_task`,
  several `grid_train_part` tasks (one GPU each) whose stacks `grid_seal` concatenates into the same artifact;
- `grid_score`: the point's scores and split (`grid/`), after its training.

Every task goes through the artifact cache on a filesystem that every worker sees (`$SAELIB_ARTIFACTS`, passed to
the workers by the driver), so a rerun skips what exists, and a killed worker's task is retried by Ray
(`max_retries`) and resumes from its checkpoint: an artifact is sealed by a rename, never left half written.
Ray is an optional extra: `pip install -e ".[cluster]"`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from saelib.cache import artifact_dir, cached_artifact, verify_manifest
from saelib.chapters import grid
from saelib.chapters.grid import GridEntry, GridStudy
from saelib.config import SAEConfig, TrainConfig
from saelib.paths import ARTIFACTS_ENV, artifacts_root, atomic_write_json
from saelib.sae import save_sae
from saelib.train import TrainResult, concat_stacks, split_seeds, train_cache_key, train_saes

log = logging.getLogger(__name__)

MAX_RETRIES = 3
"""Times Ray reruns a task whose worker died (killed, out of memory, node lost)."""


# ---------------------------------------------------------------------------------------------------------------------
# Seeds split into several stacks


def train_split(
    cfg: SAEConfig,
    train: TrainConfig,
    data: Any,
    seeds_per_stack: int,
    *,
    devices: Sequence[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """`train_saes(cfg, train, data)` as several stacks of at most `seeds_per_stack` seeds, trained one after
    another on `devices` in turn (default: `train.device`), then concatenated (`concat_stacks`).

    Seeds never interact (`saelib.train`), so this equals one stack of all seeds up to float rounding; on a cluster,
    `run_grid_ray(seeds_per_task=...)` trains the stacks as parallel tasks instead.
    """
    parts = split_seeds(cfg, seeds_per_stack)
    devs = itertools.cycle(devices or [train.device])
    results = [
        train_saes(part, dataclasses.replace(train, device=dev), data, progress=progress)
        for part, dev in zip(parts, devs)
    ]
    return concat_stacks(cfg, results)


# ---------------------------------------------------------------------------------------------------------------------
# Ray tasks (plain functions; `run_grid_ray` wraps them with `ray.remote` and their resources)


def _use_root(root: str) -> None:
    """Point this worker's artifact cache at the driver's."""
    os.environ[ARTIFACTS_ENV] = root


def grid_collect(study: GridStudy, layer: int, root: str) -> int:
    """Collect (or find) the activation store of `layer`; returns its width `d_in`."""
    _use_root(root)
    return grid.load_store(study, layer, device=study.train.device, progress=False).d_in


def grid_train(study: GridStudy, entry: GridEntry, root: str, _collected: int) -> None:
    """Train (or find) the stack of one grid point as one task."""
    _use_root(root)
    grid.train_entry(study, entry, progress=False)


def _saes_key(study: GridStudy, entry: GridEntry, d_in: int) -> tuple[str, SAEConfig, dict]:
    """Name, config and cache key of a grid point's stack: those `grid.train_entry` uses."""
    cfg = grid.sae_config(study, entry, d_in)
    return grid.sae_name(study, entry), cfg, train_cache_key(cfg, study.train, study.activations_at(entry.layer))


def _parts_dir(study: GridStudy, entry: GridEntry, d_in: int) -> Path:
    name, _, key = _saes_key(study, entry, d_in)
    return artifacts_root() / ".parts" / artifact_dir("saes", name, key).name


def grid_train_part(study: GridStudy, entry: GridEntry, root: str, d_in: int, start: int, n: int) -> TrainResult:
    """Train seeds `start .. start + n - 1` of one grid point (checkpointed beside the cache, so that a retried task
    resumes); returns them on CPU."""
    _use_root(root)
    _, cfg, _ = _saes_key(study, entry, d_in)
    part = dataclasses.replace(cfg, seed=cfg.seed + start, n_seeds=n)
    store = grid.load_store(study, entry.layer, device=study.train.device, progress=False)
    ckpt = _parts_dir(study, entry, d_in) / f"seeds-{start}-{start + n}"
    result = train_saes(part, study.train, store, checkpoint_dir=ckpt, progress=False)
    return TrainResult(result.sae.cpu(), result.history)


def grid_seal(study: GridStudy, entry: GridEntry, root: str, d_in: int, *parts: TrainResult) -> None:
    """Concatenate the parts of a grid point into the artifact `grid.train_entry` reads."""
    _use_root(root)
    name, cfg, key = _saes_key(study, entry, d_in)

    def build(work: Path) -> None:
        result = concat_stacks(cfg, parts)
        save_sae(result.sae, work / "sae")
        atomic_write_json(work / "history.json", result.history)

    cached_artifact("saes", name, key, build, keep=())
    shutil.rmtree(_parts_dir(study, entry, d_in), ignore_errors=True)


def grid_score(study: GridStudy, entry: GridEntry, root: str, _trained: Any) -> None:
    """Score (or find) one grid point."""
    _use_root(root)
    grid.score_entry(study, entry, progress=False)


def _is_trained(study: GridStudy, entry: GridEntry, d_in: int) -> bool:
    name, _, key = _saes_key(study, entry, d_in)
    folder = artifact_dir("saes", name, key)
    return folder.is_dir() and verify_manifest(folder)


def train_memory_bytes(cfg: SAEConfig, train: TrainConfig) -> int:
    """A generous estimate of the host memory one training task needs: weights, gradients and Adam's two moments
    (4 copies of both matrices, float32), plus the dense pre-activations of a batch (3 copies), plus 1 GiB."""
    weights = 4 * 2 * cfg.n_seeds * cfg.d_sae * cfg.d_in * 4
    batch = 3 * cfg.n_seeds * train.batch_size * cfg.d_sae * 4
    return weights + batch + 2**30


def run_grid_ray(
    study: GridStudy,
    *,
    address: str | None = None,
    seeds_per_task: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """`grid.run_grid(study)` with every collection, training and scoring a Ray task, the reference point's budget
    curve and reference SAEs included (`grid.all_points`); returns the grid table.

    Args:
        address: the Ray cluster (`auto`, `ray://head:10001`, ...); None connects to `$RAY_ADDRESS` if set, else
            starts a local one. When Ray is already initialised, that connection is used.
        seeds_per_task: train each grid point's seeds as stacks of at most this many, one task (one GPU) each.
        num_gpus: GPUs per training and scoring task; None: 1 when the cluster has GPUs and the study does not
            train on CPU, else 0.
        num_cpus: CPUs per task (Ray gives each task as many torch threads).
        progress: a bar over the scored grid points.
    """
    import ray  # the optional extra `[cluster]`

    if seeds_per_task is not None and seeds_per_task < 1:
        raise ValueError(f"seeds_per_task={seeds_per_task} must be >= 1")
    if not ray.is_initialized():
        ray.init(address=address)
    if num_gpus is None:
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        num_gpus = 1 if has_gpus and study.train.device != "cpu" else 0
    root = str(artifacts_root())
    opts = {"num_cpus": num_cpus, "max_retries": MAX_RETRIES}
    collect = ray.remote(**opts)(grid_collect)
    d_in = {layer: collect.remote(study, layer, root) for layer in study.layers}
    scored = []
    for point, entry in grid.all_points(study):  # the grid, then the reference point at every budget
        if grid.is_scored(point, entry):
            continue
        gpu = {**opts, "num_gpus": num_gpus}
        width = ray.get(d_in[entry.layer])  # the other layers keep collecting meanwhile
        trained: Any
        if seeds_per_task is None or seeds_per_task >= point.n_seeds:
            memory = train_memory_bytes(grid.sae_config(point, entry, width), point.train)
            trained = ray.remote(**gpu, memory=memory)(grid_train).remote(point, entry, root, d_in[entry.layer])
        else:
            trained = None
            if not _is_trained(point, entry, width):
                part_task = ray.remote(**gpu)(grid_train_part)
                n = point.n_seeds
                parts = [
                    part_task.remote(point, entry, root, width, s, min(seeds_per_task, n - s))
                    for s in range(0, n, seeds_per_task)
                ]
                trained = ray.remote(**opts)(grid_seal).remote(point, entry, root, width, *parts)
        scored.append(ray.remote(**gpu)(grid_score).remote(point, entry, root, trained))
    bar = tqdm(total=len(scored), desc="grid (ray)", disable=not progress)
    pending = scored
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # raises the task's error, if any
        bar.update(len(done))
    bar.close()
    return grid.run_grid(study, progress=False)[0]  # every point is cached now: read, not computed
