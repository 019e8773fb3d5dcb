"""The main job on the embedded default (`python -m launch.demo`): see crosscoder_jax/pipeline.py.

Each stage's config is the full config of its own file (configs/pretrain.py, harvest.py,
crosscoder.py, attribute.py) with the demo's sizes, so any field can be set from the command line,
e.g. --config.train.steps=500. Paths between stages are set by the pipeline.
"""

import ml_collections

from configs import attribute, crosscoder, harvest, pretrain


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/demo"
    c.n_snapshots = 0                        # crosscoded checkpoints: 0 all that pretraining saved (full
                                             # resolution); n < all: n chosen over the whole series (log-spaced,
                                             # dense at the jump); 3: the paper's triplet (dip, after, final)
    c.checkpoints = ""                       # e.g. "step126,step355,step2000"; "" chooses automatically
    c.selection_task = "across_pp_attractor" # checkpoints are chosen around this task's accuracy jump
    c.layer = -1                             # -1: block n_layers // 2 (the paper: 8 of 16; here 1 of 2)
    c.eval_contexts = 256
    c.seeds = 3                              # crosscoders trained on the same store with seeds train.seed + 0..seeds-1;
                                             # each selected latent's onset is compared with its matches' (1: one only)
    c.match_by = "codes"                     # latents of two seeds match by the correlation of their codes on the
                                             # store ("codes") or the cosine of their joined decoders ("decoder"):
                                             # at this size decoders do not identify a feature (analysis/matching.py)
    c.match_cut = 0.7                        # similarity from which two latents match
    c.match_rows = 16384                     # store rows the codes are compared on
    c.progress = True
    c.pretrain = pretrain.get_config()
    c.harvest = harvest.get_config()
    c.harvest.update({"n_contexts": 4096, "context_len": 32, "chunk_contexts": 128, "batch_size": 128})
    c.harvest.tokens.seed = 7                # a draw of the synthetic language not used for pretraining
    c.train = crosscoder.get_config()
    # F 256, k 32, 1,000 steps, decoder rows at 0.1 (measured on the 29-snapshot store,
    # benchmarks/README.md "Demo crosscoder"): rows at 1.0, the paper's BatchTopK setting, left 91-93% of the
    # latents dead at 29 snapshots (FVU 0.19); 0.1 left 10% (FVU 0.013); 2,000 steps gained little (0.011)
    c.train.update({"dict_size": 256, "activation": "batchtopk", "k": 32, "batch_size": 1024, "steps": 1000,
                    "lr": 1e-3, "dead_tokens": 200_000, "threshold_start_step": 250, "log_every": 100,
                    # 0.1, not the default 1/sqrt(3 C) = 0.107: 9.8% against 10.5% dead, FVU 0.0126 both
                    "dec_init_norm": 0.1,
                    "save_every": 500})
    c.attribute = attribute.get_config()
    # all 256 pairs of a task in one batch: IG half as long as in batches of 32 (one compiled program)
    c.attribute.update({"validate_top": 50, "progress": False, "batch_size": 256})
    return c
