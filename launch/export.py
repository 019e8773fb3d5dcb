"""Export a trained crosscoder to another library's format, or import one.

  python -m launch.export --config.workdir=RUN --config.format=FORMAT --config.out=DIR
  python -m launch.export --config.format=FORMAT --config.source=PATH --config.workdir=NEW_RUN
FORMAT: dictionary_learning, saelens (C = 1) or paper. Export reads RUN/crosscoder.safetensors and
prints the files written; import writes NEW_RUN/crosscoder.safetensors. A format that cannot hold
the crosscoder exactly is an error that says why (crosscoder_jax/crosscoder/interchange/).
"""

import sys

from absl import app

from launch import _logs
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/export.py", "export config")


def main(argv):
    del argv
    _logs.quiet()
    from crosscoder_jax.crosscoder.interchange import InterchangeError, export_run, import_run

    c = _CONFIG.value
    if not c.workdir or not c.format:
        sys.exit("export: set --config.workdir=RUN and --config.format=dictionary_learning|saelens|paper")
    try:
        if c.source:
            print(f"imported {c.source} as {import_run(c.source, c.format, c.workdir)}")
        else:
            for path in export_run(c.workdir, c.format, c.out or None, scaled_codes=c.scaled_codes, device=c.device):
                print(path)
    except (InterchangeError, FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"export: {e}")


if __name__ == "__main__":
    app.run(main)
