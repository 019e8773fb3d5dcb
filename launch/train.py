"""Train a crosscoder on an activation store; rerun the same command to resume.

  python -m launch.train --config=configs/crosscoder.py --config.activations=STORE --config.workdir=RUN
Multi-host: add --config.distributed.coordinator=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I on every host.
"""

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/crosscoder.py", "training config")


def main(argv):
    del argv
    _logs.quiet()
    config = _CONFIG.value
    if config.distributed.coordinator:
        from crosscoder_jax.runtime.devices import initialize_distributed
        initialize_distributed(config.distributed.coordinator, config.distributed.num_processes,
                               config.distributed.process_id)
    from crosscoder_jax.training.train import train
    metrics = train(config)
    print({k: metrics[k] for k in ("loss", "l0", "fvu", "dead_frac") if k in metrics})


if __name__ == "__main__":
    app.run(main)
