"""Evaluation config: `python -m launch.evaluate --config=configs/evaluate.py --config.workdir=RUN`.

Model, checkpoints, layer and token source come from the store the crosscoder was trained on; the
held-out contexts are the ones after the harvested ones (a fresh draw for the synthetic language).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""            # training workdir holding crosscoder.safetensors and config.json
    c.activations = ""        # the store (default: the one in the workdir's config.json)
    c.n_contexts = 64         # held-out contexts
    c.context_len = 0         # 0: the harvest's
    c.batch_size = 16
    c.model_dtype = "float32"
    c.progress = True
    return c
