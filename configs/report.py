"""Report config: `python -m launch.report --config=configs/report.py --config.demo=runs/demo` or with
explicit inputs (--config.pretrain, .store, .crosscoder, .attribution). Writes <out>/report.html, the
figures as PNGs and <out>/report_summary.json; out defaults to <demo>/report."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.demo = ""             # demo workdir: <demo>/pretrain, store, crosscoder, attribution (or crosscoder/attribution)
    c.pretrain = ""         # pretraining workdir (task_curves.json, checkpoints/series.json)
    c.store = ""            # activation store with tokens/ and positions/
    c.crosscoder = ""       # crosscoder training workdir (crosscoder.safetensors, eval.json, metrics.jsonl)
    c.attribution = ""      # directory of <task>.csv / <task>.json from launch.attribute
    c.out = ""              # output directory (default <demo>/report)
    c.attractor_task = ""   # task whose accuracy jump the emergence is compared to ("" : task_curves.json's)
    c.max_tokens = 32768    # store tokens encoded for labels, top contexts and live latents
    c.n_contexts = 5        # top-activating contexts per latent card
    c.max_cards = 40        # latent cards (selected latents by largest |IE|)
    c.threshold = 0.5       # |corr| at which a latent counts as labelled
    return c
