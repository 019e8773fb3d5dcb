"""Pythia-1B at 1B, 4B and 286B tokens (step512, step2000, step143000), layer 8: the paper's 3-way run.
Use with a stage suffix, e.g. --config=configs/pythia_1b.py:harvest (see configs/paper.py)."""

from configs.paper import stage_config


def get_config(stage: str = "harvest"):
    return stage_config(stage, name="pythia_1b", model="EleutherAI/pythia-1b",
                        checkpoints="step512,step2000,step143000", layer=8)
