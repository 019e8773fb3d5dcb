"""What every interchange format shares: a crosscoder as NumPy arrays, the way back to a
`Crosscoder`, export options, and the errors a format raises when it cannot hold a crosscoder.

Shapes: C checkpoints, D hidden size, F latents. `Weights` keeps the normalised space the
crosscoder was trained in (inputs multiplied by `scales_C` first); `folded` gives raw-space weights.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from crosscoder_jax.crosscoder import Crosscoder, Spec, load_crosscoder, save_crosscoder, score_norms


class InterchangeError(ValueError):
    """A format cannot hold this crosscoder, or a file is not what its format says."""


class ExportOptions(NamedTuple):
    """Options of `export_to`; a format reads the ones it documents and ignores the rest.

    scaled_codes: saelens topk only: with unequal decoder norms, allow a file whose codes are ours
      times each latent's raw-space decoder norm (SAELens's `fold_W_dec_norm` convention), since
      no SAELens topk file can give our unscaled codes with our selection.
    run_config: the training run's `config.json` (a dict), for fields such as lr and batch size.
    device: the paper's cfg `device` (its scripts move the crosscoder there: "cuda:0" as they run).
    """

    scaled_codes: bool = False
    run_config: Mapping[str, Any] | None = None
    device: str = "cuda:0"


class Weights(NamedTuple):
    """A crosscoder as float64 NumPy arrays in normalised space, with what its activation needs.

    theta: the batchtopk threshold on scores `relu(pre_i) * dn_i` (None: not batchtopk, or none yet).
    threshold_F: the jumprelu threshold on the pre-activation (None unless jumprelu).
    dn_F: the score weights `sum_c ||W_dec[i, c]||` (normalised space).
    """

    W_enc_CDF: np.ndarray
    b_enc_F: np.ndarray
    W_dec_FCD: np.ndarray
    b_dec_CD: np.ndarray
    scales_C: np.ndarray
    dn_F: np.ndarray
    spec: Spec
    checkpoints: list[str]
    meta: dict[str, Any]
    theta: float | None
    threshold_F: np.ndarray | None


def weights_of(cc: Crosscoder) -> Weights:
    """The arrays of a loaded crosscoder (`load_crosscoder` or `import_from`)."""
    p = {k: np.asarray(v, np.float64) for k, v in cc.params.items()}
    theta = None
    if cc.spec.activation == "batchtopk" and float(cc.act_state["threshold"]) >= 0:
        theta = float(cc.act_state["threshold"])
    threshold_F = np.exp(p["log_threshold"]) if cc.spec.activation == "jumprelu" else None
    return Weights(p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], np.asarray(cc.scales, np.float64),
                   np.asarray(score_norms(cc.params), np.float64), cc.spec, list(cc.checkpoints), dict(cc.meta),
                   theta, threshold_F)


def missing_threshold_source(w: Weights) -> str:
    """Where a batchtopk crosscoder without an inference threshold came from, for refusals: training
    always sets one (its EMA, or an estimate at the end of a short run), so it is an import or a file
    written through the API."""
    if "imported_from" in w.meta:
        return (f"it was imported from the {w.meta['imported_from']!r} format ({w.meta.get('source', '?')}), "
                "which held none")
    return ("it was written through the API (`save_crosscoder` with the threshold at -1), not by "
            "`launch.train`, which always sets one")


def folded(w: Weights) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw-space (W_enc [C, D, F], b_enc [F], W_dec [F, C, D], b_dec [C, D]), float64:
    `W_enc[c] *= s_c`, `W_dec[:, c] /= s_c`, `b_dec[c] /= s_c` (as `core.fold_scales`)."""
    s = w.scales_C
    return w.W_enc_CDF * s[:, None, None], w.b_enc_F, w.W_dec_FCD / s[None, :, None], w.b_dec_CD / s[:, None]


def pre_threshold_F(w: Weights) -> np.ndarray:
    """A per-latent threshold t [F] on the pre-activation with our rule `relu(pre) * (relu(pre) > t)`:
    jumprelu's own; batchtopk's `theta / dn_i` (`relu(pre_i) * dn_i > theta`), +inf where dn_i = 0
    (a score of 0 is never above theta >= 0)."""
    if w.threshold_F is not None:
        return w.threshold_F
    with np.errstate(divide="ignore"):
        return np.where(w.dn_F > 0, w.theta / np.where(w.dn_F > 0, w.dn_F, 1.0), np.inf)


def selection(w: Weights) -> str:
    """How our inference picks the nonzero codes: "relu" (l1), "threshold" (jumprelu, and batchtopk
    with its threshold: `relu(pre) > t_i`, see `pre_threshold_F`) or "topk" (topk, and batchtopk
    whose threshold was never estimated: each row's k largest scores `relu(pre_i) * dn_i`)."""
    act = w.spec.activation
    if act == "l1":
        return "relu"
    if act == "jumprelu" or (act == "batchtopk" and w.theta is not None):
        return "threshold"
    return "topk"


def unsupported(fmt: str, activation: str, why: str, fix: str) -> InterchangeError:
    """The error for an activation a format cannot express."""
    return InterchangeError(f"format {fmt!r} cannot hold a {activation!r} crosscoder: {why}. {fix}")


def model_and_layer(meta: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The LM name and layer recorded in crosscoder.safetensors metadata (JSON strings), if any."""
    def parse(v):
        if not isinstance(v, str):
            return v
        try:
            return json.loads(v)
        except ValueError:
            return v
    model, layer = parse(meta.get("model")), parse(meta.get("layer"))
    return (str(model) if model is not None else None), (int(layer) if isinstance(layer, (int, float)) else None)


def spec_for(C: int, D: int, F: int, activation: str, k: int | None, stored: Mapping[str, Any] | None = None,
             **fields: Any) -> Spec:
    """A Spec of these sizes and activation: the stored one (our metadata, when the file came from
    this library) with sizes and activation checked, else defaults plus `fields`."""
    base = dict(stored or {})
    if base and (base.get("n_checkpoints"), base.get("d_model"), base.get("dict_size")) != (C, D, F):
        base = {}  # the metadata does not describe these tensors (an edited file): trust the tensors
    names = {f.name for f in dataclasses.fields(Spec)}
    base = {key: v for key, v in base.items() if key in names}
    base.update({key: v for key, v in fields.items() if v is not None})
    base.update(n_checkpoints=C, d_model=D, dict_size=F, activation=activation, matmul_dtype="float32",
                sparse_decode=False)
    if k is not None:
        base["k"] = int(k)
    elif activation not in ("topk", "batchtopk"):
        base["k"] = min(int(base.get("k", 32)), F)
    return Spec(**base)


def build(W_enc_CDF: np.ndarray, b_enc_F: np.ndarray, W_dec_FCD: np.ndarray, b_dec_CD: np.ndarray,
          scales_C: Sequence[float], spec: Spec, checkpoints: Sequence[str], *, theta: float | None = None,
          threshold_F: np.ndarray | None = None, meta: Mapping[str, Any] | None = None,
          path: Path | None = None) -> Crosscoder:
    """A `Crosscoder` from normalised-space arrays, made the one way this library makes them: written
    with `save_crosscoder` (to `path`, a `crosscoder.safetensors`, or a temporary file) and read
    back with `load_crosscoder`.

    theta: batchtopk's threshold on scores; threshold_F [F]: jumprelu's on the pre-activation.
    """
    params = {"W_enc": np.asarray(W_enc_CDF, np.float32), "b_enc": np.asarray(b_enc_F, np.float32),
              "W_dec": np.asarray(W_dec_FCD, np.float32), "b_dec": np.asarray(b_dec_CD, np.float32)}
    act_state: dict[str, Any] = {}
    if spec.activation == "jumprelu":
        with np.errstate(divide="ignore"):
            params["log_threshold"] = np.log(np.maximum(np.asarray(threshold_F, np.float64), 0.0)).astype(np.float32)
    if spec.activation == "batchtopk":
        act_state["threshold"] = np.float32(-1.0 if theta is None else theta)
    checkpoints = list(checkpoints)
    if len(checkpoints) != spec.n_checkpoints:
        checkpoints = [f"checkpoint{c}" for c in range(spec.n_checkpoints)]
    scales = [float(s) for s in scales_C]
    if path is not None:
        save_crosscoder(path, params, act_state, spec, scales, checkpoints, extra_meta=dict(meta or {}))
        return load_crosscoder(path)
    with tempfile.TemporaryDirectory() as tmp:
        save_crosscoder(Path(tmp) / "crosscoder.safetensors", params, act_state, spec, scales, checkpoints,
                        extra_meta=dict(meta or {}))
        return load_crosscoder(Path(tmp) / "crosscoder.safetensors")


def write_json(path: Path, obj: Any) -> None:
    """Writes `obj` as indented JSON (atomically: a temporary file, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Writes NumPy `tensors` as a safetensors file with string `metadata` (atomically)."""
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, str(tmp), metadata=dict(metadata))
    tmp.replace(path)
