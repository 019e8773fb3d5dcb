"""One self-contained HTML report of a run (figures embedded as base64 PNG, no external resources),
plus the figures as PNG files and `report_summary.json`.

    write_report("runs/demo", "runs/demo/report")                       # a demo workdir
    write_report(None, "out", pretrain=..., store=..., crosscoder=..., attribution=...)

Inputs (each optional; a missing piece shows as "not computed"):
  pretrain     pretraining workdir: task_curves.json, checkpoints/series.json
  store        activation store with tokens/ and positions/ (top contexts, labels, RelDec of live latents)
  crosscoder   training workdir: crosscoder.safetensors, eval.json, metrics.jsonl
  attribution  directory of <task>.csv / <task>.json from `launch.attribute`
A demo workdir has <demo>/pretrain, <demo>/store, <demo>/crosscoder and <demo>/attribution (or
<demo>/crosscoder/attribution). Missing explicit paths are inferred where the run records them
(the store from the crosscoder's config.json, the pretraining dir from the store's checkpoint sources).

The measurement in the summary: how many live latents the grammatical labels (`analysis.labels`)
explain at |corr| >= 0.5; the ground truth: for the latents that carry the subject's number at the
attractor noun (`labels.number_carried_at`), their causal onset on the attractor task versus the
checkpoint where its accuracy jumps (largest rise between consecutive crosscoded checkpoints), and
the same for the broader set of selected latents whose best label is the subject's number anywhere.
"""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crosscoder_jax import crosscoder as cc_mod
from crosscoder_jax.analysis import labels as labels_mod, timeline
from crosscoder_jax.data import harvest
from crosscoder_jax.data.location import Location
from crosscoder_jax.data.store import Store
from crosscoder_jax.report import render, trajectory, truth
from crosscoder_jax.report.codes import encode_store, token_strings, top_contexts
from crosscoder_jax.synthetic.pairs import ATTRACTOR_TASK

TRUTH_THRESHOLDS = (0.3, 0.4, 0.5)  # |corr| cuts at which the report also counts the ground truth


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _json(path: Path | None) -> Any:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def resolve_paths(demo_dir=None, pretrain=None, store=None, crosscoder=None, attribution=None, agreement=None
                  ) -> dict[str, Path | str | None]:
    """Explicit paths win; then the demo layout; then what the run's own files record."""
    p = {k: Location(v).path if v else None for k, v in  # a store may be an object-storage URL
         dict(pretrain=pretrain, store=store, crosscoder=crosscoder, attribution=attribution,
              agreement=agreement).items()}
    if demo_dir is not None:
        d = Path(demo_dir)
        p["agreement"] = p["agreement"] or d / "agreement"
        p["pretrain"] = p["pretrain"] or d / "pretrain"
        p["store"] = p["store"] or d / "store"
        p["crosscoder"] = p["crosscoder"] or d / "crosscoder"
        if p["attribution"] is None:
            cands = [d / "crosscoder" / "attribution", d / "attribution"]
            p["attribution"] = next((c for c in cands if c.is_dir() and any(c.glob("*.csv"))), cands[0])
    cc = p["crosscoder"]
    sources: list = []  # the checkpoints' [source, revision]: a store's record, or a live run's config
    if p["store"] is None and cc is not None and (cc / "config.json").is_file():
        run = json.loads((cc / "config.json").read_text())
        act = run.get("activations")
        p["store"] = Location(act).path if act and act != "live" else None  # a live run has no store
        if act == "live":
            sources = [[s, r] for _, s, r in harvest.parse_checkpoints(run["live"]["checkpoints"],
                                                                       run["live"]["model"])]
    if p["attribution"] is None and cc is not None:
        p["attribution"] = cc / "attribution"
    st = p["store"]
    meta = Location(st).read_text("store.json") if st is not None else None
    sources = (json.loads(meta).get("checkpoint_sources") or []) if meta is not None else sources
    if p["pretrain"] is None:
        for src in sources:
            cand = Path(src[0]).parent.parent
            if (cand / "task_curves.json").is_file():
                p["pretrain"] = cand
                break
    return p


def load_attribution(directory: Path | None) -> dict[str, dict[str, Any]]:
    """{task: {"rows": [csv rows with floats parsed], "summary": json or None}} for every <task>.csv."""
    out: dict[str, dict[str, Any]] = {}
    if directory is None or not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            r["latent"] = int(r["latent"])
            for k in list(r):
                if k.split("_")[0] in ("ie", "relie", "reldec", "ablation", "decnorm"):
                    r[k] = float(r[k]) if r[k] not in ("", None) else float("nan")
        summary = _json(path.with_suffix(".json"))
        ie_all = summary.pop("ie_all", None) if summary is not None else None
        out[path.stem] = {"rows": rows, "summary": summary,
                          "ie_all": {n: np.asarray(v, np.float64) for n, v in ie_all.items()} if ie_all else None}
    return out


def load_agreement(directory: Path | None) -> dict[str, Any] | None:
    """The seed agreement (`analysis.agreement`): {"summary": agreement.json, "tasks": {task: rows}}."""
    if directory is None or not (Path(directory) / "agreement.json").is_file():
        return None
    tasks = {}
    for path in sorted(Path(directory).glob("*.csv")):
        with open(path, newline="") as fh:
            tasks[path.stem] = list(csv.DictReader(fh))
    return {"summary": _json(Path(directory) / "agreement.json"), "tasks": tasks}


def load_run(paths: dict[str, Path | None]) -> dict[str, Any]:
    """Everything the report shows, read from disk (None where a file is missing)."""
    pre, cc_dir, st = paths["pretrain"], paths["crosscoder"], paths["store"]
    run: dict[str, Any] = {"paths": {k: str(v) if v else None for k, v in paths.items()}}
    run["curves"] = _json(pre / "task_curves.json") if pre else None
    run["series"] = _json(pre / "checkpoints" / "series.json") if pre else None
    run["eval"] = _json(cc_dir / "eval.json") if cc_dir else None
    run["metrics"] = []
    if cc_dir is not None and (cc_dir / "metrics.jsonl").is_file():
        run["metrics"] = [json.loads(line) for line in (cc_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    run["cc"] = None
    if cc_dir is not None and (cc_dir / "crosscoder.safetensors").is_file():
        run["cc"] = cc_mod.load_crosscoder(cc_dir / "crosscoder.safetensors")
    run["store"] = None
    if st is not None and Location(st).exists("store.json"):
        run["store"] = Store(st)
    run["attribution"] = load_attribution(paths["attribution"])
    run["agreement"] = load_agreement(paths.get("agreement"))
    names = None
    if run["cc"] is not None:
        names = list(run["cc"].checkpoints)
    elif run["store"] is not None:
        names = list(run["store"].meta["checkpoints"])
    elif run["eval"] is not None:
        names = list(run["eval"]["checkpoints"])
    else:
        for a in run["attribution"].values():
            if a["summary"] and a["summary"].get("checkpoints"):
                names = list(a["summary"]["checkpoints"])
                break
    run["names"] = names or []
    return run


# ----------------------------------------------------------------------------------------------
# Latent analysis on store tokens
# ----------------------------------------------------------------------------------------------

def analyze_latents(run: dict[str, Any], latents: Sequence[int], max_tokens: int, n_contexts: int,
                    threshold: float) -> dict[str, Any] | None:
    """Labels of all latents, RelDec of live ones, and top contexts / strengths of `latents`."""
    cc, store = run["cc"], run["store"]
    if cc is None or store is None:
        return None
    if not ((store.path / "tokens").exists() and (store.path / "positions").exists()):
        return {"error": "the store keeps no tokens/positions"}
    enc = encode_store(cc, store, max_tokens)
    f = enc["f"]
    live = f.max(axis=0) > 0
    dn_FC = np.asarray(cc.params["W_dec"], np.float64)
    dn_FC = np.linalg.norm(dn_FC, axis=-1)
    reldec = dn_FC / np.maximum(dn_FC.sum(axis=1, keepdims=True), 1e-30)
    ann = labels_mod.token_annotations(enc["tokens"], enc["positions"], bool(store.meta.get("drop_bos", True)))
    names, props = labels_mod.property_table(ann)
    lab = labels_mod.label_latents(f, props, names, threshold)
    carried = labels_mod.number_carried_at(f, props, names, "attr", threshold)
    words = token_strings(enc["tokens"], store.meta)
    per_latent = {}
    for i in (i for i in latents if 0 <= i < f.shape[1]):  # a CSV of another crosscoder: skip, do not crash
        ctxs = []
        for a, b, m in top_contexts(f[:, i], enc["starts"], n_contexts):
            ctxs.append({"tokens": words[a:b], "acts": f[a:b, i].tolist(), "peak": m - a,
                         "strength": (f[m, i] * dn_FC[i]).tolist()})
        strength = np.mean([c["strength"] for c in ctxs], axis=0).tolist() if ctxs else [0.0] * dn_FC.shape[1]
        per_latent[int(i)] = {"contexts": ctxs, "strength": strength, "label": lab[i],
                              "freq": float((f[:, i] > 0).mean()), "max": float(f[:, i].max())}
    live_idx = np.flatnonzero(live)
    counts: dict[str, int] = {}
    for i in live_idx:
        if lab[i]["labelled"]:
            counts[lab[i]["property"]] = counts.get(lab[i]["property"], 0) + 1
    return {"n_tokens": int(f.shape[0]), "n_latents": int(f.shape[1]), "live": live_idx.tolist(),
            "reldec_live": reldec[live_idx], "labels": lab, "per_latent": per_latent,
            "n_labelled": int(sum(lab[i]["labelled"] for i in live_idx)), "carried": carried,
            "label_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "enc": enc, "ann": ann, "props": props, "prop_names": names}


# ----------------------------------------------------------------------------------------------
# Summary: labels and subject-number latents versus the attractor accuracy jump
# ----------------------------------------------------------------------------------------------

def task_accuracy(run: dict[str, Any], task: str) -> dict[str, float]:
    """Accuracy of `task` at the crosscoded checkpoints: task_curves.json, else the attribution summary."""
    acc: dict[str, float] = {}
    if run["curves"]:
        by = {r["name"]: r for r in run["curves"]["checkpoints"]}
        acc = {n: by[n]["tasks"][task]["accuracy"] for n in run["names"] if n in by and task in by[n]["tasks"]}
    summ = (run["attribution"].get(task) or {}).get("summary") or {}
    for n in run["names"]:
        if n not in acc and n in (summ.get("task") or {}):
            acc[n] = summ["task"][n]["accuracy"]
    return acc


def accuracy_jump(acc: dict[str, float], names: Sequence[str]) -> dict[str, Any] | None:
    """The consecutive crosscoded pair with the largest accuracy rise; the jump is at the later one."""
    seq = [n for n in names if n in acc]
    if len(seq) < 2:
        return None
    d = np.diff([acc[n] for n in seq])
    j = int(np.argmax(d))
    return {"from": seq[j], "at": seq[j + 1], "rise": float(d[j]), "accuracy": {n: acc[n] for n in seq}}


def summarize(run: dict[str, Any], lat: dict[str, Any] | None, attractor_task: str, threshold: float) -> dict[str, Any]:
    names = run["names"]
    selected: dict[int, dict[str, Any]] = {}
    tasks = list(run["attribution"])
    for t in ([attractor_task] if attractor_task in tasks else []) + [t for t in tasks if t != attractor_task]:
        for r in run["attribution"][t]["rows"]:
            selected.setdefault(r["latent"], {"task": t, "emerges": r.get("emerges") or None,
                                              "discontinued": r.get("discontinued") or None})
    acc = task_accuracy(run, attractor_task)
    jump = accuracy_jump(acc, names)
    s: dict[str, Any] = {"checkpoints": names, "label_threshold": threshold, "attractor_task": attractor_task,
                         "attractor_accuracy": acc, "attractor_jump": jump, "n_selected": len(selected)}
    if lat is None or "error" in lat:
        s["labels"] = "not computed" + (f": {lat['error']}" if lat else " (needs the crosscoder and the store)")
        return s
    labs = lat["labels"]
    s.update({"tokens_used": lat["n_tokens"], "n_latents": lat["n_latents"], "n_live": len(lat["live"]),
              "n_labelled_live": lat["n_labelled"],
              "n_selected_labelled": int(sum(labs[i]["labelled"] for i in selected if i < len(labs))),
              "label_counts": lat["label_counts"]})
    order = {n: k for k, n in enumerate(names)}
    onset = causal_onsets(run, attractor_task, range(lat["n_latents"]))
    jump_at = order[jump["at"]] if jump else None

    def vs_jump(i):
        """(causal onset's name, before | at | after the jump, snapshots from it) of latent i."""
        o = onset.get(i)
        if o is None:
            return None, None, None
        if jump_at is None:
            return names[o], None, None
        return names[o], ("at" if o == jump_at else "before" if o < jump_at else "after"), o - jump_at

    # the ground truth: latents that carry the subject's number at the attractor noun
    car = lat["carried"]
    truth = []
    for i in (i for i in lat["live"] if car["labelled"][i]):
        at, rel, gap = vs_jump(i)
        truth.append({"latent": i, "subj_corr": float(car["subj"][i]), "attr_corr": float(car["attr"][i]),
                      "causal_onset": at, "vs_jump": rel, "snapshots_from_jump": gap})
    s["attractor_subject_number"] = {"tokens": car["n_tokens"], "mismatched": car["n_mismatch"], "latents": truth}
    if jump:
        s["attractor_subject_number"]["near_jump"] = trajectory.onsets_near_jump(
            [onset.get(x["latent"]) for x in truth], jump_at)
        # |corr| >= threshold is a cut through a continuum: a pure latent that fires on a third of its
        # number's attractor tokens has |corr| ~0.45, so the count is shown at looser cuts too
        sweep = []
        for thr in sorted({*TRUTH_THRESHOLDS, threshold}):
            keep = (np.abs(car["subj"]) >= thr) & (np.abs(car["subj"]) > np.abs(car["attr"]))
            ids = [i for i in lat["live"] if keep[i]]
            sweep.append({"threshold": thr, "latents": ids,
                          **trajectory.onsets_near_jump([onset.get(i) for i in ids], jump_at)})
        s["attractor_subject_number"]["by_threshold"] = sweep

    # broader: selected latents whose best label is about the subject's number at any position
    subj = []
    for i, info in sorted(selected.items()):
        if i < len(labs) and labels_mod.is_subject_number(labs[i]["property"]):
            at, rel, gap = vs_jump(i)
            subj.append({"latent": i, "property": labs[i]["property"], "corr": labs[i]["corr"],
                         "labelled": labs[i]["labelled"], "task": info["task"],
                         "causal_onset": at, "emerges": info["emerges"],
                         "discontinued": info["discontinued"], "vs_jump": rel, "snapshots_from_jump": gap})
    s["subject_number_latents"] = subj
    lab_subj = [x for x in subj if x["labelled"]]
    s["subject_number_vs_jump"] = {k: sum(x["vs_jump"] == k for x in lab_subj) for k in ("before", "at", "after")}
    s["subject_number_vs_jump"]["labelled"] = len(lab_subj)
    if jump:
        s["subject_number_onset_near_jump"] = trajectory.onsets_near_jump(
            [onset.get(x["latent"]) for x in lab_subj], jump_at)
    return s


def causal_onsets(run: dict[str, Any], task: str, latents) -> dict[int, int | None]:
    """Causal onset (snapshot index, `analysis.timeline` rule) on `task` of each latent: from the
    task's IE of every latent where the attribution kept it, else from its CSV rows (latents it lists)."""
    names = run["names"]
    ie_all = (run["attribution"].get(task) or {}).get("ie_all")
    if ie_all and all(n in ie_all for n in names):
        IE_CF = np.stack([ie_all[n] for n in names])
        return {i: timeline.onset_peak_offset(IE_CF[:, i])[0] for i in latents if i < IE_CF.shape[1]}
    return {x["latent"]: x["onset"] for x in trajectory.latent_rows(run, task)}


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

def write_report(demo_dir=None, out_dir=None, *, pretrain=None, store=None, crosscoder=None, attribution=None,
                 max_tokens: int = 32768, n_contexts: int = 5, max_cards: int = 40,
                 attractor_task: str | None = None, threshold: float = labels_mod.LABEL_THRESHOLD,
                 verbose: bool = True) -> dict[str, Any]:
    """Writes <out_dir>/report.html, the figures as PNGs and report_summary.json; returns the summary.
    `out_dir` defaults to <demo_dir>/report."""
    if out_dir is None:
        if demo_dir is None:
            raise ValueError("write_report needs out_dir (or a demo_dir to write <demo_dir>/report)")
        out_dir = Path(demo_dir) / "report"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = resolve_paths(demo_dir, pretrain, store, crosscoder, attribution)
    run = load_run(paths)
    if attractor_task is None:
        attractor_task = (run["curves"] or {}).get("attractor_task") or ATTRACTOR_TASK
    selected = selected_latents(run, max_cards)
    lat = analyze_latents(run, selected, max_tokens, n_contexts, threshold)
    summary = summarize(run, lat, attractor_task, threshold)
    summary["how_sure"] = truth.how_sure(run, lat, summary, threshold, attractor_task)
    idx = {n: k for k, n in enumerate(run["names"])}
    run["presence_onsets"] = {int(i): idx[p["onset"]] for i, p in summary["how_sure"].get("presence", {}).items()
                              if p["onset"] is not None}
    figures = render.make_figures(run, lat, attractor_task, summary.get("attractor_jump"))
    for name, png in figures.items():
        if png is not None:
            (out / f"{name}.png").write_bytes(png)
    page = render.render(run, lat, summary, {k: base64.b64encode(v).decode() if v else None
                                             for k, v in figures.items()}, selected)
    (out / "report.html").write_text(page)
    summary["files"] = {"html": str(out / "report.html"),
                        "figures": [str(out / f"{k}.png") for k, v in figures.items() if v is not None]}
    (out / "report_summary.json").write_text(json.dumps(summary, indent=1))
    if verbose:
        print(render.summary_text(summary))
    return summary


def selected_latents(run: dict[str, Any], max_cards: int) -> list[int]:
    """Union of the attribution CSVs' latents, by largest |IE| over tasks and checkpoints, capped."""
    best: dict[int, float] = {}
    for a in run["attribution"].values():
        for r in a["rows"]:
            ie = max((abs(v) for k, v in r.items() if k.startswith("ie_") and v == v), default=0.0)
            best[r["latent"]] = max(best.get(r["latent"], 0.0), ie)
    return [i for i, _ in sorted(best.items(), key=lambda kv: -kv[1])][:max_cards]
