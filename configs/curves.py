"""Task-curve config: accuracy and mean logit difference of every checkpoint of a series on every task.

  python -m launch.curves --config=configs/curves.py --config.model=EleutherAI/pythia-1b \
      --config.checkpoints=step64,step512,step2000,step143000 --config.tasks='../shared/data/blimp/*agreement*.jsonl'
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""           # hub id (offline HF cache) or directory
    c.checkpoints = ""     # comma list: revisions, directories, or name=source@revision
    c.tasks = ""           # task jsonl files: comma list or globs
    c.limit = 0            # pairs per task (0: all)
    c.out = ""             # JSON output (default: print only)
    c.model_dtype = "float32"
    return c
