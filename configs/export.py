"""Export config: `python -m launch.export --config.workdir=RUN --config.format=FORMAT --config.out=DIR`.

Formats: dictionary_learning (the science-of-finetuning fork's CrossCoder / BatchTopKCrossCoder),
saelens (a plain SAE, C = 1), paper (the paper's code). With `source` set it imports instead:
`--config.format=FORMAT --config.source=PATH --config.workdir=NEW_RUN` writes
NEW_RUN/crosscoder.safetensors. Layouts and mappings: crosscoder_jax/crosscoder/interchange/.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""          # training workdir holding crosscoder.safetensors (import: the new workdir)
    c.format = ""           # dictionary_learning | saelens | paper
    c.out = ""              # export directory (default: <workdir>/export_<format>)
    c.source = ""           # import: a file or directory written in `format`
    c.scaled_codes = False  # saelens topk with unequal decoder norms: codes scaled by decoder norm (docs/interfaces.md)
    c.device = "cuda:0"     # paper: the cfg's device, where its scripts put the crosscoder
    return c
