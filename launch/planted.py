"""Write a store of synthetic activations with planted features (known lifecycles across checkpoints),
train nothing: `launch.train` then trains on it, and `--score_run` reports how many it recovered.

  python -m launch.planted --out=runs/planted/store
  python -m launch.train --config=configs/planted.py
  python -m launch.planted --out=runs/planted/store --score_run=runs/planted/batchtopk

Series mode (`--series`): 16 snapshots, each feature present on one interval of them, directions
drifting from snapshot to snapshot, scales spread 10x; the score adds the fraction of recovered
features whose exact interval the decoder norms give.

  python -m launch.planted --series --out=runs/planted_series/store
  python -m launch.train --config=configs/planted.py:series
  python -m launch.planted --series --out=runs/planted_series/store --score_run=runs/planted_series/batchtopk
"""

import json
from pathlib import Path

import numpy as np
from absl import app, flags

from launch import _logs

from crosscoder_jax.data import planted_store
from crosscoder_jax.synthetic import planted

_OUT = flags.DEFINE_string("out", "runs/planted/store", "store directory to write")
_TOKENS = flags.DEFINE_integer("n_tokens", 2**17, "tokens in the store")
_FEATURES = flags.DEFINE_integer("n_features", 100, "planted features (cycling over the 5 lifecycles)")
_CKPTS = flags.DEFINE_integer("n_checkpoints", 0, "checkpoints C (0: 3, or 16 with --series)")
_SERIES = flags.DEFINE_boolean("series", False, "features on intervals of a long series of snapshots")
_DMODEL = flags.DEFINE_integer("d_model", 64, "hidden size D")
_SEED = flags.DEFINE_integer("seed", 0, "seed of features and samples")
_SCORE = flags.DEFINE_string("score_run", "", "a training workdir to score against the planted truth")


def main(argv):
    del argv
    _logs.quiet()
    C = _CKPTS.value or (16 if _SERIES.value else 3)
    make = planted.make_series_features if _SERIES.value else planted.make_features
    feats = make(_FEATURES.value, C, _DMODEL.value, seed=_SEED.value)
    out = Path(_OUT.value)
    if not (out / "store.json").exists():
        planted_store.write_store(out, feats, _TOKENS.value, seed=_SEED.value)
        print(f"wrote {_TOKENS.value} tokens x {C} checkpoints x {_DMODEL.value} to {out}")
    if _SCORE.value:
        from crosscoder_jax.crosscoder.export import load_crosscoder
        cc = load_crosscoder(Path(_SCORE.value) / "crosscoder.safetensors")
        r = planted.score(np.asarray(cc.folded()["W_dec"]), np.asarray(cc.params["W_dec"]), feats)
        report = {"recovered": r.recovered, "pattern_correct": r.pattern_correct,
                  "pattern_of_recovered": r.pattern_of_recovered, "per_lifecycle": r.per_lifecycle}
        print(json.dumps(report, indent=1))
        (Path(_SCORE.value) / "planted_score.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
