"""Evaluate a trained crosscoder inside the models, per checkpoint (FVU, L0, dead, delta-CE, CE recovered).

  python -m launch.evaluate --config=configs/evaluate.py --config.workdir=runs/my_run
Writes <workdir>/eval.json and prints the table.
"""

from pathlib import Path

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/evaluate.py", "evaluation config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.analysis import evaluate
    from crosscoder_jax.pipeline import load_run

    c = _CONFIG.value
    workdir = Path(c.workdir)
    lms, tok, meta, cc = load_run(workdir, c.model_dtype, c.activations or None)
    contexts = evaluate.heldout_contexts(meta, tok, c.n_contexts, c.context_len)
    result = evaluate.evaluate(lms, meta["checkpoints"], cc, contexts, meta["layer"], meta["drop_bos"],
                               c.batch_size, c.progress)
    evaluate.write(result, workdir / "eval.json")
    print(evaluate.table(result))


if __name__ == "__main__":
    app.run(main)
