"""SAELens 6.x on-disk SAEs (`cfg.json` + `sae_weights.safetensors`), for C = 1 (a plain SAE).

Layout followed (sae_lens 6.54.12: `saes/sae.py` `SAE.save_model` / `SAE.load_from_disk` /
`SAEConfig.to_dict`, `loading/pretrained_sae_loaders.py` `sae_lens_disk_loader`, `constants.py`
file names, and the architectures `saes/standard_sae.py` "standard", `saes/topk_sae.py` "topk",
`saes/jumprelu_sae.py` "jumprelu"; `saes/batchtopk_sae.py` saves trained BatchTopK SAEs as
"jumprelu" with a per-latent threshold):

  sae_weights.safetensors  W_enc [D, F], b_enc [F], W_dec [F, D], b_dec [D] (f32), + threshold [F] (jumprelu)
  cfg.json                 d_in, d_sae, dtype, device, apply_b_dec_to_input, normalize_activations,
                           reshape_activations, metadata, architecture (+ k, rescale_acts_by_decoder_norm for topk)

`SAE.load_from_disk(DIR)` then encodes `hidden_pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc`
and: standard `relu(hidden_pre)`; jumprelu `relu(hidden_pre) * (hidden_pre > threshold)`; topk the k
largest `hidden_pre` (times `||W_dec_i||` with rescale_acts_by_decoder_norm) per token, then relu.

Mapping (raw-space weights, our input scale folded in; `apply_b_dec_to_input` false since our
encoder does not subtract b_dec; `normalize_activations` "none"): l1 -> standard; jumprelu and
batchtopk with its threshold -> jumprelu with our per-latent threshold on the pre-activation
(batchtopk: `theta / sum_c ||W_dec[i, c]||`, +inf for a latent with no decoder); both exact.
topk (and batchtopk before a threshold exists, whose codes are each row's top k) -> topk. Our
top-k ranks `relu(pre_i) * ||W_dec_i||` but returns `relu(pre_i)`, while a SAELens topk SAE
returns the very values it ranks, so it reproduces our codes only when all decoder rows have one
norm (then it is exact, `rescale_acts_by_decoder_norm` false). Otherwise export refuses, unless
`scaled_codes=True`: then the decoder norms are folded into the encoder (SAELens's
`fold_W_dec_norm`: unit-norm decoder rows), which keeps our selection and reconstructions exactly
while the codes become ours times each latent's raw-space decoder norm. Latents whose decoder is
zero never fire in ours, so their encoder column is zeroed and their bias set negative.
Our spec, scales and checkpoint names ride in `cfg.json` metadata (`crosscoder_jax`), with
`model_name` and `hook_name` (TransformerLens: the output of block L is `blocks.L.hook_resid_post`).

Import takes any SAELens standard / topk / jumprelu directory: `apply_b_dec_to_input` is folded into
b_enc, a topk SAE with `rescale_acts_by_decoder_norm` has its decoder norms folded (its codes are
then ours exactly); one without needs equal decoder norms (else it selects unweighted and is refused).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from crosscoder_jax.crosscoder import Crosscoder
from crosscoder_jax.crosscoder.interchange.base import (ExportOptions, InterchangeError, folded, model_and_layer,
                                                         pre_threshold_F, selection, spec_for, weights_of, write_json,
                                                         write_safetensors)

NAME = "saelens"
WEIGHTS, CONFIG = "sae_weights.safetensors", "cfg.json"  # sae_lens/constants.py
LAYOUT_VERSION = "6.54.12"  # the sae_lens release whose layout this follows (cfg.json metadata.sae_lens_version)
NORM_RTOL = 1e-5  # decoder rows count as one norm within this relative spread


def _equal_norms(n_F: np.ndarray) -> bool:
    return bool(n_F.size) and float(n_F.max() - n_F.min()) <= NORM_RTOL * float(n_F.max())


def _never_fires(n_F: np.ndarray, W_enc_DF: np.ndarray, b_enc_F: np.ndarray) -> np.ndarray:
    """Latents with no decoder whose pre-activation is a constant <= 0 (how `export` writes them):
    never among the positive codes, so their norm does not matter to the selection. [F] bool."""
    return (n_F == 0) & np.all(W_enc_DF == 0, axis=0) & (b_enc_F <= 0)


def export(cc: Crosscoder, out_dir: Path, opts: ExportOptions) -> list[Path]:
    """Writes `sae_weights.safetensors` + `cfg.json` (see the module docstring); returns their paths."""
    w = weights_of(cc)
    C, D, F = w.W_enc_CDF.shape
    if C != 1:
        raise InterchangeError(f"format {NAME!r} holds a plain SAE (one checkpoint), and this crosscoder reads C={C} "
                               f"checkpoints {w.checkpoints} into one shared code, which no single-checkpoint SAE "
                               "reproduces. Export it as 'dictionary_learning' or 'paper', or train an SAE on a "
                               "one-checkpoint store for SAELens")
    W_enc_CDF, b_enc_F, W_dec_FCD, b_dec_CD = folded(w)
    W_enc_DF, W_dec_FD, b_dec_D = W_enc_CDF[0], W_dec_FCD[:, 0, :], b_dec_CD[0]
    b_enc_F = b_enc_F.copy()
    rule = selection(w)
    codes = "ours"
    tensors: dict[str, np.ndarray] = {}
    arch_fields: dict[str, Any] = {}
    if rule == "relu":
        arch = "standard"
    elif rule == "threshold":
        arch = "jumprelu"
        tensors["threshold"] = pre_threshold_F(w)
    else:
        arch = "topk"
        arch_fields = {"k": int(w.spec.k), "rescale_acts_by_decoder_norm": False}
        n_F = np.linalg.norm(W_dec_FD, axis=-1)
        alive = w.dn_F > 0
        if not _equal_norms(n_F[alive]):
            if not opts.scaled_codes:
                raise InterchangeError(
                    f"format {NAME!r} cannot give this {w.spec.activation!r} SAE's codes: ours keep each token's k "
                    "largest relu(pre) x decoder norm but return relu(pre), while a SAELens topk SAE returns the "
                    "values it ranks, and these decoder norms differ (from "
                    f"{n_F[alive].min():.4g} to {n_F[alive].max():.4g}). Pass scaled_codes=True "
                    "(--config.scaled_codes=True) for a file with our selection and reconstructions whose codes "
                    "are ours times each latent's decoder norm (SAELens's fold_W_dec_norm convention)")
            scale_F = np.where(alive, n_F, 1.0)
            W_enc_DF, b_enc_F, W_dec_FD = W_enc_DF * scale_F, b_enc_F * scale_F, W_dec_FD / scale_F[:, None]
            codes = "ours times the raw-space decoder norm ||W_dec_i|| (decoder rows folded to unit norm)"
        W_enc_DF = np.where(alive[None, :], W_enc_DF, 0.0)  # no decoder: never fires in ours
        b_enc_F = np.where(alive, b_enc_F, -1.0)
    tensors.update(W_enc=W_enc_DF, b_enc=b_enc_F, W_dec=W_dec_FD, b_dec=b_dec_D)
    model, layer = model_and_layer(w.meta)
    metadata: dict[str, Any] = {"sae_lens_version": LAYOUT_VERSION, "sae_lens_training_version": None}
    if model is not None:
        metadata["model_name"] = model
    if layer is not None:
        metadata["hook_name"] = f"blocks.{layer}.hook_resid_post"
    if w.spec.activation == "batchtopk":
        metadata["training_architecture"] = "batchtopk"
    metadata["crosscoder_jax"] = {"spec": dataclasses.asdict(w.spec), "checkpoints": w.checkpoints,
                                  "scales": [float(s) for s in w.scales_C], "threshold": w.theta, "codes": codes}
    cfg = {"d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": False,
           "normalize_activations": "none", "reshape_activations": "none", "metadata": metadata,
           **arch_fields, "architecture": arch}
    weights_path, cfg_path = out_dir / WEIGHTS, out_dir / CONFIG
    write_safetensors(weights_path, {k: np.asarray(v, np.float32) for k, v in tensors.items()}, {})
    write_json(cfg_path, cfg)
    return [weights_path, cfg_path]


def _architecture(cfg: dict[str, Any]) -> str:
    """cfg.json's architecture; configs from before SAELens 6 name it through activation_fn
    (as `handle_pre_6_0_config`)."""
    if "architecture" in cfg:
        return str(cfg["architecture"])
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" and kwargs.get("k") is not None:
        cfg["k"] = kwargs["k"]
        return "topk"
    return "standard"


def load(path: Path) -> dict[str, Any]:
    """The arguments of `base.build` for the SAELens SAE directory at `path`."""
    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} is not a SAELens SAE directory: it needs {CONFIG} and {WEIGHTS} "
                                "(SAE.save_model / save_inference_model)")
    cfg = json.loads((path / CONFIG).read_text())
    arch = _architecture(cfg)
    if arch not in ("standard", "topk", "jumprelu"):
        raise InterchangeError(f"{path}: SAELens architecture {arch!r} has no counterpart here; supported: "
                               "standard, topk, jumprelu (a BatchTopK SAE saved for inference is jumprelu)")
    norm = cfg.get("normalize_activations") or "none"
    if norm not in ("none", "expected_average_only_in"):  # the latter is a training-time scale, folded on save
        raise InterchangeError(f"{path}: normalize_activations {norm!r} rescales each token at run time, which "
                               "a crosscoder's fixed per-checkpoint scale cannot express")
    state = {k: np.asarray(v, np.float64) for k, v in load_file(str(path / WEIGHTS)).items()}
    if "scaling_factor" in state and not np.allclose(state["scaling_factor"], 1.0):
        raise InterchangeError(f"{path}: a finetuning scaling_factor is not supported")
    W_enc_DF, b_enc_F, W_dec_FD, b_dec_D = (state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    D, F = W_enc_DF.shape
    if cfg.get("apply_b_dec_to_input", True):  # (x - b_dec) @ W_enc + b_enc
        b_enc_F = b_enc_F - b_dec_D @ W_enc_DF
    ours = (cfg.get("metadata") or {}).get("crosscoder_jax") or {}
    activation = {"standard": "l1", "topk": "topk", "jumprelu": "jumprelu"}[arch]
    k, theta, threshold_F = None, None, None
    if arch == "topk":
        k = int(cfg["k"])
        n_F = np.linalg.norm(W_dec_FD, axis=-1)
        if cfg.get("rescale_acts_by_decoder_norm", False):  # TopKSAE.fold_W_dec_norm: the same codes
            n_F = np.maximum(n_F, 1e-8)
            W_enc_DF, b_enc_F, W_dec_FD = W_enc_DF * n_F, b_enc_F * n_F, W_dec_FD / n_F[:, None]
        elif not _equal_norms(n_F[~_never_fires(n_F, W_enc_DF, b_enc_F)]):
            raise InterchangeError(f"{path}: this topk SAE ranks hidden_pre unweighted (rescale_acts_by_decoder_norm "
                                   f"false) and its decoder norms differ ({n_F.min():.4g} to {n_F.max():.4g}), while "
                                   "our topk ranks relu(pre) x decoder norm: no crosscoder here gives its codes")
    if arch == "jumprelu":  # relu(h) * (h > t) == h * (h > max(t, 0))
        threshold_F = np.maximum(state["threshold"], 0.0)
    s_C = np.asarray(ours.get("scales") or [1.0], np.float64)
    if s_C.shape != (1,):
        s_C = np.ones(1)
    W_enc_CDF, W_dec_FCD, b_dec_CD = W_enc_DF[None] / s_C[0], W_dec_FD[:, None, :] * s_C[0], b_dec_D[None] * s_C[0]
    stored = ours.get("spec") or {}
    if arch == "jumprelu" and stored.get("activation") == "batchtopk" and ours.get("threshold") is not None:
        dn_F = np.linalg.norm(W_dec_FCD, axis=-1).sum(-1)
        with np.errstate(divide="ignore"):
            expect = np.where(dn_F > 0, ours["threshold"] / np.where(dn_F > 0, dn_F, 1.0), np.inf)
        if np.allclose(threshold_F, expect, rtol=1e-5, atol=0) or np.array_equal(threshold_F, expect):
            activation, k, theta, threshold_F = "batchtopk", stored.get("k"), float(ours["threshold"]), None
    spec = spec_for(1, D, F, activation, k, stored)
    meta: dict[str, Any] = {"imported_from": NAME, "source": str(path)}
    md = cfg.get("metadata") or {}
    if md.get("model_name"):
        meta["model"] = md["model_name"]
    hook = str(md.get("hook_name") or "")
    if hook.startswith("blocks.") and hook.endswith(".hook_resid_post") and hook.split(".")[1].isdigit():
        meta["layer"] = int(hook.split(".")[1])
    return dict(W_enc_CDF=W_enc_CDF, b_enc_F=b_enc_F, W_dec_FCD=W_dec_FCD, b_dec_CD=b_dec_CD, scales_C=s_C, spec=spec,
                checkpoints=ours.get("checkpoints") or [], theta=theta, threshold_F=threshold_F, meta=meta)
