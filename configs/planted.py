"""The planted-feature demo: configs/crosscoder.py with sizes for the synthetic store of launch.planted."""

from configs import crosscoder


def get_config():
    c = crosscoder.get_config()
    c.activations = "runs/planted/store"
    c.workdir = "runs/planted/batchtopk"
    c.dict_size = 256
    c.activation = "batchtopk"
    c.k = 6
    c.batch_size = 512
    c.steps = 2000
    c.lr = 3e-3
    c.dead_tokens = 20_000
    c.threshold_start_step = 500
    c.log_every = 100
    c.save_every = 500
    return c
