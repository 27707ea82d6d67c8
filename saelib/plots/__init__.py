"""The book's figures: `theme` (`set_theme()`, the palette) and one module per chapter, in book order."""

from saelib.extras import require

require("book", "saelib.plots", ("matplotlib", "seaborn"))

from saelib.plots import asymmetry, geometry, pooling, stability, synthetic  # noqa: E402
from saelib.plots.theme import LABEL_ORDER, PALETTE, set_theme  # noqa: E402

__all__ = ["LABEL_ORDER", "PALETTE", "asymmetry", "geometry", "pooling", "set_theme", "stability", "synthetic"]
