"""The main job, end to end on the embedded default: pretrain the tiny model on the synthetic
language (novel nouns withheld until step 1,000), crosscode every checkpoint it saved, harvest,
train three crosscoders with different seeds on the one store, evaluate, attribute on every
synthetic task, compare the seeds' onsets, and write the report.

  python -m launch.demo [--config.workdir=runs/demo] [--config.seeds=1] [--config.n_snapshots=8]
Rerunning resumes; a finished demo redoes nothing. Stage times are in <workdir>/demo.json.
"""

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "demo config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.pipeline import run_demo

    state = run_demo(_CONFIG.value)
    print("[demo] stage seconds: " + ", ".join(f"{k} {v['seconds']:.1f}" for k, v in state["stages"].items()))
    print(f"[demo] total {state['total_seconds']:.1f} s; outputs in {_CONFIG.value.workdir}")


if __name__ == "__main__":
    app.run(main)
