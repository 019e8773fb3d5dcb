"""crosscoder_jax: sparse crosscoders across pretraining checkpoints, and RelIE.

One subpackage per stage of the data flow. A stage imports only the stages above it in this list
(`tests/test_layout.py` checks it), and nothing imports `launch/`:

  runtime     devices and meshes, multi-host start-up, metrics logs and progress bars
  models      LM families in JAX, offline Hugging Face loading, hooks at a layer
  crosscoder  the crosscoder as pure functions, activation functions, kernels, safetensors export
  synthetic   the synthetic agreement language, its annotations and minimal pairs, planted features
  data        activation stores, their reader, token sources, minimal-pair tasks, harvest
  training    the sharded crosscoder train loop and its mesh; the tiny LM's pretraining loop
  analysis    spliced evaluation, indirect effects (AtP / IG / exact), RelIE, lifecycles, labels
  report      figures and the self-contained HTML report
  pipeline    the main job (the demo), stage by stage, resumable

models, crosscoder and synthetic stand side by side: none imports another.
"""

from crosscoder_jax.runtime import arena as _arena

# before JAX's CPU backend starts its worker threads, so that they allocate from the heap the train
# loop keeps between steps (runtime/arena.py: the step 1.49x faster on a 2-core EPYC)
_arena.set_one_arena()
