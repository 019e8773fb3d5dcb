"""One task, end to end: IE of every latent per checkpoint, selection, RelIE / RelDec, classes,
lifecycles (the paper's labels, and onset / peak / offset over N snapshots, causal and from decoder
norms, with their lag), the ablation validation, and (optionally) IG and AtP against exact patching.

`analyze_task` returns a JSON-ready summary and one row per selected latent; `write_outputs`
writes them as `<task>.csv` and `<task>.json`.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import attribution, relie, timeline
from crosscoder_jax.crosscoder.export import Crosscoder
from crosscoder_jax.data.tasks import Prompts, task_metrics


def _validate(lms, cc, prompts, layer, ie_raw_CF, *, method, steps, patch, eps_patch, drop_bos, batch_size,
              top) -> dict[str, Any]:
    """Spearman, over the `top` latents by |IE| of each checkpoint, of the run's own IE (its method,
    patch state and eps_patch; position sums, no threshold) and of AtP with the same settings,
    against exact patching to the same patch state (error terms kept clean). The exact effects of a
    checkpoint's latents are computed in that checkpoint only."""
    latents_CK = np.argsort(-np.abs(ie_raw_CF), axis=1)[:, :top]
    exact_CK = attribution.exact_effects(lms, cc, prompts, layer, latents_CK, patch=patch, drop_bos=drop_bos,
                                         batch_size=batch_size)
    rows = np.arange(len(lms))[:, None]
    out = {"top": top, "method": method, "patch": patch, "eps_patch": eps_patch,
           f"{method}_vs_exact": [relie.spearman(a, b) for a, b in zip(ie_raw_CF[rows, latents_CK], exact_CK)]}
    if method != "atp":
        atp = attribution.attribute(lms, cc, prompts, layer, method="atp", patch=patch, eps_patch=eps_patch,
                                    threshold=0.0, drop_bos=drop_bos, batch_size=batch_size)["ie_raw"]
        out["atp_vs_exact"] = [relie.spearman(a, b) for a, b in zip(atp[rows, latents_CK], exact_CK)]
    return out


def analyze_task(lms: Sequence, names: Sequence[str], cc: Crosscoder, prompts: Prompts, layer: int, *,
                 method: str = "ig", steps: int = 10, patch: str = "zero", eps_patch: str = "clean",
                 threshold: float = 0.1, reduce: str = "mean", top: int = 10, drop_bos: bool = True,
                 batch_size: int = 32, validate_top: int = 0, show_progress: bool = False,
                 tau: float = 0.3) -> dict[str, Any]:
    """Everything the paper reports for one task (see the module docstring)."""
    t0 = time.time()
    res = attribution.attribute(lms, cc, prompts, layer, method=method, steps=steps, patch=patch, eps_patch=eps_patch,
                                threshold=threshold, reduce=reduce, drop_bos=drop_bos, batch_size=batch_size,
                                show_progress=show_progress)
    t_ie = time.time() - t0
    ie = res["ie"]
    chosen = relie.select_top(ie, top)
    summary: dict[str, Any] = {
        "n_pairs": prompts.n, "method": method, "steps": steps, "patch": patch, "eps_patch": eps_patch,
        "threshold": threshold, "reduce": reduce, "top": top, "ie_seconds": t_ie,
        "checkpoints": list(names), "clean_metric": res["metric"].tolist(),
        "task": {n: task_metrics(lm, prompts) for n, lm in zip(names, lms)},
    }
    rows: list[dict[str, Any]] = []
    if len(chosen):
        ie_k = ie[:, chosen]
        rel = relie.rel_ie(ie_k)
        rdec = relie.rel_dec(np.asarray(cc.params["W_dec"]), chosen)
        decnorm = np.linalg.norm(np.asarray(cc.params["W_dec"], np.float64)[chosen], axis=-1).T  # [C, K]
        classes = relie.classify(rel, names)
        life = relie.lifecycles(ie_k, names)
        lines = timeline.latent_timelines(ie_k, decnorm, names, tau=tau)
        delta = attribution.exact_effects(lms, cc, prompts, layer, chosen, drop_bos=drop_bos, batch_size=batch_size)
        summary["ablation"] = relie.ablation_correlations(delta, rel, rdec)
        summary["classes"] = {k: classes.count(k) for k in sorted(set(classes))}
        summary["lifecycles"] = {k: [l["label"] for l in life].count(k) for k in sorted({l["label"] for l in life})}
        summary["timeline"] = {"tau": tau, "steps": timeline.steps_of(names),
                               "causal_onsets_by_tau": timeline.onset_counts(ie_k, names),
                               "repr_onsets_by_tau": timeline.onset_counts(decnorm, names),
                               "lag": timeline.lag_summary(lines)}
        for k, latent in enumerate(chosen):
            row: dict[str, Any] = {"latent": int(latent)}
            row.update({f"ie_{n}": float(ie_k[c, k]) for c, n in enumerate(names)})
            row.update({f"relie_{n}": float(rel[c, k]) for c, n in enumerate(names)})
            row.update({f"reldec_{n}": float(rdec[c, k]) for c, n in enumerate(names)})
            row.update({f"ablation_{n}": float(delta[c, k]) for c, n in enumerate(names)})
            row.update({f"decnorm_{n}": float(decnorm[c, k]) for c, n in enumerate(names)})
            row.update({"class": classes[k], "lifecycle": life[k]["label"], "emerges": life[k]["emerges"],
                        "discontinued": life[k]["discontinued"], **lines[k]})
            rows.append(row)
    else:
        summary["note"] = f"no latent has an IE above the threshold {threshold} in any checkpoint"
    if validate_top:
        summary["validation"] = _validate(lms, cc, prompts, layer, res["ie_raw"], method=method, steps=steps,
                                          patch=patch, eps_patch=eps_patch, drop_bos=drop_bos,
                                          batch_size=batch_size, top=validate_top)
    summary["ie_all"] = {n: ie[c].tolist() for c, n in enumerate(names)}
    return {"summary": summary, "rows": rows}


def write_outputs(result: dict[str, Any], out_dir: str | Path, task: str) -> tuple[Path, Path]:
    """`<out_dir>/<task>.csv` (one row per selected latent) and `<task>.json` (the summary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{task}.csv", out_dir / f"{task}.json"
    rows = result["rows"]
    with open(csv_path, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    json_path.write_text(json.dumps(result["summary"], indent=1))
    return csv_path, json_path
