"""The book's figures: `theme` (`set_theme()`, the palette) and one module per chapter, in book order."""

from saelib.plots import asymmetry, geometry, pooling, stability, synthetic
from saelib.plots.theme import LABEL_ORDER, PALETTE, set_theme

__all__ = ["LABEL_ORDER", "PALETTE", "asymmetry", "geometry", "pooling", "set_theme", "stability", "synthetic"]
