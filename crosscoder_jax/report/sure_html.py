"""The report's "How sure" section (HTML) and its lines in the printed summary, from
`truth.how_sure`'s record."""

from __future__ import annotations

from typing import Any, Sequence

from crosscoder_jax.report.html_parts import esc as _e, fmt, table


def _f(v: Any, nd: int = 3) -> str:
    """A cell of this section: None as "n/a", booleans as yes / no, numbers to `nd` digits."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return fmt(v, nd)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    return table(header, rows, left, cell=_f)


def _seeds(sure: dict[str, Any]) -> str:
    s, prompts = sure.get("seeds"), sure.get("prompts") or {}
    if not s:
        return ('<p class="missing">one crosscoder only: no seed agreement (the demo\'s --config.seeds, or '
                '`python -m launch.seeds`)</p>' + _prompts_only(prompts))
    sim = s.get("similarity") or {}
    ref = sim.get("reference") or {}
    what = ("the correlation of their codes on the store" if s.get("match_by") == "codes"
            else "the cosine of their joined decoder directions (all snapshots)")
    per_seed = "; ".join(f'{k}: {v["matched"]} latents matched, best similarity median {_f(v.get("best_q50"))}'
                         for k, v in sim.items() if k != "reference")
    head = (f'<p>{len(s["seeds"])} crosscoders (seeds {", ".join(map(str, s["seeds"]))}, reference '
            f'{s["reference_seed"]}) on the same store. Latents match one to one by {what}, from {_f(s["cut"])}: '
            f'chance reaches {_f(ref.get("chance_999"))} (99.9th percentile), the nearest other latent of the same '
            f'crosscoder {_f(ref.get("nearest_within_q50"))} (median), {_f(ref.get("nearest_within_q99"))} (99th '
            f'percentile). {per_seed}. A latent\'s onset is '
            f'<b>seed-stable</b> when at least {_f(s["seed_stable_at"])} of the seeds (its own included) have a match '
            f'whose causal onset on the same task lies within {s["within_snapshots"]} snapshot of it; '
            f'<b>prompt-stable</b> when at least 90% of {_f(((sure.get("prompts") or {}).get("n_boot")))} '
            'bootstrap resamples of the task\'s prompts put it within one snapshot.</p>')
    rows = [[t, v["n"], v.get("matched_in_every_seed"), v.get("seed_stable"), v.get("prompt_stable"), v.get("both")]
            for t, v in (s.get("tasks") or {}).items()]
    o = s.get("overall") or {}
    rows.append(["all selected latents", o.get("n"), None, o.get("seed_stable"), o.get("prompt_stable"), o.get("both")])
    return head + _table(["task", "selected latents", "matched in every seed", "seed-stable", "prompt-stable",
                          "both"], rows)


def _prompts_only(prompts: dict[str, Any]) -> str:
    rows = [[t, v["n"], v["share"]] for t, v in (prompts.get("tasks") or {}).items()]
    if not rows:
        return ""
    rows.append(["all", prompts.get("n"), prompts.get("share")])
    return _table(["task", "selected latents", "prompt-stable"], rows)


def _exact(e: dict[str, Any] | None) -> str:
    if not e or not e.get("n"):
        return '<p class="missing">not computed: exact-ablation onsets</p>'
    st, un = e.get("prompt_stable") or {}, e.get("prompt_unstable") or {}
    out = (f'<p>Causal onset from the exact single-latent ablations against the IE onset: <b>{e["within_one"]} of '
           f'{e["n"]}</b> ({_f(e["agreement"])}) within one snapshot; where the IE onset is prompt-stable '
           f'{st.get("within_one", 0)} of {st.get("n", 0)} ({_f(st.get("agreement"))}), where it is not '
           f'{un.get("within_one", 0)} of {un.get("n", 0)} ({_f(un.get("agreement"))}).</p>')
    out += _table(["task", "latents", "within one", "agreement"],
                  [[t, v["n"], v["within_one"], v["agreement"]] for t, v in e["tasks"].items()])
    if e["disagreements"]:
        out += "<p class='small'>disagreements:</p>" + _table(
            ["task", "latent", "IE onset", "exact onset"],
            [[d["task"], d["latent"], d["ie_onset"], d["exact_onset"] or "none"] for d in e["disagreements"]], left=4)
    return out


def _novel(nv: dict[str, Any] | None) -> str:
    if not nv:
        return ('<p class="missing">no novel-noun construction in this run (pretraining with grammar.p_novel > 0 '
                'withholds them until novel_from_step)</p>')
    acc = ", ".join(f"{k} {v:.2f}" for k, v in nv["accuracy_before"].items())
    jump = nv.get("jump")
    out = (f'<p>Novel nouns enter pretraining at step {nv["from_step"]}; {nv["task"]} before it '
           f'(checkpoints at step &le; {nv["from_step"]}): <b>{"at chance" if nv["at_chance_before"] else "NOT at chance"}'
           f'</b> (largest |accuracy - 0.5| {_f(nv["max_deviation_before"])}, band {_f(nv["chance_band"])}): '
           f'<span class="small">{_e(acc)}</span>. Accuracy jump: '
           + (f'{jump["from"]} &rarr; {jump["at"]} (+{jump["rise"]:.2f})' if jump else "none") + ".</p>")
    rows = []
    for seed, v in (nv.get("per_seed") or {}).items():
        fe, nj, gj = v["false_early"], v.get("near_jump") or {}, v.get("gated_near_jump") or {}
        rows.append([seed, v["labelled"], fe["causal"], fe["gated"], fe["repr"], fe.get("decnorm"), v["selected"],
                     f'{nj.get("within", 0)} of {nj.get("n", 0)}', f'{gj.get("within", 0)} of {gj.get("n", 0)}'])
    p = nv.get("pooled")
    if p:
        fr = p["false_early_rate"]
        rows.append(["pooled", p["labelled"], fr["causal"], fr["gated"], fr["repr"], fr.get("decnorm"), p["near_jump"]["n"],
                     f'{p["near_jump"]["within"]} of {p["near_jump"]["n"]} ({_f(p["near_jump"]["fraction"])})',
                     f'{p["gated_near_jump"]["within"]} of {p["gated_near_jump"]["n"]} '
                     f'({_f(p["gated_near_jump"]["fraction"])})'])
    out += _table(["seed", "labelled for it", "onset before X: causal (IE)", "causal, where present",
                   "representational (presence)", "decoder norms (RelDec's)", "labelled and selected",
                   "causal onset at the jump .. +2", "same, where present"], rows)
    lat = [[s, x["latent"], x["property"], x["corr"], x["selected"], x["causal_onset"], x["gated_onset"],
            x["repr_onset"], x.get("decnorm_onset"), x.get("from_jump")]
           for s, v in (nv.get("per_seed") or {}).items() for x in v["latents"]]
    if lat:
        out += _table(["seed", "latent", "label", "corr", "selected", "causal onset", "causal where present",
                       "representational onset (presence)", "decoder-norm onset", "snapshots from the jump"], lat,
                      left=3)
    return out


def _attractor(att: list[dict[str, Any]] | None) -> str:
    if not att:
        return '<p class="missing">no latent carries the subject\'s number at the attractor noun</p>'
    return _table(["latent", "causal onset", "interval over prompts", "vs jump", "snapshots from jump",
                   "prompt-stable", "seed agreement", "seed-stable", "representational onset"],
                  [[x["latent"], x["causal_onset"], f'{x["onset_lo"]} .. {x["onset_hi"]}' if x["onset_lo"] else "",
                    x["vs_jump"], x["snapshots_from_jump"], x["prompt_stable"], x["onset_agreement"], x["seed_stable"],
                    x["repr_onset"]] for x in att])


def section(sure: dict[str, Any] | None) -> str:
    """The "How sure" section's body."""
    if not sure:
        return '<p class="missing">not computed</p>'
    return ("<h3>Over seeds and prompts</h3>" + _seeds(sure) +
            "<h3>Exact ablation against IE</h3>" + _exact(sure.get("exact")) +
            "<h3>Ground truth by construction: novel nouns withheld until a known step</h3>" +
            '<p class="small">"labelled for it": best grammatical label the novel noun\'s (or its sentence\'s '
            'subject\'s) number; "where present": the causal onset counted only at snapshots whose activations hold '
            'the latent\'s feature (presence, below); the jump window counts onsets from the snapshot the accuracy rises '
            'from to two snapshots after it.</p>' + _novel(sure.get("novel")) +
            "<h3>The attractor task: latents carrying the subject's number at the attractor noun</h3>" +
            _attractor(sure.get("attractor")) +
            "<h3>Representational presence</h3><p class='small'>For a labelled latent at each snapshot: the held-out "
            "R² of a linear read-out of that snapshot's activations predicting the latent, cross-validated over "
            "folds that split the tokens carrying its label's value (the noun itself, or the sentence's subject), so "
            "that a random-init model, whose embeddings separate any few tokens but place no unseen one, scores "
            "zero; onset where it reaches 0.1 and 0.3 of its peak (<code>analysis/presence.py</code>). The "
            "decoder-norm onsets (RelDec) are kept beside it.</p>")


def lines(sure: dict[str, Any] | None) -> list[str]:
    """The printed summary's "how sure" lines."""
    if not sure:
        return []
    out = []
    s = sure.get("seeds")
    if s:
        o = s["overall"]
        out.append(f"[report] seeds {s['seeds']}: of {o['n']} selected latents, onset seed-stable {_f(o.get('seed_stable'))}, "
                   f"prompt-stable {_f(o.get('prompt_stable'))}, both {_f(o.get('both'))}")
    elif sure.get("prompts", {}).get("n"):
        out.append(f"[report] prompt-stable onsets: {_f(sure['prompts']['share'])} of {sure['prompts']['n']}")
    e = sure.get("exact")
    if e and e.get("n"):
        out.append(f"[report] exact-ablation vs IE onsets within one snapshot: {e['within_one']} of {e['n']} "
                   f"({_f(e['agreement'])})")
    nv = sure.get("novel")
    if nv and nv.get("pooled"):
        p = nv["pooled"]
        fr = p["false_early_rate"]
        out.append(f"[report] novel nouns from step {nv['from_step']}: task at chance before: {nv['at_chance_before']}; "
                   f"{p['labelled']} labelled latents over seeds {p['seeds']}; onset before X: causal {_f(fr['causal'])}, "
                   f"causal where present {_f(fr['gated'])}, representational {_f(fr['repr'])} (decoder norms "
                   f"{_f(fr.get('decnorm'))}); labelled and "
                   f"selected with the causal onset at the jump..+2: {p['near_jump']['within']} of {p['near_jump']['n']} "
                   f"(where present: {p['gated_near_jump']['within']} of {p['gated_near_jump']['n']})")
    return out
