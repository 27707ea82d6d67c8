"""Sphinx extension: the library's defaults as MyST substitutions, so that book/methods.md states no number by hand.

`{{ StabilityConfig.threshold }}` in a page renders `saelib.config.StabilityConfig`'s default threshold, and
`{{ stability.CPU_BLOCK }}` the module constant; a changed default changes the page at the next build.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def readable(value: Any) -> Any:
    """Integers of 100,000 and more with thousands separators (`1000000` -> `"1,000,000"`); other values as they are."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) and value >= 100_000 else value


def config_defaults(cls: type) -> dict[str, Any]:
    """`{field: default}` of a dataclass's fields that have a plain default, as a page shows them (`readable`).

    Args:
        cls: a dataclass type.

    Returns:
        The defaults by field name.
    """
    return {f.name: readable(f.default) for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def substitutions() -> dict[str, Any]:
    """The values methods.md may use: each config's defaults, and the stability module's constants."""
    from saelib import config, stability, train
    from saelib.chapters import grid

    values: dict[str, Any] = {
        name: config_defaults(getattr(config, name))
        for name in ("SAEConfig", "TrainConfig", "StabilityConfig", "SyntheticConfig")
    }
    values["stability"] = {"CPU_BLOCK": stability.CPU_BLOCK, "NULL_SEED_OFFSET": readable(stability.NULL_SEED_OFFSET)}
    values["train"] = {"CPU_STACK_MIB": train.CPU_STACK_BYTES // 2**20}
    values["grid"] = grid_values(grid.study("default", "cpu"))
    return values


def grid_values(g) -> dict[str, Any]:
    """The numbers of a `saelib.chapters.grid.GridStudy` that methods.md quotes (the default scale's)."""
    layer, variant, d_sae = g.reference
    joined = ", ".join
    return {
        "layers": joined(str(a.layer) for a in g.activations),
        "sizes": joined(str(d) for d in g.sizes),
        "k": g.k,
        "n_seeds": g.n_seeds,
        "lr": g.train.lr,
        "batch_size": g.train.batch_size,
        "train_tokens": readable(g.train.n_tokens),
        "collected": joined(f"{readable(a.n_train_tokens)} at block {a.layer}" for a in g.activations),
        "reference": f"layer {layer}, {variant}, {d_sae} latents",
        "reference_seeds": g.reference_seeds,
        "n_comparisons": g.reference_seeds - 1,
        "budgets": joined(str(readable(b)) for b in g.budgets),
        "ref_tokens": readable(max(g.budgets)),
        "n_ce_contexts": g.n_ce_contexts,
        "thresholds": joined(str(t) for t in g.thresholds),
    }


def add_substitutions(app, config) -> None:
    """config-inited: merge the library's values into `myst_substitutions` (values set in _config.yml win)."""
    config.myst_substitutions = {**substitutions(), **(config.myst_substitutions or {})}


def setup(app):
    app.connect("config-inited", add_substitutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
