"""Static crosscoder hyperparameters (`Spec`): sizes, the activation function and its settings.

Shapes (PAPER.md section 2): C checkpoints, D hidden size, F latents. The activation function is
looked up by name in `crosscoder_jax.crosscoder.activations`, which validates it.
"""

from __future__ import annotations

import dataclasses
import math

from crosscoder_jax.crosscoder import activations


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static crosscoder hyperparameters (hashable: passed to jit as a static argument).

    Attributes:
      n_checkpoints: C, the number of stacked checkpoints (1 = plain SAE).
      d_model: D, the hidden size of every checkpoint.
      dict_size: F, the number of latents.
      activation: registry name: "l1", "topk", "batchtopk" or "jumprelu".
      k: active latents per token (topk), or on average per token (batchtopk).
      k_start: if set, k anneals linearly from k_start down to k over k_anneal_steps (paper: 1000 -> 200).
      k_anneal_steps: length of the k annealing.
      sparsity_coeff: lambda of the L1 penalty (l1) or of the L0 penalty (jumprelu).
      sparsity_warmup_steps: lambda grows linearly from 0 over this many steps (paper: 5% of steps).
      aux_coeff: weight of the AuxK loss on dead latents (topk, batchtopk); paper 1/32.
      k_aux: dead latents used per token by AuxK; None means D // 2.
      dead_tokens: a latent that has not fired for this many tokens counts as dead.
      threshold_beta: EMA decay of the batchtopk inference threshold.
      threshold_start_step: the batchtopk threshold EMA starts after this many steps.
      bandwidth: width of the jumprelu straight-through rectangle kernel.
      init_threshold: initial jumprelu threshold.
      dec_init_norm: norm of every decoder row W_dec[i, c] at init; None: the activation function's
        default (0.08 for l1, 1/sqrt(3 C) for topk and batchtopk, 1.0 for jumprelu).
      matmul_dtype: operand dtype of the encoder/decoder matmuls ("float32" or "bfloat16");
        accumulation is always float32 (configs may say "auto": `runtime.matmul_choice`).
      sparse_decode: topk/batchtopk training computes everything after the encoder forward from the
        kept entries (`sparse_step`: gathers and scatter-adds instead of four of the five dense
        matmuls; the same numbers). Used where at most `sparse_step.MAX_DENSITY` of the codes are kept.
    """

    n_checkpoints: int
    d_model: int
    dict_size: int
    activation: str = "batchtopk"
    k: int = 32
    k_start: int | None = None
    k_anneal_steps: int = 0
    sparsity_coeff: float = 2.0
    sparsity_warmup_steps: int = 0
    aux_coeff: float = 1.0 / 32.0
    k_aux: int | None = None
    dead_tokens: int = 10_000_000
    threshold_beta: float = 0.999
    threshold_start_step: int = 1000
    bandwidth: float = 0.5
    init_threshold: float = 0.5
    dec_init_norm: float | None = None
    matmul_dtype: str = "float32"
    sparse_decode: bool = False

    def __post_init__(self) -> None:
        if min(self.n_checkpoints, self.d_model, self.dict_size) < 1:
            raise ValueError(f"n_checkpoints, d_model and dict_size must be >= 1, got {self.n_checkpoints}, "
                             f"{self.d_model}, {self.dict_size}")
        activations.get(self.activation)  # raises with the list of known names
        if self.activation in ("topk", "batchtopk"):
            for name in ("k", "k_start"):
                value = getattr(self, name)
                if value is not None and not 1 <= value <= self.dict_size:
                    raise ValueError(f"{name}={value} must lie in [1, dict_size={self.dict_size}]: "
                                     f"lower {name} or raise dict_size")
        if self.sparse_decode and self.activation not in ("topk", "batchtopk"):
            raise ValueError(f"sparse_decode needs a top-k activation (topk, batchtopk), not {self.activation!r}: "
                             "set sparse_decode=False")

    @property
    def k_aux_resolved(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_model // 2)

    @property
    def dec_init_norm_resolved(self) -> float:
        if self.dec_init_norm is not None:
            return self.dec_init_norm
        return activations.get(self.activation).default_dec_init_norm(self.n_checkpoints)


def default_lr(dict_size: int) -> float:
    """The training lr where a config leaves it 0: 2e-4 / sqrt(F / 2^14), the rule of sparsify and
    dictionary_learning (benchmarks/README.md, "Quality per step")."""
    return 2e-4 / math.sqrt(dict_size / 2 ** 14)
