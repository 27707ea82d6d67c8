"""saelib: the library behind the companion to "Unstable Features, Reproducible Subspaces" (arXiv 2606.12138).

Modules (one concept each): `config` (frozen configs and named scales), `sae` (S stacked SAEs), `train`
(all seeds at once), `activations`/`corpus`/`store` (language-model activations), `splice` (CE with an SAE spliced
in), `metrics`, `stability`, `subspace`, `synthetic`, `grid` (chapter 1), `asymmetry`/`interp` (chapter 2),
`geometry`/`groups` (chapter 3), `pooling`/`pooling_eval` (chapter 5), `cache`/`paths`, `plots`, `cli`.
"""

__version__ = "0.1.0"
