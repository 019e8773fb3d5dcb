"""Harvest config: `python -m launch.harvest --config=configs/harvest.py --config.<field>=...`."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""                 # hub id (resolved offline from the HF cache) or a directory
    c.checkpoints = ""           # comma list: revisions of `model`, directories, or name=source@revision
    c.layer = 8                  # output of block `layer` (0-based; the paper's "layer 8")
    c.out = ""                   # store directory; rerunning resumes it
    # p_novel (synthetic only): share of animate nouns drawn from the novel nouns (0: the language without them)
    c.tokens = ml_collections.ConfigDict({"kind": "synthetic", "path": "", "field": "text", "seed": 0,
                                          "p_novel": 0.0})
    c.n_contexts = 1024
    c.context_len = 128
    c.drop_bos = True            # drop the first position of every context (the paper does)
    c.dtype = "float32"          # stored dtype: float32 | bfloat16
    c.model_dtype = "float32"    # parameters: float32 | bfloat16
    c.batch_size = 32            # contexts per forward pass (sharded over devices)
    c.chunk_contexts = 64        # contexts per store chunk (the unit of resume and of shuffled reads)
    c.scale_rows = 65536         # rows used to estimate the normalisation scales
    c.health_contexts = 8        # contexts used for the per-checkpoint loss check
    c.progress = True
    return c
