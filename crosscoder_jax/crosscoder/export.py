"""`crosscoder.safetensors`: the trained crosscoder in raw activation space, and its loader.

Tensors `W_enc [C, D, F]`, `b_enc [F]`, `W_dec [F, C, D]`, `b_dec [C, D]` with the input scales
folded in (the shapes of dictionary_learning's crosscoders and of the paper's code), plus
`decoder_norm_sum [F]` (the normalised-space `sum_c ||W_dec[i, c]||` that weights top-k scores:
folding the scales changes the decoder norms, not the selection), and `threshold [F]` for
jumprelu and for batchtopk once it has one: a per-latent threshold on the pre-activation, so
`f_i = relu(pre_i) * (relu(pre_i) > threshold_i)` at inference. Metadata (JSON strings): format,
activation, k, the scalar batchtopk threshold, `inference` (the rule in words: threshold, per-token
top-k, or relu), checkpoint names, scales and the full `Spec`.
"""

from __future__ import annotations

import dataclasses
import functools
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

    def encode_rows(self, a_NCD: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Codes [N, F] (float32 NumPy) of many raw rows, `batch` at a time through one compiled
        program (the last batch padded)."""
        enc = _jitted_encode(self.spec)
        F, N = self.spec.dict_size, len(a_NCD)
        out = np.zeros((N, F), np.float32)
        scales = jnp.asarray(self.scales, jnp.float32)
        for a in range(0, N, batch):
            x = np.asarray(a_NCD[a:a + batch], np.float32)
            m = len(x)
            if m < batch:
                x = np.concatenate([x, np.zeros((batch - m,) + x.shape[1:], np.float32)])
            out[a:a + m] = np.asarray(enc(self.params, self.act_state, scales, jnp.asarray(x)))[:m]
        return out

    def reconstruct(self, a_BCD: jax.Array) -> jax.Array:
        """Reconstruction of raw activations, in raw space [B, C, D]."""
        xhat = core.reconstruct(self.params, self._scaled(a_BCD), self.spec, self.act_state)
        return xhat / jnp.asarray(self.scales, jnp.float32)[None, :, None]

    def folded(self) -> dict[str, jax.Array]:
        """Raw-space weights (input scaling folded in)."""
        return core.fold_scales(self.params, self.scales)

    def _scaled(self, a_BCD):
        return jnp.asarray(a_BCD, jnp.float32) * jnp.asarray(self.scales, jnp.float32)[None, :, None]


@functools.lru_cache(maxsize=16)
def _jitted_encode(spec: Spec):
    return jax.jit(lambda p, s, scales, x: core.encode(p, x * scales[None, :, None], spec, s))


def save_crosscoder(path: str | os.PathLike, params: Mapping[str, jax.Array], act_state: Mapping[str, jax.Array],
                    spec: Spec, scales: Sequence[float], checkpoints: Sequence[str],
                    extra_meta: Mapping[str, Any] | None = None) -> None:
    """Writes normalised-space `params` as raw-space tensors with metadata (atomically)."""
    params = {k: jnp.asarray(v) for k, v in params.items()}
    act = activations.get(spec.activation)
    dn_F = jnp.sum(core.decoder_norms(params), axis=-1)
    folded = core.fold_scales(params, jnp.asarray(scales))
    tensors = {k: np.asarray(jax.device_get(folded[k]), np.float32)
               for k in ("W_enc", "b_enc", "W_dec", "b_dec", core.SCORE_NORMS)}
    tensors.update({k: np.asarray(jax.device_get(v), np.float32)
                    for k, v in act.export(params, act_state, spec, dn_F).items()})
    meta = {
        "format": FORMAT,
        "activation": spec.activation,
        "k": str(spec.k),
        "threshold": json.dumps(float(act_state["threshold"]) if "threshold" in act_state else None),
        "inference": _inference_rule(spec, act_state),
        "checkpoints": json.dumps(list(checkpoints)),
        "scales": json.dumps([float(s) for s in np.asarray(scales)]),
        "spec": json.dumps(dataclasses.asdict(spec)),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_meta or {}).items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a plain file others may read, as open() would make it
    os.replace(tmp, path)


def _inference_rule(spec: Spec, act_state: Mapping[str, jax.Array]) -> str:
    """How codes are computed from the file's tensors, for readers outside this library."""
    theta = float(act_state["threshold"]) if "threshold" in act_state else None
    if spec.activation == "jumprelu" or (spec.activation == "batchtopk" and theta is not None and theta >= 0):
        return "threshold: f = relu(pre) * (relu(pre) > threshold)"
    if spec.activation in ("topk", "batchtopk"):
        return "per-token top-k: keep each row's k largest relu(pre) * decoder_norm_sum"
    return "relu: f = relu(pre)"


def _check_tensors(path: Path, tensors: Mapping[str, np.ndarray], spec: Spec, scales: np.ndarray,
                   checkpoints: Sequence[str]) -> None:
    """Every tensor's shape and dtype against the file's own spec (C, D, F), so a damaged or foreign
    file fails here, naming the tensor, rather than later in a broadcast."""
    C, D, F = spec.n_checkpoints, spec.d_model, spec.dict_size
    want = {"W_enc": (C, D, F), "b_enc": (F,), "W_dec": (F, C, D), "b_dec": (C, D), core.SCORE_NORMS: (F,)}
    if spec.activation == "jumprelu" or "threshold" in tensors:  # batchtopk's is optional
        want["threshold"] = (F,)
    problems = [f"tensor {name} is missing" for name in want if name not in tensors]
    for name, shape in want.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            problems.append(f"tensor {name} has shape {list(tensors[name].shape)}, the spec needs {list(shape)}")
        if name in tensors and tensors[name].dtype != np.float32:
            problems.append(f"tensor {name} has dtype {tensors[name].dtype}, the format stores float32")
    if len(scales) != C or len(checkpoints) != C:
        problems.append(f"{len(scales)} scales and {len(checkpoints)} checkpoint names for C = {C}")
    if problems:
        raise ValueError(f"{path} does not match its own spec (C {C}, D {D}, F {F}, {spec.activation}): "
                         + "; ".join(problems) + ". The file is damaged or was written by other code: export it "
                         "again (rerun the training command in its workdir, or the import that wrote it).")


def load_crosscoder(path: str | os.PathLike, matmul_dtype: str = "float32") -> Crosscoder:
    """Reads `crosscoder.safetensors` back (see the module docstring). Inference runs float32
    matmuls unless `matmul_dtype="bfloat16"` (bf16 operands are a training-speed choice; the spec
    in the metadata keeps what training used)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no crosscoder at {path}: train one with `python -m launch.train`")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own types for truncated or garbled files
        raise ValueError(f"{path} cannot be read as a crosscoder ({type(e).__name__}: {e}); it may be truncated: "
                         "rerun the training command in its workdir to write it again") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, this version reads {FORMAT!r}")
    spec = dataclasses.replace(Spec(**json.loads(meta["spec"])), matmul_dtype=matmul_dtype, sparse_decode=False)
    scales = np.asarray(json.loads(meta["scales"]), np.float64)
    _check_tensors(path, tensors, spec, scales, json.loads(meta["checkpoints"]))
    params = core.unfold_scales({k: jnp.asarray(tensors[k]) for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
                                      scales)
    act_state = dict(activations.get(spec.activation).init_state(spec))
    if spec.activation == "jumprelu":
        params["log_threshold"] = jnp.log(jnp.asarray(tensors["threshold"]))
    if "threshold" in act_state:
        theta = json.loads(meta["threshold"])
        act_state["threshold"] = jnp.float32(-1.0 if theta is None else theta)
    return Crosscoder(params, act_state, spec, scales, json.loads(meta["checkpoints"]), meta)
