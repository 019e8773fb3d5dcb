"""Cost planner config: `python -m launch.plan --config=configs/plan.py[:PRESET] --config.<field>=...`.

Presets: paper (Pythia-1B triplet, the paper's 100M stored / 400M trained tokens, BatchTopK k 200),
pythia_160m_x32 (32 snapshots of Pythia-160M on 800M tokens, the Evolution of Concepts scale),
pythia_1b_x32 (32 snapshots of Pythia-1B, F 65536). Arithmetic: crosscoder_jax/training/plan.py.
"""

import ml_collections


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "pythia-1b"        # a name of training/plan.py's MODELS, or a local directory with config.json
    c.layer = 8                  # hook after block `layer` (0-based)
    c.checkpoints = 3            # C, snapshots crosscoded together
    c.store_tokens = 100_000_000 # tokens harvested (store rows)
    c.train_tokens = 400_000_000 # tokens the crosscoder trains on (epochs = train / store)
    c.dict_size = 16384          # F
    c.activation = "batchtopk"   # l1 | topk | batchtopk | jumprelu
    c.k = 200
    c.batch_size = 4096
    c.dtype = "bfloat16"         # stored dtype
    c.runs = 1                   # crosscoders trained on the same activations (sweeps reuse a store)
    c.accelerator = "h100"       # h100 h200 a100 l4 v100 tpu-v4 tpu-v5e tpu-v5p tpu-v6e, or cpu (measured here)
    c.utilisation = 0.4          # share of the peak the run achieves
    c.devices = 8                # devices sharing the work (wall hours = device-hours / devices)
    if preset == "pythia_160m_x32":
        c.model, c.layer, c.checkpoints = "pythia-160m", 6, 32
        c.store_tokens = c.train_tokens = 800_000_000
        c.dict_size, c.k = 24576, 50
    elif preset == "pythia_1b_x32":
        c.model, c.layer, c.checkpoints = "pythia-1b", 8, 32
        c.store_tokens = c.train_tokens = 400_000_000
        c.dict_size, c.k = 65536, 100
    elif preset != "paper":
        raise ValueError(f"unknown preset {preset!r}: paper, pythia_160m_x32, pythia_1b_x32")
    return c
