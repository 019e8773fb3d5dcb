"""Crosscoders trained with several seeds on one store, attributed on the same tasks, their latents
matched, and every selected latent's causal onset compared with its matches' (configs/seeds.py).

  python -m launch.seeds --config=configs/seeds.py --config.workdir=runs/seeds \
      --config.train.activations=runs/demo/store --config.tasks='runs/demo/pretrain/tasks/*.jsonl'
Writes <workdir>/seed<s>/ (a training workdir each, attribution/ inside) and <workdir>/agreement/
(agreement.json, <task>.csv). Rerunning resumes; the store is read, never harvested again.
"""

from pathlib import Path

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/seeds.py", "seed agreement config")


def main(argv):
    del argv
    _logs.quiet()
    import ml_collections
    import numpy as np

    from crosscoder_jax import analysis
    from crosscoder_jax.analysis import agreement
    from crosscoder_jax.crosscoder import load_crosscoder
    from crosscoder_jax.data.store import Store
    from crosscoder_jax.data.tasks import load_task
    from crosscoder_jax.data.token_sources import expand_paths
    from crosscoder_jax.pipeline import load_run
    from crosscoder_jax.training import train

    c = _CONFIG.value
    if not c.workdir or not c.tasks or not c.train.activations:
        raise SystemExit("set --config.workdir, --config.tasks and --config.train.activations (the store)")
    if c.train.activations == "live" and c.match_by == "codes":
        raise SystemExit("matching by codes reads store rows, and a live run has no store: "
                         "--config.match_by=decoder, or harvest a store")
    work = Path(c.workdir)
    seeds = [int(c.train.seed) + i for i in range(max(2, int(c.seeds)))]
    dirs = {s: work / f"seed{s}" for s in seeds}
    for s, d in dirs.items():
        if not (d / "crosscoder.safetensors").is_file():
            tc = ml_collections.ConfigDict(c.train.to_dict())
            tc.workdir, tc.seed = str(d), s
            print(f"[seeds] training seed {s} in {d}", flush=True)
            train.train(tc)
    lms, tok, meta, cc = load_run(dirs[seeds[0]])
    ac, names, opts = c.attribute, meta["checkpoints"], analysis.task_analysis.options(c.attribute)
    prompts = {p.stem: load_task(p, tok, limit=ac.limit or None)[0] for p in expand_paths(c.tasks)}
    ref_att = dirs[seeds[0]] / "attribution"
    for task, pr in prompts.items():
        if not (ref_att / f"{task}.csv").is_file():
            res = analysis.analyze_task(lms, names, cc, pr, meta["layer"], drop_bos=meta["drop_bos"],
                                        validate_top=ac.validate_top, show_progress=ac.progress, **opts)
            analysis.write_outputs(res, ref_att, task)
    for s in seeds[1:]:
        todo = {t: p for t, p in prompts.items() if not (dirs[s] / "attribution" / f"{t}.json").is_file()}
        if todo:
            agreement.seed_task_ie(lms, names, load_crosscoder(dirs[s] / "crosscoder.safetensors"), todo,
                                   meta["layer"], dirs[s] / "attribution", drop_bos=meta["drop_bos"], **opts)
    store = Store(c.train.activations)
    rows = np.asarray(store.read_rows(0, min(c.match_rows, store.n_tokens)), np.float32)
    res = agreement.agree((seeds[0], dirs[seeds[0]]), ref_att, [(s, dirs[s]) for s in seeds[1:]], names,
                          cut=c.match_cut, tau=ac.tau, match_by=c.match_by, rows_NCD=rows)
    path = agreement.write(res, work / "agreement")
    o = res["summary"]["overall"]
    print(f"[seeds] {path}: of {o['n']} selected latents, onset seed-stable {o.get('seed_stable'):.3f}, "
          f"prompt-stable {o.get('prompt_stable', float('nan')):.3f}, both {o.get('both', float('nan')):.3f}")


if __name__ == "__main__":
    app.run(main)
