"""Pretrains the tiny GPT-NeoX on the synthetic agreement language and writes its checkpoint series.

    python -m launch.pretrain --config=configs/pretrain.py --config.workdir=/tmp/pretrain

Rerunning the same command resumes from `<workdir>/orbax`. Outputs: see crosscoder_jax/training/pretrain.py.
"""

from absl import app
from ml_collections import config_flags

from launch import _logs

from crosscoder_jax.training import pretrain

_CONFIG = config_flags.DEFINE_config_file("config", "configs/pretrain.py",
                                          "pretraining config (configs/pretrain.py)")


def main(argv):
    del argv
    _logs.quiet()
    ckpts = pretrain.run(_CONFIG.value)
    print(f"checkpoint series: {ckpts / 'series.json'}")


if __name__ == "__main__":
    app.run(main)
