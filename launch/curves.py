"""Accuracy and mean logit difference of every checkpoint in a series on every task (see configs/curves.py)."""

import json
from pathlib import Path

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/curves.py", "task-curve config")


def main(argv):
    del argv
    _logs.quiet()
    import jax.numpy as jnp

    from crosscoder_jax.data import harvest, tasks, token_sources

    c = _CONFIG.value
    ckpts = harvest.parse_checkpoints(c.checkpoints, c.model)
    lms, tok = harvest.load_checkpoints(ckpts, {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[c.model_dtype])
    paths = token_sources.expand_paths(c.tasks)
    prompts = {p.stem: tasks.load_task(p, tok, limit=c.limit or None)[0] for p in paths}
    curves = tasks.task_curves(lms, [n for n, _, _ in ckpts], prompts)
    names = [n for n, _, _ in ckpts]
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for task, per in curves.items():
        print(f"| {task} | " + " | ".join(f"{per[n]['accuracy']:.3f} ({per[n]['mean_clean_minus_patch']:+.2f})"
                                         for n in names) + " |")
    if c.out:
        Path(c.out).write_text(json.dumps(curves, indent=1))


if __name__ == "__main__":
    app.run(main)
