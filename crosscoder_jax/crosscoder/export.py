"""`crosscoder.safetensors`: the trained crosscoder in raw activation space, and its loader.

Tensors `W_enc [C, D, F]`, `b_enc [F]`, `W_dec [F, C, D]`, `b_dec [C, D]` with the input scales
folded in (the shapes of dictionary_learning's crosscoders and of the paper's code), plus
`threshold [F]` for batchtopk and jumprelu: a per-latent threshold on the pre-activation, so
`f_i = relu(pre_i) * (relu(pre_i) > threshold_i)` at inference. Metadata (JSON strings): format,
activation, k, the scalar batchtopk threshold, checkpoint names, scales and the full `Spec`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

from crosscoder_jax.crosscoder import activations, core
from crosscoder_jax.crosscoder.spec import Spec

FORMAT = "crosscoder_jax.crosscoder/1"


class Crosscoder(NamedTuple):
    """A loaded crosscoder: normalised-space params, the activation state, spec, scales [C], meta."""

    params: dict[str, jax.Array]
    act_state: dict[str, jax.Array]
    spec: Spec
    scales: np.ndarray
    checkpoints: list[str]
    meta: dict[str, Any]

    def encode(self, a_BCD: jax.Array) -> jax.Array:
        """Inference codes f [B, F] of raw activations a [B, C, D]."""
        return core.encode(self.params, self._scaled(a_BCD), self.spec, self.act_state)

    def reconstruct(self, a_BCD: jax.Array) -> jax.Array:
        """Reconstruction of raw activations, in raw space [B, C, D]."""
        xhat = core.reconstruct(self.params, self._scaled(a_BCD), self.spec, self.act_state)
        return xhat / jnp.asarray(self.scales, jnp.float32)[None, :, None]

    def folded(self) -> dict[str, jax.Array]:
        """Raw-space weights (input scaling folded in)."""
        return core.fold_scales(self.params, self.scales)

    def _scaled(self, a_BCD):
        return jnp.asarray(a_BCD, jnp.float32) * jnp.asarray(self.scales, jnp.float32)[None, :, None]


def save_crosscoder(path: str | os.PathLike, params: Mapping[str, jax.Array], act_state: Mapping[str, jax.Array],
                    spec: Spec, scales: Sequence[float], checkpoints: Sequence[str],
                    extra_meta: Mapping[str, Any] | None = None) -> None:
    """Writes normalised-space `params` as raw-space tensors with metadata (atomically)."""
    params = {k: jnp.asarray(v) for k, v in params.items()}
    act = activations.get(spec.activation)
    dn_F = jnp.sum(core.decoder_norms(params), axis=-1)
    folded = core.fold_scales(params, jnp.asarray(scales))
    tensors = {k: np.asarray(jax.device_get(folded[k]), np.float32) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    tensors.update({k: np.asarray(jax.device_get(v), np.float32)
                    for k, v in act.export(params, act_state, spec, dn_F).items()})
    meta = {
        "format": FORMAT,
        "activation": spec.activation,
        "k": str(spec.k),
        "threshold": json.dumps(float(act_state["threshold"]) if "threshold" in act_state else None),
        "checkpoints": json.dumps(list(checkpoints)),
        "scales": json.dumps([float(s) for s in np.asarray(scales)]),
        "spec": json.dumps(dataclasses.asdict(spec)),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_meta or {}).items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_crosscoder(path: str | os.PathLike, matmul_dtype: str = "float32") -> Crosscoder:
    """Reads `crosscoder.safetensors` back (see the module docstring). Inference runs float32
    matmuls unless `matmul_dtype="bfloat16"` (bf16 operands are a training-speed choice; the spec
    in the metadata keeps what training used)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no crosscoder at {path}: train one with `python -m launch.train`")
    with safe_open(str(path), framework="numpy") as fh:
        meta = dict(fh.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, this version reads {FORMAT!r}")
    tensors = load_file(str(path))
    spec = dataclasses.replace(Spec(**json.loads(meta["spec"])), matmul_dtype=matmul_dtype, sparse_decode=False)
    scales = np.asarray(json.loads(meta["scales"]), np.float64)
    params = core.unfold_scales({k: jnp.asarray(tensors[k]) for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
                                      scales)
    act_state = dict(activations.get(spec.activation).init_state(spec))
    if spec.activation == "jumprelu":
        params["log_threshold"] = jnp.log(jnp.asarray(tensors["threshold"]))
    if "threshold" in act_state:
        theta = json.loads(meta["threshold"])
        act_state["threshold"] = jnp.float32(-1.0 if theta is None else theta)
    return Crosscoder(params, act_state, spec, scales, json.loads(meta["checkpoints"]), meta)
