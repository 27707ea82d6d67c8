"""What every chapter module shares: one preset idiom for its study, and one row type for its claims table.

Every chapter module (`saelib.chapters.<name>`) exposes the same four functions, so that its notebook reads
parameters -> `study` -> `run` -> glue `summary` -> figures -> `claims`:

- `study(scale, device, **overrides)`: the chapter's frozen config at a named scale, built by `preset`;
- `run(study)`: all of its computation, cached through `saelib.cache.cached_result` (no notebook builds a key);
- `summary(result)`: a flat `dict[str, float | int | str]` of the numbers its prose glues;
- `claims(summary)`: a list of `Claim` rows (`claims_frame` makes the table the chapter ends with).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import pandas as pd

from saelib.config import check_scale

T = TypeVar("T")

HOLDS, DOES_NOT_HOLD, NOT_MEASURED = "holds", "does not hold", "not measured"
VERDICTS = (HOLDS, DOES_NOT_HOLD, NOT_MEASURED)
"""The only verdicts a claims table uses."""

NOT_REPORTED = "not reported"
"""The `paper` cell of a claim for which the paper gives no number we could read."""


class Claim(NamedTuple):
    """One row of a chapter's claims table."""

    claim: str
    """The statement tested, in the paper's words where it has them."""
    criterion: str
    """What has to be true of our numbers for the statement to hold, with the numbers compared."""
    ours: float | str
    """Our measured value (a number, or a short text such as `"0.41 vs 0.12"`)."""
    paper: str
    """The paper's reported value, marked `(reported, secondary source)` where it is one, or `NOT_REPORTED`."""
    verdict: str
    """One of `VERDICTS`."""


def verdict(holds: bool | None) -> str:
    """`holds` / `does not hold` for a computed comparison, `not measured` for None (or a NaN comparison)."""
    if holds is None or (isinstance(holds, float) and math.isnan(holds)):
        return NOT_MEASURED
    return HOLDS if bool(holds) else DOES_NOT_HOLD


def claim(claim: str, criterion: str, ours: float | str, holds: bool | None, paper: str = NOT_REPORTED) -> Claim:
    """A `Claim` whose verdict is computed from `holds` (None: not measured)."""
    if isinstance(ours, float) and math.isnan(ours):
        holds = None
    return Claim(claim, criterion, ours, paper, verdict(holds))


def claims_frame(rows: Iterable[Claim]) -> pd.DataFrame:
    """The claims table a chapter ends with: one row per `Claim`, columns in `Claim`'s field order."""
    rows = list(rows)
    bad = [r.verdict for r in rows if r.verdict not in VERDICTS]
    if bad:
        raise ValueError(f"verdicts {bad} are not among {VERDICTS}")
    return pd.DataFrame(rows, columns=list(Claim._fields))


def preset(build: Callable[[str, str], T], scale: str, device: str = "auto", **overrides: Any) -> T:
    """A chapter's study at a named scale: `build(scale, device)` with `overrides` applied.

    Args:
        build: the chapter's table of scales, a function of `(scale, device)` returning its frozen study.
        scale: `smoke`, `default`, `gpu` or `paper` (checked here, with a one-line error).
        device: `auto`, `cpu`, `cuda`, ...
        overrides: study fields to replace (`dataclasses.replace`); a value of None keeps the preset's, so that a
            notebook parameter left at None means "the scale's value".
    """
    study = build(check_scale(scale), device)
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(study, **given) if given else study


CLAIMS_METADATA = "saelib_claims"
"""The output-metadata key under which `show_claims` stores a chapter's claims rows (read by the book's intro)."""


def claims_records(frame: pd.DataFrame) -> list[dict[str, str]]:
    """A claims table's rows as plain strings (numbers as 3 significant digits), in `Claim`'s field order."""
    return [
        {k: (f"{v:.3g}" if isinstance(v, float) else str(v)) for k, v in zip(Claim._fields, row, strict=True)}
        for row in frame[list(Claim._fields)].itertuples(index=False)
    ]


def show_claims(frame: pd.DataFrame) -> None:
    """Display a chapter's claims table, its rows attached as output metadata (`CLAIMS_METADATA`).

    The book's intro page (`book/claims_overview.py`) reads that metadata from every executed chapter to build its
    table of claims, reported numbers, ours and verdicts, so no number of it is typed by hand.
    """
    from IPython.display import display

    display(frame, metadata={CLAIMS_METADATA: claims_records(frame)})
