"""BLOOM-1b1 intermediate checkpoints 10000, 100000 and main (~550K tokens per step), layer 12: the
paper's 3-way run. Avoid global_step400000 (perplexity ~338k: harvest flags it).
Use with a stage suffix, e.g. --config=configs/bloom_1b1.py:harvest (see configs/paper.py)."""

from configs.paper import stage_config


def get_config(stage: str = "harvest"):
    return stage_config(stage, name="bloom_1b1", model="bigscience/bloom-1b1-intermediate",
                        checkpoints="global_step10000,global_step100000,main", layer=12)
