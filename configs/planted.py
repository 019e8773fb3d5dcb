"""The planted-feature demo: configs/crosscoder.py with sizes for the synthetic store of launch.planted."""

from configs import crosscoder


def get_config(mode: str = ""):
    """`configs/planted.py` for the 3-checkpoint store, `configs/planted.py:series` for the 16-snapshot one."""
    c = crosscoder.get_config()
    c.activations = "runs/planted/store"
    c.workdir = "runs/planted/batchtopk"
    c.dict_size = 256
    c.activation = "batchtopk"
    c.k = 6
    c.batch_size = 512
    c.steps = 2000
    c.lr = 3e-3
    c.dec_init_norm = 1.0  # the norm its lr and recovery figures were measured with (the batchtopk default is 1/sqrt(3 C))
    c.dead_tokens = 20_000
    c.threshold_start_step = 500
    c.log_every = 100
    c.save_every = 500
    if mode == "series":
        c.activations, c.workdir = "runs/planted_series/store", "runs/planted_series/batchtopk"
        c.steps = 6000  # 16 snapshots, seed 0: 4,000 steps recover 0.93 of the features, 6,000 steps 0.98
    elif mode:
        raise ValueError(f"unknown mode {mode!r}: use configs/planted.py or configs/planted.py:series")
    return c
