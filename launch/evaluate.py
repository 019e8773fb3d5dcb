"""Evaluate a trained crosscoder inside the models, per checkpoint (FVU, L0, dead, delta-CE, CE recovered).

  python -m launch.evaluate --config=configs/evaluate.py --config.workdir=runs/my_run
Writes <workdir>/eval.json and prints the table.
"""

import json
from pathlib import Path

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/evaluate.py", "evaluation config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax import evaluate, harvest
    from crosscoder_jax.export import load_crosscoder

    c = _CONFIG.value
    workdir = Path(c.workdir)
    store = c.activations or json.loads((workdir / "config.json").read_text())["activations"]
    lms, tok, meta = harvest.series_from_store(store, c.model_dtype)
    contexts = evaluate.heldout_contexts(meta, tok, c.n_contexts, c.context_len)
    cc = load_crosscoder(workdir / "crosscoder.safetensors")
    result = evaluate.evaluate(lms, meta["checkpoints"], cc, contexts, meta["layer"], meta["drop_bos"],
                               c.batch_size, c.progress)
    evaluate.write(result, workdir / "eval.json")
    print(evaluate.table(result))


if __name__ == "__main__":
    app.run(main)
