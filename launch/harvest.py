"""Harvest a layer's activations of several checkpoints into an activation store; rerun to resume.

  python -m launch.harvest --config=configs/harvest.py --config.model=EleutherAI/pythia-1b \
      --config.checkpoints=step512,step2000,step143000 --config.layer=8 --config.out=runs/pythia/store
"""

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/harvest.py", "harvest config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.data.harvest import harvest
    print(f"store: {harvest(_CONFIG.value)}")


if __name__ == "__main__":
    app.run(main)
