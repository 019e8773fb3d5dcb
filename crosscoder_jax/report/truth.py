"""The report's "how sure" numbers: the ground truth by construction (novel nouns withheld from
pretraining until step X) per crosscoder seed and pooled, the attractor measurement with its seed
agreement, and the agreement of exact-ablation and IE onsets. Pure computations over what
`build` loads and encodes; everything is JSON-ready.

Ground truth by construction (`configs/pretrain.py: novel_from_step`; the checkpoint named step X
is the last that never saw a novel noun, so "before X" means a snapshot at step <= X):
  - the novel-noun task is at chance before X: every accuracy there lies within `chance_band` of
    0.5, 1 / sqrt(n_forms) (two standard deviations of a model whose preference for each of the
    n_forms novel word forms is a coin flip);
  - latents labelled for it (best label `novel&number==v` or `subj_novel&subj_number==v` at
    |corr| >= the label cut): none has its causal onset or its representational onset
    (`analysis.presence`) before X; the false-early rate counts them, per onset kind;
  - of those labelled and selected for the novel task (top by |IE| per snapshot), the share whose
    causal onset lies at the jump of the task's accuracy or within two snapshots after it
    (snapshots from the jump's later end in -1..2, where -1 is the snapshot it rises from).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import labels as labels_mod, presence, relie, timeline
from crosscoder_jax.analysis.agreement import read_task_ie
from crosscoder_jax.crosscoder import load_crosscoder
from crosscoder_jax.report.trajectory import steps_of_run

AFTER_JUMP = (-1, 2)
EARLY_KINDS = ("causal", "gated", "repr", "decnorm")  # onsets checked against X: IE, IE where present, presence, RelDec's norms


def chance_band(n_forms: int) -> float:
    """Largest |accuracy - 0.5| of a model at chance on a task whose answers hang on n_forms word
    forms (two standard deviations of the mean of n_forms coin flips)."""
    return 1.0 / math.sqrt(max(n_forms, 1))


def jump_of(acc: dict[str, float], names: Sequence[str]) -> tuple[int, int, float] | None:
    """(from, at, rise): the consecutive crosscoded snapshots (indices) with the largest accuracy rise."""
    idx = [k for k, n in enumerate(names) if n in acc]
    if len(idx) < 2:
        return None
    d = [acc[names[b]] - acc[names[a]] for a, b in zip(idx[:-1], idx[1:])]
    j = int(np.argmax(d))
    return idx[j], idx[j + 1], float(d[j])


def _name(names: Sequence[str], i: int | None) -> str | None:
    return None if i is None or i < 0 else names[int(i)]


def novel_seed(names: Sequence[str], steps: Sequence[float], x_step: int, jump: tuple[int, int, float] | None,
               labs: Sequence[dict[str, Any]], live: np.ndarray, ie_CF: np.ndarray, presence_of: dict[int, np.ndarray],
               top: int = 10, tau: float = 0.3, decnorm_FC: np.ndarray | None = None) -> dict[str, Any]:
    """The novel-noun ground truth for one crosscoder: its labelled latents (`labs`, one
    `labels.best_labels` record per latent; `live` [F]), their causal (IE on the novel task),
    presence-gated causal and representational onsets (presence; and, with `decnorm_FC`, the paper's
    decoder norms), which of them are before X, and of the labelled-and-selected ones the snapshots
    from the jump. `presence_of` holds the presence series of (at least) the labelled latents."""
    chosen = set(relie.select_top(ie_CF, top).tolist())
    before = [k for k, s in enumerate(steps) if s <= x_step]
    last_before = max(before) if before else -1
    rows = []
    for lab in labs:
        i = lab["latent"]
        if not (live[i] and lab["labelled"] and labels_mod.is_novel_number(lab["property"])):
            continue
        causal = int(timeline.onsets(ie_CF[:, i][None, :], tau)[0])
        p = presence_of.get(i)
        rep = presence.onset(p, tau) if p is not None else None
        gated = presence.gated_onset(ie_CF[:, i], p, tau) if p is not None else None
        dec = int(timeline.onsets(decnorm_FC[i][None, :], tau)[0]) if decnorm_FC is not None else -1
        row = {"latent": int(i), "property": lab["property"], "corr": float(lab["corr"]), "selected": i in chosen,
               "causal_onset": _name(names, causal), "gated_onset": _name(names, gated),
               "repr_onset": _name(names, rep), "decnorm_onset": _name(names, dec),
               "early_causal": 0 <= causal <= last_before, "early_gated": gated is not None and gated <= last_before,
               "early_repr": rep is not None and rep <= last_before, "early_decnorm": 0 <= dec <= last_before}
        if jump is not None:
            row["from_jump"] = None if causal < 0 else causal - jump[1]
            row["gated_from_jump"] = None if gated is None else gated - jump[1]
        rows.append(row)
    sel = [r for r in rows if r["selected"]]

    def near(key):
        d = [r[key] for r in sel if r.get(key) is not None]
        return {"n": len(sel), "with_onset": len(d), "within": sum(AFTER_JUMP[0] <= x <= AFTER_JUMP[1] for x in d)}

    return {"latents": rows, "labelled": len(rows), "selected": len(sel),
            "false_early": {k: sum(r[f"early_{k}"] for r in rows) for k in EARLY_KINDS},
            "near_jump": near("from_jump") if jump else None, "gated_near_jump": near("gated_from_jump") if jump else None}


def pool(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The ground truth pooled over seeds: false-early rates (per onset kind, over all labelled
    latents) and the within-two-snapshots fractions (over the labelled and selected ones)."""
    n_lab = sum(s["labelled"] for s in per_seed.values())
    out: dict[str, Any] = {"seeds": sorted(per_seed), "labelled": n_lab}
    out["false_early_rate"] = {k: (sum(s["false_early"][k] for s in per_seed.values()) / n_lab if n_lab else None)
                               for k in EARLY_KINDS}
    for key in ("near_jump", "gated_near_jump"):
        parts = [s[key] for s in per_seed.values() if s.get(key)]
        n, w = sum(p["n"] for p in parts), sum(p["within"] for p in parts)
        out[key] = {"n": n, "within": w, "fraction": w / n if n else None}
    return out


def exact_agreement(attribution: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Exact-ablation against IE causal onsets of the selected latents, per task and pooled
    (within one snapshot), with every disagreement listed."""
    per, n, w, dis = {}, 0, 0, []
    strata = {k: {"n": 0, "within_one": 0} for k in ("prompt_stable", "prompt_unstable")}
    for task, a in attribution.items():
        e = ((a.get("summary") or {}).get("how_sure") or {}).get("exact_vs_ie")
        if not e:
            continue
        per[task] = {"n": e["n"], "within_one": e["within_one"], "agreement": e["agreement"]}
        n, w = n + e["n"], w + e["within_one"]
        dis += [{"task": task, **d} for d in e["disagreements"]]
        for k, v in strata.items():
            v["n"] += (e.get(k) or {}).get("n", 0)
            v["within_one"] += (e.get(k) or {}).get("within_one", 0)
    for v in strata.values():
        v["agreement"] = v["within_one"] / v["n"] if v["n"] else None
    return {"tasks": per, "n": n, "within_one": w, "agreement": w / n if n else None, "disagreements": dis, **strata}


def prompt_shares(attribution: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Share of selected latents whose onset is prompt-stable, per task and pooled."""
    per, n, k, n_boot = {}, 0, 0, None
    for task, a in attribution.items():
        n_boot = n_boot or (((a.get("summary") or {}).get("how_sure") or {}).get("prompts") or {}).get("n_boot")
        rows = a["rows"]
        flags = [r.get("prompt_stable") == "True" for r in rows if r.get("prompt_stable") not in (None, "")]
        if flags:
            per[task] = {"n": len(flags), "share": sum(flags) / len(flags)}
            n, k = n + len(flags), k + sum(flags)
    return {"tasks": per, "n": n, "share": k / n if n else None, "n_boot": n_boot}


def _decnorms(cc) -> np.ndarray:
    """Decoder norms [F, C] in the normalised space (what RelDec shares out)."""
    return np.linalg.norm(np.asarray(cc.params["W_dec"], np.float64), axis=-1)


def _seed_table(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{task: {latent: agreement row}} of the seed agreement, if any."""
    return {t: {int(r["latent"]): r for r in rows} for t, rows in ((run.get("agreement") or {}).get("tasks") or {}).items()}


def _ie_all(attribution: dict[str, Any], task: str, names: Sequence[str]) -> np.ndarray | None:
    ie = (attribution.get(task) or {}).get("ie_all")
    return np.stack([np.asarray(ie[n], np.float64) for n in names]) if ie and all(n in ie for n in names) else None


def _other_seeds(run: dict[str, Any]) -> list[tuple[int, Path]]:
    runs = (((run.get("agreement") or {}).get("summary") or {}).get("runs")) or {}
    return [(int(s), Path(d)) for s, d in runs.items() if (Path(d) / "crosscoder.safetensors").is_file()]


def how_sure(run: dict[str, Any], lat: dict[str, Any] | None, summary: dict[str, Any], threshold: float,
             attractor_task: str, presence_tokens: int = 16384, tau: float = 0.3) -> dict[str, Any]:
    """Everything the report's "how sure" section shows: the seed agreement, the prompt bootstrap,
    exact against IE onsets, presence (representational) onsets of the reference's labelled selected
    latents, the novel-noun ground truth per seed and pooled, and the attractor latents with their
    seed agreement."""
    names = run["names"]
    out: dict[str, Any] = {"exact": exact_agreement(run["attribution"]), "prompts": prompt_shares(run["attribution"])}
    ag = (run.get("agreement") or {}).get("summary")
    if ag:
        out["seeds"] = {k: ag.get(k) for k in ("seeds", "reference_seed", "match_by", "cut", "within_snapshots",
                                               "seed_stable_at", "overall", "tasks", "similarity")}
    if lat is None or "error" in lat or run["cc"] is None:
        return out
    enc, cc = lat["enc"], run["cc"]
    n = min(presence_tokens, len(enc["f"]))
    acts = enc["acts"][:n] * np.asarray(cc.scales, np.float32)[None, :, None]
    ann = {k: v[:n] for k, v in lat["ann"].items()}
    labs = lat["labels"]
    seen = {r["latent"] for a in run["attribution"].values() for r in a["rows"]}
    want = {i: labs[i]["property"] for i in seen | {x["latent"] for x in summary.get("attractor_subject_number", {})
                                                     .get("latents", [])}
            if i < len(labs) and labs[i]["property"]}
    want.update({lb["latent"]: lb["property"] for lb in labs
                 if lb["labelled"] and labels_mod.is_novel_number(lb["property"])})
    series = presence.latent_presence(acts, enc["f"][:n], enc["tokens"][:n], ann, want)
    out["presence"] = presence.summary(series, names, tau)
    steps = steps_of_run(run)
    novel = (run["curves"] or {}).get("novel")
    if novel and steps is not None:
        out["novel"] = novel_truth(run, lat, series, novel, steps, threshold, n, tau)
    table = _seed_table(run).get(attractor_task, {})
    rows = {r["latent"]: r for r in (run["attribution"].get(attractor_task) or {}).get("rows", [])}
    att = []
    for x in summary.get("attractor_subject_number", {}).get("latents", []):
        a, r = table.get(x["latent"]), rows.get(x["latent"], {})
        att.append({**x, "selected": x["latent"] in rows, "onset_lo": r.get("onset_lo") or None,
                    "onset_hi": r.get("onset_hi") or None, "prompt_stable": r.get("prompt_stable") == "True" if r else None,
                    "onset_agreement": float(a["onset_agreement"]) if a else None,
                    "seed_stable": a["seed_stable"] == "True" if a else None,
                    "repr_onset": out["presence"].get(x["latent"], {}).get("onset")})
    out["attractor"] = att
    return out


def novel_truth(run: dict[str, Any], lat: dict[str, Any], series: dict[int, np.ndarray], novel: dict[str, Any],
                steps: Sequence[float], threshold: float, n_tokens: int, tau: float) -> dict[str, Any]:
    """`novel_seed` for the reference crosscoder and every other seed's, pooled, and the chance check."""
    names, task, x = run["names"], novel["task"], int(novel["from_step"])
    acc = {}
    for r in (run["curves"] or {}).get("checkpoints", []):
        if r["name"] in names and task in r["tasks"]:
            acc[r["name"]] = r["tasks"][task]["accuracy"]
    band = chance_band(len(novel.get("words") or []))
    pre = {n: a for n, a in acc.items() if steps[names.index(n)] <= x}
    jump = jump_of(acc, names)
    out: dict[str, Any] = {"task": task, "from_step": x, "chance_band": band,
                           "accuracy_before": pre, "at_chance_before": bool(pre) and all(abs(a - 0.5) <= band
                                                                                        for a in pre.values()),
                           "max_deviation_before": max((abs(a - 0.5) for a in pre.values()), default=None),
                           "jump": None if jump is None else {"from": names[jump[0]], "at": names[jump[1]],
                                                              "rise": jump[2]}}
    top = int(((run["attribution"].get(task) or {}).get("summary") or {}).get("top", 10))
    per: dict[int, dict[str, Any]] = {}
    ref_seed = int(((run.get("agreement") or {}).get("summary") or {}).get("reference_seed", 0))
    ie = _ie_all(run["attribution"], task, names)
    enc = lat["enc"]
    if ie is not None:  # labels on all the report's rows, presence on the first n_tokens, as for the other seeds
        per[ref_seed] = novel_seed(names, steps, x, jump, lat["labels"], enc["f"].max(axis=0) > 0, ie, series, top,
                                   tau, _decnorms(run["cc"]))
    ann = {k: v[:n_tokens] for k, v in lat["ann"].items()}
    for seed, d in _other_seeds(run):
        ie_s = read_task_ie(d / "attribution", names).get(task)
        if ie_s is None:
            continue
        cc_s = load_crosscoder(d / "crosscoder.safetensors")
        f_s = cc_s.encode_rows(enc["acts"])  # the rows the reference's labels were computed on
        labs = labels_mod.best_labels(labels_mod.correlations(f_s, lat["props"]), lat["prop_names"], threshold)
        want = {lb["latent"]: lb["property"] for lb in labs if lb["labelled"] and labels_mod.is_novel_number(lb["property"])}
        acts = enc["acts"][:n_tokens] * np.asarray(cc_s.scales, np.float32)[None, :, None]
        ser = presence.latent_presence(acts, f_s[:n_tokens], enc["tokens"][:n_tokens], ann, want)
        per[seed] = novel_seed(names, steps, x, jump, labs, f_s.max(axis=0) > 0, ie_s, ser, top, tau, _decnorms(cc_s))
    out["per_seed"] = {str(s): v for s, v in per.items()}
    out["pooled"] = pool(per) if per else None
    return out
