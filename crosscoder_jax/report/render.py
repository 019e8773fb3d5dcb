"""HTML of the report (`crosscoder_jax.report.write_report`): sections, tables, latent cards, and the
figures embedded as base64 PNG. No external resources: one file opens anywhere."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crosscoder_jax.report import figures as figs, sure_html, trajectory
from crosscoder_jax.report.html_parts import esc as _e, fmt as _fmt, table as _table

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.missing{color:#a33;font-style:italic}
img{max-width:100%;display:block;margin:8px 0}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 10px;width:540px;font-size:13px}
.card table{display:block;overflow-x:auto;max-width:100%}.card h3{margin:0 0 4px 0;font-size:14px}.ctx{font-family:monospace;font-size:12px;margin:2px 0;line-height:1.6}
.tok{padding:1px 2px;border-radius:2px}.peak{outline:1px solid #c60}.bar{display:inline-block;height:9px;background:#4a7}
.small{font-size:12px;color:#555}.sum td{text-align:left}
"""

# after load: every image must have decoded; the title and a data attribute say so (checked by the tests)
_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-ok', bad.length === 0 ? 'yes' : 'no');
  document.title = (bad.length === 0 ? 'REPORT-OK ' : 'REPORT-BROKEN ') + imgs.length + ' images';
});
</script>"""


def _missing(what: str) -> str:
    return f'<p class="missing">not computed: {_e(what)}</p>'


def _img(b64: str | None, alt: str, why: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">' if b64 else _missing(why)


_MAX_TIMELINE_ROWS = 80


def _lead_figures(run: dict[str, Any], attractor_task: str, jump: dict[str, Any] | None) -> dict[str, bytes | None]:
    """The timeline (latents x snapshots under the accuracy curve), the onset histogram and the
    representational-vs-causal onset scatter."""
    names, steps = run["names"], trajectory.steps_of_run(run)
    rows = every = trajectory.latent_rows(run, attractor_task)
    if len(rows) > _MAX_TIMELINE_ROWS:  # the strongest, kept in onset order
        keep = set(sorted(range(len(rows)), key=lambda j: -np.nanmax(rows[j]["abs_ie"]))[:_MAX_TIMELINE_ROWS])
        rows = [r for j, r in enumerate(rows) if j in keep]
    if not rows or steps is None or len(names) < 2:
        return {"timeline": None, "onset_histogram": None, "onset_scatter": None}
    share = np.array([r["abs_ie"] / max(np.nanmax(r["abs_ie"]), 1e-30) for r in rows])
    labels = [f"#{r['latent']} {r['task']}" for r in rows]
    acc = None
    if run["curves"]:
        by = {r["name"]: r for r in run["curves"]["checkpoints"]}
        acc = [by[n]["tasks"].get(attractor_task, {}).get("accuracy", np.nan) if n in by else np.nan for n in names]
    idx = {n: k for k, n in enumerate(names)}
    span = (idx[jump["from"]], idx[jump["at"]]) if jump and jump["at"] in idx and jump["from"] in idx else None
    novel = (run["curves"] or {}).get("novel")
    marks = [(max(k for k, s in enumerate(steps) if s <= novel["from_step"]), f"novel nouns from step {novel['from_step']}")
             ] if novel and any(s <= novel["from_step"] for s in steps) else []
    causal = {n: sum(r["onset"] == k for r in every) for k, n in enumerate(names)}
    rep = {n: sum(r["repr_onset"] == k for r in every) for k, n in enumerate(names)}
    pres = {n: sum(r.get("presence_onset") == k for r in every) for k, n in enumerate(names)}
    both = [r for r in every if r["onset"] is not None and r.get("presence_onset") is not None]
    return {"timeline": figs.timeline(share, steps, names, labels, [r.get("presence_onset") for r in rows], acc, span,
                                      attractor_task, onset_L=[r["onset"] for r in rows],
                                      interval_L=[r.get("interval") for r in rows],
                                      stable_L=[r.get("stable") for r in rows], marks=marks),
            "onset_histogram": figs.onset_histogram(causal, rep, names, span[1] if span else None, pres),
            "onset_scatter": figs.onset_scatter([r["presence_onset"] for r in both], [r["onset"] for r in both], names)
            if both else None}


def make_figures(run: dict[str, Any], lat: dict[str, Any] | None, attractor_task: str,
                 jump: dict[str, Any] | None = None) -> dict[str, bytes | None]:
    names = run["names"]
    out: dict[str, bytes | None] = _lead_figures(run, attractor_task, jump)
    out["accuracy_curves"] = figs.accuracy_curves(run["curves"], names, attractor_task) if run["curves"] else None
    out["training_curve"] = figs.training_curve(run["metrics"], names) if any("loss" in r for r in run["metrics"]) else None
    ok = lat is not None and "error" not in lat and len(lat["live"]) > 0
    out["reldec_distribution"] = figs.reldec_distribution(lat["reldec_live"], names) if ok else None
    for task, a in run["attribution"].items():
        rows = a["rows"]
        if not rows:
            out[f"relie_{task}"] = None
            continue
        relie = np.array([[r.get(f"relie_{n}", np.nan) for n in names] for r in rows], float)
        ie = np.array([[r.get(f"ie_{n}", np.nan) for n in names] for r in rows], float)
        labels = [f"#{r['latent']} · {r.get('class', '')} · {r.get('lifecycle', '')}" for r in rows]
        out[f"relie_{task}"] = figs.relie_heatmap(relie, ie, labels, names, f"RelIE on {task} (cell: RelIE, |IE| below)")
    em, dis = lifecycle_counts(run)
    out["lifecycle"] = figs.lifecycle_bars(em, dis, names) if run["attribution"] and names else None
    return out


def lifecycle_counts(run: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Over the union of selected latents (first task that lists a latent wins): emerges / discontinued per checkpoint."""
    seen: set[int] = set()
    em: dict[str, int] = {}
    dis: dict[str, int] = {}
    for a in run["attribution"].values():
        for r in a["rows"]:
            if r["latent"] in seen:
                continue
            seen.add(r["latent"])
            if r.get("emerges"):
                em[r["emerges"]] = em.get(r["emerges"], 0) + 1
            if r.get("discontinued"):
                dis[r["discontinued"]] = dis.get(r["discontinued"], 0) + 1
    return em, dis


def _quality(run: dict[str, Any]) -> str:
    ev = run["eval"]
    if not ev:
        return _missing("no eval.json in the crosscoder workdir (run launch.evaluate)")
    cols = ["fvu", "delta_ce", "ce_loss_recovered", "ce_clean", "ce_spliced", "ce_zero_ablation"]
    rows = [[n] + [ev["checkpoints"][n].get(c, float("nan")) for c in cols] for n in ev["checkpoints"]]
    head = f'<p class="small">L0 {_fmt(ev.get("l0"))}, dead fraction {_fmt(ev.get("dead_frac"))}, ' \
           f'{_fmt(ev.get("tokens"))} evaluation tokens</p>'
    return head + _table(["checkpoint"] + cols, rows)


def _tokens_html(ctx: dict[str, Any]) -> str:
    mx = max(max(ctx["acts"]), 1e-9)
    parts = []
    lo = max(0, ctx["peak"] - 24)
    for j in range(lo, len(ctx["tokens"])):
        a = ctx["acts"][j]
        alpha = min(1.0, max(0.0, a / mx))
        cls = "tok peak" if j == ctx["peak"] else "tok"
        parts.append(f'<span class="{cls}" style="background:rgba(255,140,0,{alpha:.2f})" '
                     f'title="{a:.3g}">{_e(ctx["tokens"][j])}</span>')
    return ("… " if lo else "") + " ".join(parts)


def _card(i: int, run: dict[str, Any], lat: dict[str, Any] | None) -> str:
    names = run["names"]
    rows = [(t, r) for t, a in run["attribution"].items() for r in a["rows"] if r["latent"] == i]
    head = f"<h3>latent {i}</h3>"
    meta = "".join(f'<div class="small">{_e(t)}: <b>{_e(r.get("class", ""))}</b> · {_e(r.get("lifecycle", ""))}</div>'
                   for t, r in rows)
    ie = _table(["task"] + [f"IE {n}" for n in names] + [f"RelIE {n}" for n in names],
                [[t] + [r.get(f"ie_{n}", float("nan")) for n in names] + [r.get(f"relie_{n}", float("nan")) for n in names]
                 for t, r in rows])
    if lat is None or "error" in lat or i not in lat["per_latent"]:
        return f'<div class="card">{head}{meta}{ie}{_missing("top contexts and label (needs the store with tokens)")}</div>'
    p = lat["per_latent"][i]
    lab = p["label"]
    tag = "labelled" if lab["labelled"] else "unlabelled, best"
    label = f'<div>grammatical property ({tag}): <b>{_e(lab["property"])}</b>, r = {lab["corr"]:.2f}</div>'
    st = p["strength"]
    smax = max(max(st), 1e-9)
    bars = "".join(f'<div class="small">{_e(n)} <span class="bar" style="width:{int(160 * s / smax)}px"></span> '
                   f'{s:.3g}</div>' for n, s in zip(names, st))
    freq = f'<div class="small">fires on {100 * p["freq"]:.2f}% of tokens, max {p["max"]:.3g}; ' \
           f'strength f·||W_dec[i,c]|| at the top tokens:</div>'
    ctx = "".join(f'<div class="ctx">{_tokens_html(c)}</div>' for c in p["contexts"]) or _missing("never fires on the sample")
    return f'<div class="card">{head}{meta}{label}{ie}{freq}{bars}<div class="small">top contexts:</div>{ctx}</div>'


def _near_text(near: dict[str, Any]) -> str:
    """`trajectory.onsets_near_jump`'s counts as one table cell."""
    return (f'{near["within"]} of {near["n"]} ({_fmt(near["fraction"], 3)}); '
            f'{near["without_onset"]} with no IE on the attractor task')


def _sweep_text(sweep: list[dict[str, Any]]) -> str:
    """The ground truth's counts per |corr| cut, e.g. "0.3: 4 of 5; 0.4: 3 of 4; 0.5: 2 of 3"."""
    return "; ".join(f'{x["threshold"]}: {x["within"]} of {x["n"]}' for x in sweep)


def _summary_html(s: dict[str, Any]) -> str:
    jump = s.get("attractor_jump")
    rows = [["attractor task", s["attractor_task"]],
            ["attractor accuracy at crosscoded checkpoints",
             ", ".join(f"{k}: {v:.3f}" for k, v in s["attractor_accuracy"].items()) or "not computed"],
            ["accuracy jump", f'{jump["from"]} → {jump["at"]} (+{jump["rise"]:.3f})' if jump else "not computed"],
            ["selected latents (union over tasks)", s["n_selected"]]]
    if isinstance(s.get("labels"), str):
        rows.append(["labels", s["labels"]])
        return _table(["", ""], rows, left=2, cls="sum")
    rows += [["tokens used for labels", s["tokens_used"]],
             [f"live latents labelled at |corr| ≥ {s['label_threshold']}", f'{s["n_labelled_live"]} of {s["n_live"]}'],
             ["selected latents labelled", f'{s["n_selected_labelled"]} of {s["n_selected"]}'],
             ["labels of live latents", ", ".join(f"{k}: {v}" for k, v in list(s["label_counts"].items())[:12]) or "none"]]
    truth = s["attractor_subject_number"]
    rows.append(["ground truth: latents carrying the subject's number at the attractor noun "
                 f"(|corr| ≥ {s['label_threshold']} over {truth['tokens']} attractor tokens, "
                 f"{truth['mismatched']} of them of the other number, and above the attractor's own)",
                 len(truth["latents"])])
    near = truth.get("near_jump")
    if near:
        rows.append(["... with the causal onset (on the attractor task) within one snapshot of the jump",
                     _near_text(near)])
    if truth.get("by_threshold"):
        rows.append(["... the same at other |corr| cuts", _sweep_text(truth["by_threshold"])])
    v = s["subject_number_vs_jump"]
    rows.append(["broader: selected latents whose best label is the subject's number at any position: "
                 "causal onset vs. the jump",
                 f'{v["labelled"]} labelled; before {v["before"]}, at {v["at"]}, after {v["after"]}'])
    near = s.get("subject_number_onset_near_jump")
    if near:
        rows.append(["... within one snapshot of the jump", _near_text(near)])
    out = _table(["", ""], rows, left=2, cls="sum")
    if truth["latents"]:
        out += _table(["latent", "corr with subject number at the attractor", "corr with the attractor's number",
                       "causal onset", "vs jump", "snapshots from jump"],
                      [[x["latent"], x["subj_corr"], x["attr_corr"], x["causal_onset"], x["vs_jump"],
                        x["snapshots_from_jump"]] for x in truth["latents"]], left=6)
    if s["subject_number_latents"]:
        out += _table(["latent", "label", "corr", "labelled", "task", "causal onset", "discontinued", "vs jump"],
                      [[x["latent"], x["property"], x["corr"], x["labelled"], x["task"], x["causal_onset"],
                        x["discontinued"] or "", x["vs_jump"]] for x in s["subject_number_latents"]], left=8)
    return out


def _lifecycle_html(run: dict[str, Any], b64: str | None) -> str:
    if not run["attribution"]:
        return _missing("no attribution CSVs")
    counts: dict[str, dict[str, int]] = {}
    for t, a in run["attribution"].items():
        for r in a["rows"]:
            counts.setdefault(r.get("lifecycle", ""), {}).setdefault(t, 0)
            counts[r.get("lifecycle", "")][t] += 1
    tasks = list(run["attribution"])
    rows = [[lc] + [c.get(t, 0) for t in tasks] for lc, c in sorted(counts.items())]
    em, dis = lifecycle_counts(run)
    txt = (f'<p>Union of selected latents: emerged (after the first checkpoint) '
           f'{sum(v for k, v in em.items() if k != (run["names"] or [None])[0])}, '
           f'present from the first checkpoint {em.get((run["names"] or [None])[0], 0)}, '
           f'discontinued {sum(dis.values())} '
           f'({", ".join(f"{k}: {v}" for k, v in dis.items()) or "none"}).</p>')
    return txt + _img(b64, "lifecycle", "no lifecycle data") + _table(["lifecycle"] + tasks, rows)


def render(run: dict[str, Any], lat: dict[str, Any] | None, summary: dict[str, Any], b64: dict[str, str | None],
           cards: Sequence[int]) -> str:
    names = run["names"]
    p = run["paths"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>crosscoder report</title><style>{_CSS}</style>"
             "</head><body>", "<h1>Crosscoder report</h1>",
             '<p class="small">' + " · ".join(f"{k}: {_e(v)}" for k, v in p.items()) +
             f"<br>crosscoded checkpoints: {_e(', '.join(names) or 'unknown')}</p>"]
    no_rows = "no attribution CSVs with selected latents, or no training steps for the snapshots"
    parts += ["<h2>Timeline: when each latent matters</h2>", _img(b64.get("timeline"), "timeline", no_rows),
              "<h2>How sure</h2>", sure_html.section(summary.get("how_sure")),
              "<h2>Onsets per snapshot</h2>", _img(b64.get("onset_histogram"), "onset histogram", no_rows),
              "<h2>Represented before it is used? Representational (presence) vs causal onset</h2>",
              _img(b64.get("onset_scatter"), "onset scatter", "needs presence onsets (labelled latents, the store)"),
              "<h2>Crosscoder quality per snapshot</h2>", _quality(run),
              _img(b64.get("training_curve"), "training curve", "no metrics.jsonl")]
    parts += ["<h2>Summary</h2>", _summary_html(summary)]
    parts += ["<h2>Task accuracy over pretraining</h2>",
              _img(b64.get("accuracy_curves"), "accuracy curves", "no task_curves.json in the pretraining dir")]
    why = "needs the crosscoder and the store" if lat is None else lat.get("error", "no live latents")
    parts += ["<h2>Relative decoder norms (live latents)</h2>", _img(b64.get("reldec_distribution"), "RelDec", why)]
    parts += ["<h2>RelIE of the selected latents</h2>"]
    if not run["attribution"]:
        parts.append(_missing("no attribution CSVs"))
    for task, a in run["attribution"].items():
        s = a["summary"] or {}
        abl = s.get("ablation") or {}
        acc = ", ".join(f"{n}: {v['accuracy']:.3f}" for n, v in (s.get("task") or {}).items())
        parts.append(f"<h3>{_e(task)}</h3><p class='small'>accuracy {_e(acc or 'n/a')}; ablation Spearman "
                     f"RelIE {_fmt(abl.get('rho_relie', 'n/a'))}, RelDec {_fmt(abl.get('rho_reldec', 'n/a'))}</p>")
        parts.append(_img(b64.get(f"relie_{task}"), f"RelIE {task}", "no selected latents"))
    parts += ["<h2>Lifecycles</h2>", _lifecycle_html(run, b64.get("lifecycle"))]
    parts += [f"<h2>Latent cards ({len(cards)} by largest |IE|)</h2>"]
    parts.append('<div class="cards">' + "".join(_card(i, run, lat) for i in cards) + "</div>" if cards
                 else _missing("no selected latents (attribution CSVs)"))
    parts += [_CHECK, "</body></html>"]
    return "\n".join(parts)


def summary_text(s: dict[str, Any]) -> str:
    jump = s.get("attractor_jump")
    lines = [f"[report] {s['files']['html']}"]
    lines.append(f"[report] attractor task {s['attractor_task']}: jump "
                 + (f"{jump['from']} -> {jump['at']} (+{jump['rise']:.3f})" if jump else "not computed"))
    if isinstance(s.get("labels"), str):
        lines.append(f"[report] labels {s['labels']}")
    else:
        v = s["subject_number_vs_jump"]
        lines.append(f"[report] labelled {s['n_labelled_live']} of {s['n_live']} live latents at |corr| >= "
                     f"{s['label_threshold']}; selected {s['n_selected_labelled']} of {s['n_selected']}")
        truth = s["attractor_subject_number"]
        near = truth.get("near_jump")
        lines.append(f"[report] ground truth: {len(truth['latents'])} latents carry the subject's number at the "
                     f"attractor noun" + (f"; causal onset within one snapshot of the jump: {near['within']} of "
                                          f"{near['n']}" if near else ""))
        if truth.get("by_threshold"):
            lines.append(f"[report] ... by |corr| cut: {_sweep_text(truth['by_threshold'])}")
        lines.append(f"[report] broader, subject-number labels at any position ({v['labelled']} labelled): causal "
                     f"onset before the jump {v['before']}, at it {v['at']}, after {v['after']}")
        near = s.get("subject_number_onset_near_jump")
        if near:
            lines.append(f"[report] ... within one snapshot of the jump: {near['within']} of {near['n']}")
    lines += sure_html.lines(s.get("how_sure"))
    return "\n".join(lines)
