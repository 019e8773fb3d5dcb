"""Attribution config: `python -m launch.attribute --config=configs/attribute.py --config.workdir=RUN
--config.tasks=a.jsonl,b.jsonl`. Checkpoints, layer and BOS handling come from the crosscoder's store."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""            # training workdir (crosscoder.safetensors, config.json)
    c.tasks = ""              # task files: comma list or globs (BLiMP, feature-circuits or synthetic jsonl)
    c.out = ""                # default <workdir>/attribution
    c.limit = 0               # pairs per task (0: all)
    c.method = "ig"           # ig | atp
    c.steps = 10              # IG steps (left Riemann sum)
    c.patch = "zero"          # zero | mean
    c.eps_patch = "clean"     # clean | zero: the error term's patch state
    c.threshold = 0.1         # per-(position, latent) |IE| threshold
    c.reduce = "mean"         # mean | sum over positions
    c.top = 10                # union of the top latents by |IE| per checkpoint
    c.tau = 0.3               # lifecycles: onset = first snapshot whose |IE| reaches tau * peak for 2 snapshots
    c.n_boot = 200            # resamples of the prompts for each onset's interval (0: none)
    c.validate_top = 0        # >0: Spearman of IG and AtP with exact patching over this many latents
    c.batch_size = 32
    c.model_dtype = "float32"
    c.progress = True
    return c
