"""The crosscoders of dictionary_learning's science-of-finetuning fork (`CrossCoder`, `BatchTopKCrossCoder`).

Layout followed (github.com/science-of-finetuning/dictionary_learning, commit 173f7fa,
`dictionary_learning/dictionary.py`: `NormalizableMixin`, `CrossCoderEncoder`, `CrossCoderDecoder`,
`CrossCoder`, `BatchTopKCrossCoder`, their `from_pretrained`; written as huggingface_hub's
`PyTorchModelHubMixin.save_pretrained` writes it): a directory with

  model.safetensors  target_rms [] f32, activation_mean [C, D] f32, activation_std [C, D] f32,
                     activation_global_scale [C] f32, code_normalization_id [] i64,
                     encoder.weight [C, D, F], encoder.bias [F], decoder.weight [C, F, D],
                     decoder.bias [C, D] (f32), and for BatchTopKCrossCoder k [] i32, threshold [] f32
  config.json        the constructor's arguments, exactly the keys `save_pretrained` writes for
                     the class (`BatchTopKCrossCoder` forwards every key to `__init__`, so no others)

which `BatchTopKCrossCoder.from_pretrained(DIR, from_hub=True)` (l1: `CrossCoder`) loads. The
fork's trainers also save `model_final.pt` (`torch.save(state_dict)`, the same keys), which
`import_from` reads too.

Mapping. l1 -> `CrossCoder` (ReLU codes); batchtopk with its threshold -> `BatchTopKCrossCoder`,
whose inference codes are `relu(pre) * (relu(pre) * sum_c ||decoder.weight[c, i]|| > threshold)`
with `code_normalization` CROSSCODER: our rule. Weights stay in our normalised space and our input
scales become the fork's normaliser (`keep_relative_variance=True`, its default:
`x_norm = (x - activation_mean) * activation_global_scale[c]`, decoded as
`x / (activation_global_scale[c] + 1e-8) + activation_mean`): mean 0, global scale `s_c`, and
`activation_std` consistent with it (`target_rms / sqrt(sum_d std^2 + 1e-8) = s_c`). So the decoder
norms the fork sums are ours, and the scalar threshold is ours unchanged; reconstructions differ
from ours by the fork's `+ 1e-8` (relative 1e-8 / s_c). Our spec, checkpoint names and scales ride
in the safetensors header (`crosscoder_jax`), which torch's loader ignores. topk and jumprelu have
no counterpart (refused, with the reason); nor has batchtopk before its threshold exists.

Import also takes the fork's other normalisers exactly: a nonzero `activation_mean` is folded into
the biases (`b_enc -= sum_c s_c mean_c @ W_enc[c]`, `b_dec += s_c mean_c`), and a
BatchTopKCrossCoder whose threshold is still -1 encodes with ReLU in the fork, so it imports as l1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from crosscoder_jax.crosscoder import Crosscoder
from crosscoder_jax.crosscoder.interchange import torch_zip
from crosscoder_jax.crosscoder.interchange.base import (ExportOptions, InterchangeError, missing_threshold_source,
                                                         model_and_layer, spec_for, unsupported, weights_of,
                                                         write_json, write_safetensors)

NAME = "dictionary_learning"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
CODE_NORMALIZATION = {"CROSSCODER": 1, "SAE": 2, "MIXED": 3, "NONE": 4, "DECOUPLED": 5}  # the fork's enum values
_EPS = 1e-8  # NormalizableMixin's epsilon in the global scale and in denormalisation


def export(cc: Crosscoder, out_dir: Path, opts: ExportOptions) -> list[Path]:
    """Writes `model.safetensors` + `config.json` (see the module docstring); returns their paths."""
    w = weights_of(cc)
    act = w.spec.activation
    if act == "topk":
        raise unsupported(NAME, act, "the fork's crosscoders are CrossCoder (ReLU) and BatchTopKCrossCoder "
                          "(a threshold, or a top-k over the whole batch), none keeps a per-token top k",
                          "Export it as 'saelens' (one checkpoint) or use crosscoder.safetensors")
    if act == "jumprelu":
        raise unsupported(NAME, act, "BatchTopKCrossCoder's threshold is one scalar on relu(pre) x decoder-norm "
                          "sum, so per-latent thresholds would have to live in the decoder norms, which also "
                          "scale the reconstruction", "Export it as 'saelens' (one checkpoint) instead")
    if act == "batchtopk" and w.theta is None:
        raise InterchangeError(f"format {NAME!r}: this batchtopk crosscoder has no inference threshold "
                               f"({missing_threshold_source(w)}), so its codes are each row's top k, which the "
                               "fork cannot express (its threshold -1 keeps every positive code). Set one "
                               "(e.g. train it with `launch.train`), or export it as 'saelens' (one checkpoint)")
    C, D, F = w.W_enc_CDF.shape
    s_C = w.scales_C
    std_CD = np.broadcast_to(np.sqrt(np.maximum(1.0 / s_C**2 - _EPS, 0.0) / D)[:, None], (C, D))
    tensors: dict[str, np.ndarray] = {
        "target_rms": np.array(1.0, np.float32),
        "activation_mean": np.zeros((C, D), np.float32),
        "activation_std": np.asarray(std_CD, np.float32),
        "activation_global_scale": np.asarray(s_C, np.float32),
        "code_normalization_id": np.array(CODE_NORMALIZATION["CROSSCODER"], np.int64),
        "encoder.weight": np.asarray(w.W_enc_CDF, np.float32),
        "encoder.bias": np.asarray(w.b_enc_F, np.float32),
        "decoder.weight": np.ascontiguousarray(np.transpose(w.W_dec_FCD, (1, 0, 2)), np.float32),
        "decoder.bias": np.asarray(w.b_dec_CD, np.float32),
    }
    if act == "batchtopk":
        tensors["k"] = np.array(w.spec.k, np.int32)
        tensors["threshold"] = np.array(w.theta, np.float32)
        config: dict[str, Any] = {"activation_dim": D, "activation_mean": None, "activation_std": None,
                                  "code_normalization": "CROSSCODER", "dict_size": F, "k": w.spec.k,
                                  "norm_init_scale": 1.0, "num_layers": C, "target_rms": 1.0}
    else:
        config = {"activation_dim": D, "activation_mean": None, "activation_std": None,
                  "code_normalization": "CROSSCODER", "code_normalization_alpha_cc": 0.1,
                  "code_normalization_alpha_sae": 1.0, "dict_size": F, "encoder_layers": None,
                  "init_with_transpose": True, "latent_processor": None, "norm_init_scale": None,
                  "num_decoder_layers": None, "num_layers": C, "same_init_for_all_layers": False, "target_rms": None}
    model, layer = model_and_layer(w.meta)
    ours = {"spec": dataclasses.asdict(w.spec), "checkpoints": w.checkpoints, "scales": [float(s) for s in s_C],
            "model": model, "layer": layer, "class": "BatchTopKCrossCoder" if act == "batchtopk" else "CrossCoder"}
    weights_path, config_path = out_dir / WEIGHTS, out_dir / CONFIG
    write_safetensors(weights_path, tensors, {"crosscoder_jax": json.dumps(ours)})
    write_json(config_path, config)
    return [weights_path, config_path]


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """(state dict, config.json or {}, our header metadata or {}) from a directory, a .safetensors
    file or a torch .pt state dict."""
    config: dict[str, Any] = {}
    if path.is_dir():
        if (path / CONFIG).exists():
            config = json.loads((path / CONFIG).read_text())
        if not (path / WEIGHTS).exists():
            raise InterchangeError(f"{path} has no {WEIGHTS}: a dictionary_learning crosscoder directory holds "
                                   f"{WEIGHTS} and {CONFIG} (save_pretrained); for a trainer's .pt pass the file")
        path = path / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no dictionary_learning crosscoder at {path}")
    header: dict[str, Any] = {}
    if path.suffix == ".pt":
        state = torch_zip.load_state_dict(path)
    else:
        state = load_file(str(path))
        with safe_open(str(path), framework="numpy") as fh:
            header = json.loads((fh.metadata() or {}).get("crosscoder_jax", "{}"))
    if "encoder.weight" not in state:  # saved under torch.compile: keys carry "_orig_mod." (as the fork strips)
        state = {k.split("_orig_mod.")[-1]: v for k, v in state.items()}
    return state, config, header


def load(path: Path) -> dict[str, Any]:
    """The arguments of `base.build` for the crosscoder at `path` (a save_pretrained directory, a
    .safetensors file or a trainer's .pt)."""
    state, config, header = _read(Path(path))
    missing = [k for k in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias") if k not in state]
    if missing:
        raise InterchangeError(f"{path} is not a dictionary_learning crosscoder: no {missing}")
    f64 = {k: np.asarray(v, np.float64) for k, v in state.items()}
    W_enc_CDF, b_enc_F, W_dec_CFD, b_dec_CD = (f64[k] for k in ("encoder.weight", "encoder.bias", "decoder.weight",
                                                                 "decoder.bias"))
    C, D, F = W_enc_CDF.shape
    if W_dec_CFD.shape != (C, F, D) or b_enc_F.shape != (F,) or b_dec_CD.shape != (C, D):
        raise InterchangeError(f"{path}: decoder.weight {W_dec_CFD.shape}, encoder.bias {b_enc_F.shape}, decoder.bias "
                               f"{b_dec_CD.shape} do not match encoder.weight {W_enc_CDF.shape} as [C, F, D], [F], "
                               "[C, D] (a crosscoder with encoder_layers or num_decoder_layers of its own is not "
                               "one shared code over the same checkpoints, and is not supported)")
    mean_CD, std_CD = f64.get("activation_mean"), f64.get("activation_std")
    if mean_CD is not None and std_CD is not None and not (np.isnan(mean_CD).any() or np.isnan(std_CD).any()):
        s_C = f64.get("activation_global_scale")
        if s_C is None:
            s_C = float(f64.get("target_rms", 1.0)) / np.sqrt(np.sum(std_CD**2, axis=-1) + _EPS)
        # (x - m) s W + b = x s W + (b - sum_c s_c m_c W_c);  (z + b_dec) / s + m = (z + b_dec + s m) / s
        b_enc_F = b_enc_F - np.einsum("cd,cdf->f", mean_CD * s_C[:, None], W_enc_CDF)
        b_dec_CD = b_dec_CD + s_C[:, None] * mean_CD
    else:
        s_C = np.ones(C)
    activation, k, theta, note = "l1", None, None, None
    if "k" in state and "threshold" in state:
        norm = config.get("code_normalization")
        if norm is None:  # the state's id (what from_pretrained of a .pt uses), else the fork's default
            ids = {v: n for n, v in CODE_NORMALIZATION.items()}
            norm = ids.get(int(state.get("code_normalization_id", CODE_NORMALIZATION["CROSSCODER"])), "?")
        norm = str(norm).upper()
        if np.ndim(state["threshold"]) != 0 or norm == "DECOUPLED":
            raise InterchangeError(f"{path}: a DECOUPLED BatchTopKCrossCoder (one code per layer) is not one shared "
                                   "code: not supported")
        if norm != "CROSSCODER" and not (C == 1 and norm == "SAE"):
            raise InterchangeError(f"{path}: BatchTopKCrossCoder with code_normalization {norm} selects on other "
                                   "decoder-norm weights than ours (sum_c ||W_dec[i, c]||): only CROSSCODER imports")
        theta = float(state["threshold"])
        if theta < 0:  # the fork's encode keeps relu(pre) * (score > -1): every positive code
            note = "BatchTopKCrossCoder with threshold -1 (never estimated): its codes are ReLU codes"
        else:
            activation, k = "batchtopk", int(state["k"])
    spec = spec_for(C, D, F, activation, k, header.get("spec"))
    meta = {"imported_from": NAME, "source": str(path)}
    if header.get("model") is not None:
        meta["model"] = header["model"]
    if header.get("layer") is not None:
        meta["layer"] = header["layer"]
    if note:
        meta["import_note"] = note
    return dict(W_enc_CDF=W_enc_CDF, b_enc_F=b_enc_F, W_dec_FCD=np.transpose(W_dec_CFD, (1, 0, 2)), b_dec_CD=b_dec_CD,
                scales_C=s_C, spec=spec, checkpoints=header.get("checkpoints") or [], theta=theta, meta=meta)
