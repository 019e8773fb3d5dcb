"""Seed agreement: `python -m launch.seeds --config=configs/seeds.py --config.workdir=runs/seeds
--config.train.activations=STORE --config.tasks=a.jsonl,b.jsonl [--config.seeds=3]`.

Trains `seeds` crosscoders on one store (the fields of configs/crosscoder.py under `train`, seeds
train.seed + 0..seeds-1, each in <workdir>/seed<s>), attributes the first on the tasks (everything
launch.attribute writes) and the others' IE of every latent, matches the latents and writes the
onset agreement to <workdir>/agreement/. Every part resumes: a finished run or task is not redone.
"""

import ml_collections

from configs import attribute, crosscoder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = ""            # <workdir>/seed<s> per seed, <workdir>/agreement
    c.seeds = 3               # crosscoders; the first (train.seed) is the reference
    c.tasks = ""              # task files: comma list or globs
    c.match_by = "codes"      # codes | decoder (crosscoder_jax/analysis/matching.py says which when)
    c.match_cut = 0.7         # similarity from which two latents match
    c.match_rows = 16384      # store rows the codes are compared on
    c.train = crosscoder.get_config()
    c.attribute = attribute.get_config()
    return c
