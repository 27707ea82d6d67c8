"""saelib: the library behind the companion to "Unstable Features, Reproducible Subspaces" (arXiv 2606.12138).

Modules (one concept each): `config` (frozen configs and named scales), `sae` (S stacked SAEs), `train`
(all seeds at once), `metrics`, `stability`, `subspace`, `synthetic`, `cache`/`paths`, `plots`.
"""

__version__ = "0.1.0"
