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

from crosscoder_jax.analysis import attribution, relie, timeline, uncertainty
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


# the fields of configs/attribute.py that are `analyze_task` options of the same name
OPTIONS = ("method", "steps", "patch", "eps_patch", "threshold", "reduce", "top", "batch_size", "tau", "n_boot")


def options(config) -> dict[str, Any]:
    """`analyze_task` keyword arguments from an attribute config."""
    return {k: config[k] for k in OPTIONS}


def analyze_task(lms: Sequence, names: Sequence[str], cc: Crosscoder, prompts: Prompts, layer: int, *,
                 method: str = "ig", steps: int = 10, patch: str = "zero", eps_patch: str = "clean",
                 threshold: float = 0.1, reduce: str = "mean", top: int = 10, drop_bos: bool = True,
                 batch_size: int = 32, validate_top: int = 0, show_progress: bool = False,
                 tau: float = 0.3, n_boot: int = 200, boot_seed: int = 0) -> dict[str, Any]:
    """Everything the paper reports for one task (see the module docstring), and how sure each
    selected latent's causal onset is: its interval over `n_boot` resamples of the prompts
    (`uncertainty.bootstrap_onsets`; 0 turns it off) and its onset from the exact single-latent
    ablations beside the IE one."""
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
        onset_k = timeline.onsets(ie_k.T, tau)
        sure = _how_sure(res["entries"], chosen, onset_k, delta, names, tau, n_boot, boot_seed)
        summary["how_sure"] = sure["summary"]
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
                        "discontinued": life[k]["discontinued"], **lines[k], **sure["rows"][k]})
            rows.append(row)
    else:
        summary["note"] = f"no latent has an IE above the threshold {threshold} in any checkpoint"
    if validate_top:
        summary["validation"] = _validate(lms, cc, prompts, layer, res["ie_raw"], method=method, steps=steps,
                                          patch=patch, eps_patch=eps_patch, drop_bos=drop_bos,
                                          batch_size=batch_size, top=validate_top)
    summary["ie_all"] = {n: ie[c].tolist() for c, n in enumerate(names)}
    return {"summary": summary, "rows": rows}


def _how_sure(entries: attribution.PromptEntries, chosen: np.ndarray, onset_K: np.ndarray, delta_CK: np.ndarray,
              names: Sequence[str], tau: float, n_boot: int, boot_seed: int) -> dict[str, Any]:
    """Per selected latent: the bootstrap interval of its causal onset and its onset from the exact
    ablations; the summary: the share prompt-stable, and the agreement of exact and IE onsets
    (within one snapshot) with the disagreements listed."""
    name = lambda c: None if c < 0 else names[int(c)]  # noqa: E731
    rows: list[dict[str, Any]] = [{} for _ in chosen]
    summary: dict[str, Any] = {}
    b = None
    if n_boot:
        b = uncertainty.bootstrap_onsets(attribution.per_prompt(entries, chosen), onset_K, n_boot=n_boot,
                                         seed=boot_seed, tau=tau)
        for k, r in enumerate(rows):
            r.update({"onset_lo": name(b["lo"][k]), "onset_hi": name(b["hi"][k]),
                      "prompt_agreement": float(b["agreement"][k]), "prompt_stable": bool(b["stable"][k])})
        summary["prompts"] = {"n_boot": n_boot, "level": 0.95, "stable_at": uncertainty.PROMPT_STABLE,
                              "share_stable": float(np.mean(b["stable"])) if len(chosen) else float("nan")}
    exact = timeline.onsets(np.abs(delta_CK).T, tau)
    has = onset_K >= 0
    agree = has & (exact >= 0) & (np.abs(exact - onset_K) <= 1)
    for k, r in enumerate(rows):
        r.update({"exact_onset": name(exact[k]), "exact_agrees": bool(agree[k])})
    summary["exact_vs_ie"] = {
        "n": int(has.sum()), "within_one": int(agree.sum()),
        "agreement": float(agree.sum() / has.sum()) if has.any() else float("nan"),
        # where the onset itself moves with the prompts, the two onsets are expected to part more often
        **({f"prompt_{k}": {"n": int((has & m).sum()), "within_one": int((agree & m).sum())}
            for k, m in (("stable", b["stable"]), ("unstable", ~b["stable"]))} if b is not None else {}),
        "disagreements": [{"latent": int(chosen[k]), "ie_onset": name(onset_K[k]), "exact_onset": name(exact[k])}
                          for k in np.flatnonzero(has & ~agree)]}
    return {"rows": rows, "summary": summary}


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
