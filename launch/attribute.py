"""Indirect effects, RelIE, classes and lifecycles of a trained crosscoder's latents on tasks.

  python -m launch.attribute --config=configs/attribute.py --config.workdir=runs/my_run \
      --config.tasks=../shared/data/blimp/regular_plural_subject_verb_agreement_1.jsonl
Writes <out>/<task>.csv (one row per selected latent) and <out>/<task>.json (summary) per task.
"""

from pathlib import Path

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/attribute.py", "attribution config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax import analysis
    from crosscoder_jax.pipeline import load_run
    from crosscoder_jax.data.tasks import load_task
    from crosscoder_jax.data.token_sources import expand_paths

    c = _CONFIG.value
    workdir = Path(c.workdir)
    lms, tok, meta, cc = load_run(workdir, c.model_dtype)
    paths = expand_paths(c.tasks)
    out = Path(c.out) if c.out else workdir / "attribution"
    for path in paths:
        prompts, report = load_task(path, tok, limit=c.limit or None)
        print(f"{path.stem}: {report['kept']} pairs kept, dropped {report['dropped']}")
        result = analysis.analyze_task(lms, meta["checkpoints"], cc, prompts, meta["layer"],
                                       drop_bos=meta["drop_bos"], validate_top=c.validate_top,
                                       show_progress=c.progress, **analysis.task_analysis.options(c))
        result["summary"]["pairs"] = {k: v for k, v in report.items() if k != "kept_index"}
        csv_path, _ = analysis.write_outputs(result, out, path.stem)
        s = result["summary"]
        print(f"  -> {csv_path}: {len(result['rows'])} latents, classes {s.get('classes')}, "
              f"ablation rho RelIE {s.get('ablation', {}).get('rho_relie')}, RelDec {s.get('ablation', {}).get('rho_reldec')}")


if __name__ == "__main__":
    app.run(main)
