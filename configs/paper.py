"""The paper's settings (PAPER.md section 2), shared by configs/pythia_1b.py, olmo_1b.py and bloom_1b1.py.

Each of those files is used for every stage with a stage suffix:
  python -m launch.harvest   --config=configs/pythia_1b.py:harvest
  python -m launch.train     --config=configs/pythia_1b.py:train              (l1; ":train_batchtopk" for BatchTopK)
  python -m launch.evaluate  --config=configs/pythia_1b.py:evaluate
  python -m launch.attribute --config=configs/pythia_1b.py:attribute
  python -m launch.curves    --config=configs/pythia_1b.py:curves
"""

from __future__ import annotations

import ml_collections

from configs import attribute, crosscoder, curves, evaluate, harvest

BLIMP_SV = ",".join(f"../shared/data/blimp/{t}.jsonl" for t in (
    "distractor_agreement_relational_noun", "distractor_agreement_relative_clause",
    "irregular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_1"))


def stage_config(stage: str, *, name: str, model: str, checkpoints: str, layer: int,
                 text: str = "data/text/*.jsonl") -> ml_collections.ConfigDict:
    """The config of one stage for a model of the paper."""
    root = f"runs/{name}"
    if stage == "harvest":
        c = harvest.get_config()
        c.model, c.checkpoints, c.layer, c.out = model, checkpoints, layer, f"{root}/store"
        c.tokens.kind, c.tokens.path, c.tokens.field = "jsonl", text, "text"  # a local text corpus (e.g. the Pile)
        c.context_len, c.drop_bos = 1024, True          # the paper's contexts, first token dropped
        c.n_contexts = 97_752                           # 100M tokens: ~1.26 TB at bfloat16 for C=3, D=2048
        c.dtype, c.model_dtype = "bfloat16", "bfloat16"
        c.batch_size, c.chunk_contexts = 8, 4
        return c
    if stage in ("train", "train_batchtopk"):
        c = crosscoder.get_config()
        c.activations = f"{root}/store"
        c.dict_size, c.batch_size, c.steps, c.lr = 16384, 4096, 97_656, 5e-5   # 400M tokens
        c.b1, c.b2, c.grad_clip, c.decay_frac = 0.9, 0.999, 1.0, 0.2
        c.center = False  # the paper scales its inputs but does not centre them
        if stage == "train":
            c.workdir, c.activation, c.l1_coeff, c.sparsity_warmup_frac = f"{root}/l1", "l1", 2.0, 0.05
        else:
            c.workdir, c.activation = f"{root}/batchtopk", "batchtopk"
            c.k, c.k_start, c.k_anneal_steps = 200, 1000, 5000
            c.threshold_start_step, c.threshold_beta = 1000, 0.999
            c.dec_init_norm = 1.0  # the paper's; our topk/batchtopk default is 1/sqrt(3 C)
        return c
    if stage == "evaluate":
        c = evaluate.get_config()
        c.workdir, c.n_contexts, c.batch_size = f"{root}/l1", 64, 4
        return c
    if stage == "attribute":
        c = attribute.get_config()
        c.workdir, c.tasks, c.method, c.steps, c.threshold, c.top = f"{root}/l1", BLIMP_SV, "ig", 10, 0.1, 10
        c.batch_size, c.validate_top = 16, 0
        return c
    if stage == "curves":
        c = curves.get_config()
        c.model, c.checkpoints, c.tasks, c.out = model, checkpoints, BLIMP_SV, f"{root}/curves.json"
        return c
    raise ValueError(f"unknown stage {stage!r}: harvest, train, train_batchtopk, evaluate, attribute, curves")
