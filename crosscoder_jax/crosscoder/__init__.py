"""Stage: the crosscoder itself, as pure functions over a params pytree.

Takes: sizes and settings (`Spec`) and batches of normalised activations `x [B, C, D]`.
Gives: parameters (`W_enc [C, D, F]`, `b_enc [F]`, `W_dec [F, C, D]`, `b_dec [C, D]`), codes
`f [B, F]`, reconstructions, the training loss, and `crosscoder.safetensors` (export and loader).

Modules: `spec` (Spec), `core` (init, encode/decode, loss, FVU, scale folding), `activations/`
(the registry of activation functions: l1, topk, batchtopk, jumprelu), `matmul` and
`sparse_decode` (the kernels), `sparse_step` (the top-k loss and gradient from the kept entries),
`export` (the safetensors file and `load_crosscoder`).
Imports no other stage.
"""

from crosscoder_jax.crosscoder.core import (Params, absorb_shift, decode, decoder_norms, encode, encoder_pre,
                                            fold_scales, fvu, init_params, loss_fn, reconstruct, score_norms,
                                            unfold_scales)
from crosscoder_jax.crosscoder.export import Crosscoder, load_crosscoder, save_crosscoder
from crosscoder_jax.crosscoder.spec import Spec

__all__ = ["Crosscoder", "Params", "Spec", "absorb_shift", "decode", "decoder_norms", "encode", "encoder_pre",
           "fold_scales", "fvu", "init_params", "load_crosscoder", "loss_fn", "reconstruct", "save_crosscoder",
           "score_norms", "unfold_scales"]
