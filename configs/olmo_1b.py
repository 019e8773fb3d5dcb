"""OLMo-1B-0724 at 4B, 33B and 3048B tokens, layer 8: the paper's 3-way run. Revisions follow the repo's
`stepN-tokensXB` naming (4.19M tokens per step: step1000-tokens4B, step8000-tokens33B); the final
checkpoint (3.05T tokens) is `main`. Check the repo's revisions.txt for the exact names in your cache.
Use with a stage suffix, e.g. --config=configs/olmo_1b.py:harvest (see configs/paper.py)."""

from configs.paper import stage_config


def get_config(stage: str = "harvest"):
    return stage_config(stage, name="olmo_1b", model="allenai/OLMo-1B-0724-hf",
                        checkpoints="4B=allenai/OLMo-1B-0724-hf@step1000-tokens4B,"
                                    "33B=allenai/OLMo-1B-0724-hf@step8000-tokens33B,"
                                    "3048B=allenai/OLMo-1B-0724-hf@main", layer=8)
