"""Training config for `python -m launch.train --config=configs/crosscoder.py --config.<field>=...`.

Defaults are the paper's settings (Pythia-1B / OLMo-1B / BLOOM-1b1): F = 16384, batch 4096, Adam
(0.9, 0.999), grad-norm clip 1.0, constant lr then linear decay over the last 20%, 400M tokens
(97,656 steps); except lr (2e-4 / sqrt(F / 2^14), not 5e-5) and the topk/batchtopk decoder init
(1/sqrt(3 C), not 1.0), chosen on data they were not tuned on (benchmarks/README.md, "Quality per
step"); configs/paper.py restores the paper's. `activation` picks the sparsity: l1 | topk | batchtopk | jumprelu.
"""

import ml_collections


def _live_fields() -> ml_collections.ConfigDict:
    from configs import harvest

    h = harvest.get_config()
    for key in ("out", "health_contexts", "progress"):  # a harvest's, not a source's
        del h[key]
    h.buffer = "device"  # the shuffling window: on the devices that ran the forward passes, or "host"
    return h


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.activations = ""            # activation store: a directory, a kvstore URL (gs://, s3://), or "live"
    # activations="live": the checkpoints' forward passes run during training (nothing stored), with
    # the fields of a harvest (configs/harvest.py); the batches equal those of a store harvested so
    c.live = _live_fields()
    c.workdir = ""                # everything of the run goes here; rerunning resumes
    c.dict_size = 16384           # F, latents
    c.activation = "batchtopk"    # l1 | topk | batchtopk | jumprelu
    c.k = 200                     # topk / batchtopk: active latents per token
    c.k_start = 0                 # batchtopk/topk: anneal k from k_start (0: no annealing; paper 1000)
    c.k_anneal_steps = 0          # over this many steps (paper 5000)
    c.l1_coeff = 2.0              # lambda of the L1 (l1) or L0 (jumprelu) penalty
    c.sparsity_warmup_frac = 0.05 # lambda warms up linearly over this fraction of the steps
    c.aux_coeff = 1.0 / 32.0      # AuxK weight (topk, batchtopk)
    c.k_aux = 0                   # dead latents per token in AuxK (0: D // 2)
    c.dead_tokens = 10_000_000    # a latent silent for this many tokens is dead
    c.threshold_beta = 0.999      # batchtopk inference threshold EMA
    c.threshold_start_step = 1000
    c.bandwidth = 0.5             # jumprelu straight-through kernel width (inputs have mean norm sqrt(D))
    c.init_threshold = 0.5        # jumprelu initial threshold
    c.dec_init_norm = 0.0         # decoder row norm at init (0: 0.08 for l1, 1/sqrt(3 C) for topk/batchtopk,
                                  # 1.0 for jumprelu; the paper's BatchTopK runs used 1.0, configs/paper.py sets it)
    c.matmul_dtype = "auto"       # operands of the matmuls (float32 accumulation): bf16 on GPU/TPU, on CPU
                                  # bf16 only where a start-up probe shows it faster (runtime/matmul_choice.py);
                                  # or "float32" / "bfloat16"
    c.sparse_decode = True        # topk/batchtopk: everything after the encoder forward from the kept entries
                                  # (same math; where k <= F / 64: crosscoder/sparse_step.py); ignored by l1, jumprelu
    c.normalize = True            # scale each checkpoint to mean norm sqrt(D)
    c.center = True               # subtract each checkpoint's mean (of sampled scaled rows) from its inputs, absorbed
                                  # into the biases at export: FVU 0.020 against 0.043 at 1,000 steps on power-law
                                  # data with a large offset (training/init_data.py; it loses some on the planted
                                  # and alpha 1.1 sets, benchmarks/README.md); the paper's runs did not centre
    c.b_dec_init = "zero"         # decoder bias at init, per checkpoint, on the centred rows: zero | mean | median
                                  # (geometric median of 16,384 sampled rows). Zero: the median cost FVU on
                                  # uncentred power-law data (benchmarks/README.md "Quality per step")
    c.lr = 0.0                    # 0: 2e-4 / sqrt(F / 2^14), sparsify's and dictionary_learning's rule (2e-4 at
                                  # F 16384; the paper's 5e-5 is configs/paper.py's). benchmarks/README.md
                                  # "Quality per step": at 1,000 steps FVU 0.048 at 2e-4 vs 0.148 at 5e-5
    c.b1 = 0.9
    c.b2 = 0.999
    c.grad_clip = 1.0             # global-norm clip (0: off)
    c.warmup_steps = 0
    c.decay_frac = 0.2            # linear decay to 0 over the last 20% of steps
    c.batch_size = 4096
    c.steps = 97_656
    c.seed = 0
    # data x snapshot x latent devices (-1 fills with the devices present); zero: parameters and Adam
    # moments split over data too (ZeRO), so data parallelism does not replicate the dictionary
    c.mesh = ml_collections.ConfigDict({"data": -1, "snapshot": 1, "latent": 1, "zero": True})
    # shards 0: one per block of rows the processes hold (the stream depends on the shard count only)
    c.reader = ml_collections.ConfigDict({"window_chunks": 8, "prefetch": 4, "shards": 0})
    c.log_every = 100
    c.save_every = 1000
    c.max_to_keep = 2
    c.progress = True
    c.stop_after = 0              # stop (checkpointed) after this step, e.g. to fit a job's time limit; 0: run to the end
    c.resume_anyway = False
    c.distributed = ml_collections.ConfigDict({"coordinator": "", "num_processes": 1, "process_id": 0})
    return c
