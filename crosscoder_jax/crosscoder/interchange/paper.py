"""The paper's own layout (Bayazit et al., github.com/bayazitdeniz/crosscoding-through-time).

Followed from that repository (commit df47cc7): `crosscoder.py` (`CrossCoder.save` writes
`torch.save(self.state_dict(), "<n>.pt")` and `json.dump(self.cfg, "<n>_cfg.json")`; `CrossCoder.load`
and `BatchTopKCrossCoder`), `train_crosscoder_revision.py` (the cfg fields, `default_cfg`),
`buffer.py` (`estimated_act_norm_list`: per checkpoint `sqrt(D) / E||a_c||`, multiplied into the
activations) and `attribution.py` / `test_crosscoder_revision.py` (`load_crosscoder` takes the largest
`<n>`, loads BatchTopKCrossCoder when `batch_topk_final` is set, and folds
`estimated_act_norm_list` into the weights with `fold_activation_scaling_factor`).

A directory (put it at their `workspace/logs/checkpoints/version_<v>`) with
  0.pt          torch state dict: W_enc [C, D, F], W_dec [F, C, D], b_enc [F], b_dec [C, D] (f32, in
                normalised space), and for batchtopk k [] i32, threshold [] f32
  0_cfg.json    their cfg: d_in, dict_size, n_models, estimated_act_norm_list (our scales), model_name,
                revision_list (checkpoint names joined by "-", by "_" for OLMo, as their scripts
                split them), hook_point (`blocks.{L+1}.hook_resid_pre`: their hook for the output of
                block L), batch_topk_final (k, or null for L1), ... (every key of their default_cfg)

Their BatchTopKCrossCoder in eval mode keeps `relu(pre) * (relu(pre) * sum_c ||W_dec[i, c]|| > threshold)`
on normalised inputs: our rule with our threshold. l1 and batchtopk (with its threshold) export;
topk and jumprelu do not exist there. The .pt is written without torch (`torch_zip`).

What their analysis scripts then do is theirs: attribution.py folds `estimated_act_norm_list` into a
copy of the weights and encodes raw activations with it without `.eval()`, so a BatchTopKCrossCoder
there runs its training-mode batch top-k on raw-space decoder norms (PAPER.md section 6) - as it
would on a file their own training wrote.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from crosscoder_jax.crosscoder import Crosscoder
from crosscoder_jax.crosscoder.interchange import torch_zip
from crosscoder_jax.crosscoder.interchange.base import (ExportOptions, InterchangeError, Weights,
                                                         missing_threshold_source, model_and_layer, spec_for,
                                                         unsupported, weights_of, write_json)
from crosscoder_jax.crosscoder.spec import default_lr

NAME = "paper"


def _separator(model_name: str | None) -> str:
    """How their scripts split `revision_list`: "_" for OLMo (whose revisions contain "-"), else "-"."""
    return "_" if "olmo" in (model_name or "").lower() else "-"


def paper_cfg(w: Weights, run: Mapping[str, Any], device: str) -> dict[str, Any]:
    """Their cfg (the keys of `default_cfg` in train_crosscoder_revision.py, in its order), filled
    from our spec and, where it knows them, the training run's config.json (`run`); what neither
    knows is null (seed 0: their constructor seeds torch with it)."""
    spec = w.spec
    C, D, F = w.W_enc_CDF.shape
    model, layer = model_and_layer(w.meta)
    revisions = _separator(model).join(w.checkpoints)
    steps = run.get("steps") or (int(w.meta["steps"]) if str(w.meta.get("steps", "")).isdigit() else None)
    batch = run.get("batch_size")
    btk = spec.activation == "batchtopk"
    return {
        "seed": int(run.get("seed", 0)), "batch_size": batch, "buffer_mult": None, "num_val_batches": None,
        "lr": (run.get("lr") or default_lr(F)) if run else None, "num_tokens": steps * batch if steps and batch else None,
        "l1_warmup_pct": run.get("sparsity_warmup_frac"), "l1_coeff": spec.sparsity_coeff,
        "beta1": run.get("b1"), "beta2": run.get("b2"), "d_in": D, "dict_size": F, "seq_len": None,
        "enc_dtype": "fp32", "model_name": model, "revision_list": revisions, "site": "resid_pre", "device": device,
        "model_batch_size": None, "log_every": None, "val_log_every": None, "save_every": None,
        "dec_init_norm": spec.dec_init_norm_resolved,
        "hook_point": f"blocks.{layer + 1}.hook_resid_pre" if layer is not None else None,
        "wandb_project": None, "wandb_entity": None,
        "wandb_name": Path(str(run["workdir"])).name if run.get("workdir") else None, "n_models": C,
        "model_type": "-".join(f"{model}/{r}" for r in w.checkpoints), "do_ce_eval": False, "nnsight": True,
        "remove_bos": True, "estimated_act_norm_list": [float(s) for s in w.scales_C],
        "batch_topk_final": spec.k if btk else None, "batch_topk_init": (spec.k_start or spec.k) if btk else None,
        "topk_annealing_steps": spec.k_anneal_steps if btk else None,
        "threshold_start_step": spec.threshold_start_step if btk else None,
        "threshold_beta": spec.threshold_beta if btk else None,
        "dead_feature_threshold": spec.dead_tokens, "auxk_alpha": spec.aux_coeff if btk else None,
    }


def export(cc: Crosscoder, out_dir: Path, opts: ExportOptions) -> list[Path]:
    """Writes `0.pt` + `0_cfg.json` (see the module docstring); returns their paths."""
    w = weights_of(cc)
    act = w.spec.activation
    if act in ("topk", "jumprelu"):
        raise unsupported(NAME, act, "the paper's code has CrossCoder (L1, ReLU codes) and BatchTopKCrossCoder only",
                          "Export it as 'saelens' (one checkpoint) or use crosscoder.safetensors")
    if act == "batchtopk" and w.theta is None:
        raise InterchangeError(f"format {NAME!r}: this batchtopk crosscoder has no inference threshold "
                               f"({missing_threshold_source(w)}); the paper's BatchTopKCrossCoder would keep every "
                               "positive code with its threshold -1. Set one (e.g. train it with `launch.train`)")
    state = collections.OrderedDict(  # the order of their state_dict(): parameters, then buffers
        W_enc=np.asarray(w.W_enc_CDF, np.float32), W_dec=np.asarray(w.W_dec_FCD, np.float32),
        b_enc=np.asarray(w.b_enc_F, np.float32), b_dec=np.asarray(w.b_dec_CD, np.float32))
    if act == "batchtopk":
        state["k"] = np.array(w.spec.k, np.int32)
        state["threshold"] = np.array(w.theta, np.float32)
    weights_path, cfg_path = out_dir / "0.pt", out_dir / "0_cfg.json"
    torch_zip.save_state_dict(weights_path, state)
    write_json(cfg_path, paper_cfg(w, dict(opts.run_config or {}), opts.device))
    return [weights_path, cfg_path]


def _files(path: Path) -> tuple[Path, Path]:
    """(<n>.pt, <n>_cfg.json): the given .pt, or in a directory the largest n (as their load_crosscoder)."""
    if path.is_dir():
        numbers = [int(p.stem) for p in path.glob("*.pt") if re.fullmatch(r"\d+", p.stem)]
        if not numbers:
            raise FileNotFoundError(f"{path} holds no <n>.pt: not a paper crosscoder directory")
        path = path / f"{max(numbers)}.pt"
    cfg = path.with_name(f"{path.stem}_cfg.json")
    if not path.exists() or not cfg.exists():
        raise FileNotFoundError(f"a paper crosscoder needs {path.name} and {cfg.name} in {path.parent}")
    return path, cfg


def load(path: Path) -> dict[str, Any]:
    """The arguments of `base.build` for the paper crosscoder at `path` (a version directory or a .pt)."""
    pt, cfg_path = _files(Path(path))
    cfg = json.loads(cfg_path.read_text())
    state = {k: np.asarray(v, np.float64) for k, v in torch_zip.load_state_dict(pt).items()}
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in state]
    if missing:
        raise InterchangeError(f"{pt} is not a paper crosscoder state dict: no {missing}")
    C, D, F = state["W_enc"].shape
    if state["W_dec"].shape != (F, C, D):
        raise InterchangeError(f"{pt}: W_dec {state['W_dec'].shape} does not match W_enc {state['W_enc'].shape}")
    scales = cfg.get("estimated_act_norm_list")
    if not scales or len(scales) != C:
        raise InterchangeError(f"{cfg_path} has no estimated_act_norm_list for its {C} checkpoints (the paper's "
                               "scripts then look the factors up in their constants.scaling_factor_dict); add the "
                               "list of per-checkpoint scales to the cfg")
    activation, k, theta, note = "l1", None, None, None
    if cfg.get("batch_topk_final") is not None:
        if "k" not in state or "threshold" not in state:
            raise InterchangeError(f"{pt}: cfg says BatchTopK (batch_topk_final) but the state has no k / threshold")
        theta = float(state["threshold"])
        if theta < 0:  # their eval-mode encode then keeps every positive code
            note = "BatchTopKCrossCoder with threshold -1 (never estimated): its eval-mode codes are ReLU codes"
        else:
            activation, k = "batchtopk", int(state["k"])
    init = cfg.get("batch_topk_init")
    spec = spec_for(C, D, F, activation, k, None, sparsity_coeff=cfg.get("l1_coeff"),
                    dec_init_norm=cfg.get("dec_init_norm"), dead_tokens=cfg.get("dead_feature_threshold"),
                    k_start=init if activation == "batchtopk" and init not in (None, k) else None,
                    k_anneal_steps=cfg.get("topk_annealing_steps") if activation == "batchtopk" else None,
                    threshold_beta=cfg.get("threshold_beta"), threshold_start_step=cfg.get("threshold_start_step"),
                    aux_coeff=cfg.get("auxk_alpha"))
    model = cfg.get("model_name")
    revisions = str(cfg.get("revision_list") or "").split(_separator(model))
    meta: dict[str, Any] = {"imported_from": NAME, "source": str(pt)}
    if model:
        meta["model"] = model
    hook = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", str(cfg.get("hook_point") or ""))
    if hook:
        meta["layer"] = int(hook.group(1)) - 1
    if note:
        meta["import_note"] = note
    return dict(W_enc_CDF=state["W_enc"], b_enc_F=state["b_enc"], W_dec_FCD=state["W_dec"], b_dec_CD=state["b_dec"],
                scales_C=np.asarray(scales, np.float64), spec=spec,
                checkpoints=revisions if len(revisions) == C else [], theta=theta, meta=meta)
