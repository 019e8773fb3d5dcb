"""Tiny GPT-NeoX pretraining on the synthetic agreement language (`crosscoder_jax.training.pretrain`).

    python -m launch.pretrain --config=configs/pretrain.py --config.workdir=/tmp/pretrain

About 1 minute (2,000 steps, ~40k tokens/s) on a 2-core CPU.
Output layout: see `crosscoder_jax/training/pretrain.py`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "/tmp/crosscoder_jax/pretrain"  # everything is written here; rerun resumes
    c.seed = 0  # parameter init and training-data stream
    c.steps = 2000  # optimizer updates
    c.batch_size = 32  # windows per step
    c.seq_len = 32  # tokens per window (<bos> + sentences, cut)
    c.lr = 1e-3  # AdamW peak learning rate
    c.warmup_steps = 50  # linear warmup, then cosine decay to lr * min_lr_ratio
    c.min_lr_ratio = 0.1
    c.weight_decay = 0.01
    c.b2 = 0.98
    c.grad_clip = 1.0
    c.n_checkpoints = 24  # HF checkpoint dirs at log-spaced steps (step0 and the last included)
    c.save_every = 200  # orbax resume checkpoints every this many steps (and at the end)
    c.log_every = 25  # metrics.jsonl records
    c.halt_after = 0  # >0: stop (as if killed) after this many steps of this invocation
    c.n_pairs = 256  # minimal pairs per task, written to <workdir>/tasks/
    c.task_seed = 1234  # seed of the minimal-pair stream (held out from the corpus stream)
    # Ground truth by construction: the novel nouns (synthetic/vocab.py NOVEL_NOUNS) never occur in the
    # batches before novel_from_step, then make up grammar.p_novel of the animate nouns; checkpoints are
    # also saved at these offsets after that step (0: the last checkpoint without them), where the
    # novel-noun task's accuracy jumps. grammar.p_novel = 0 turns the construction off.
    c.novel_from_step = 1000
    c.novel_checkpoints = "0,8,16,32,64,128,256"

    c.model = ml_collections.ConfigDict(dict(  # transformers.GPTNeoXConfig fields
        hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=384,
        rotary_pct=0.25, max_position_embeddings=64, use_parallel_residual=True,
    ))
    # crosscoder_jax.synthetic.grammar.GrammarConfig fields. Attractor sentences are rare (10%) so that the
    # model first learns "agree with the nearest noun" (attractor tasks fall below chance) and only
    # later agreement with the subject (the jump), as Pythia does on BLiMP's distractor tasks.
    c.grammar = ml_collections.ConfigDict(dict(
        p_pp=0.05, p_orc=0.03, p_src=0.02, p_mismatch=0.5, p_the=0.5, p_novel=0.25,
    ))
    return c
