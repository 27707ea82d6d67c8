"""One module per chapter of the book, in book order: `stability` (1), `asymmetry` (2), `geometry` (3),
`synthetic` (4), `pooling` (5), with `asymmetry_paper` (the paper's own analyses that chapter 2 adds: masking N
stable vs 4N unstable latents, firing rates, explanation keywords); `grid` is the language-model SAE grid that
chapters 1, 2, 3 and 5 read, and `common` the preset idiom and the `Claim` row every chapter shares."""
