"""Language models: loading (`activations`), the text (`corpus`), the sharded activation store (`store`), CE with an
SAE spliced in (`splice`), top contexts (`interp`), the explainer (`explainer`), and their configs (`config`). Adds
transformers to the core's dependencies."""

from saelib.extras import require

require("lm", "saelib.lm", ("transformers",))
