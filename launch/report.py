"""One self-contained HTML report of a run (see crosscoder_jax/report/build.py).

  python -m launch.report --config=configs/report.py --config.demo=runs/demo
  python -m launch.report --config=configs/report.py --config.crosscoder=runs/my_run \
      --config.pretrain=/tmp/pretrain --config.out=runs/my_run/report
Prints the measurement (labelled latents, subject-number latents' emergence vs. the attractor jump).
"""

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/report.py", "report config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.report import write_report

    c = _CONFIG.value
    if not (c.demo or c.out):
        raise app.UsageError("set --config.demo (a demo workdir) or --config.out with explicit inputs")
    write_report(c.demo or None, c.out or None, pretrain=c.pretrain or None, store=c.store or None,
                 crosscoder=c.crosscoder or None, attribution=c.attribution or None, max_tokens=c.max_tokens,
                 n_contexts=c.n_contexts, max_cards=c.max_cards, attractor_task=c.attractor_task or None,
                 threshold=c.threshold)


if __name__ == "__main__":
    app.run(main)
