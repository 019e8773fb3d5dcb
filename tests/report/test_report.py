"""The HTML report: built from a small synthetic run in the real file layouts, rendered in headless
Chromium (every image decodes, tables have rows), a screenshot kept in runs/test_artifacts/; and the
"not computed" path when pieces are missing."""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
TASK = "across_pp_attractor"


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium; installed with apt-get (as root) when missing. No skipping: a failed
    install fails the test with apt's output."""
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing and the tests are not root: run `apt-get install -y chromium`")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                pytest.fail(f"`{' '.join(cmd)}` failed ({r.returncode}); chromium is needed for the report test:\n"
                            f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} still missing after apt-get install chromium"
    return CHROMIUM


def _chromium(binary, url, tmp, *extra):
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp}", "--virtual-time-budget=5000", *extra, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def make_run(root: Path, names=("step10", "step30", "step100"), attribution_under_crosscoder=False, seeds=True):
    """A tiny run in the layouts of the real files: pretrain (series.json, task_curves.json), a store
    with tokens whose latent 0 is planted on `subj_number==pl`, a crosscoder, eval.json, metrics,
    and attribution CSV/JSON where latent 0 emerges at the attractor task's jump (names[1])."""
    import jax

    from crosscoder_jax import crosscoder
    from crosscoder_jax.synthetic import grammar
    from crosscoder_jax.analysis import agreement, attribution, labels, task_analysis, timeline
    from crosscoder_jax.crosscoder.export import save_crosscoder
    from crosscoder_jax.data.store import create_store

    C, D, F, T = len(names), 16, 24, 31
    pre = root / "pretrain"
    (pre / "checkpoints").mkdir(parents=True)
    steps = [0, 1, 3, 10, 30, 100]
    series = [{"name": f"step{s}", "step": s, "tokens": 64 * s, "path": f"step{s}"} for s in steps]
    (pre / "checkpoints" / "series.json").write_text(json.dumps({"family": "gpt_neox", "checkpoints": series}))
    acc = {0: 0.5, 1: 0.45, 3: 0.3, 10: 0.05, 30: 0.8, 100: 1.0}
    curves = {"chance": 0.5, "tasks": ["simple_agreement", TASK], "attractor_task": TASK,
              "checkpoints": [{"name": f"step{s}", "step": s, "tokens": 64 * s, "val_loss": 3.0,
                               "tasks": {"simple_agreement": {"accuracy": min(1.0, 0.5 + s / 20), "logit_diff": 0.1},
                                         TASK: {"accuracy": acc[s], "logit_diff": acc[s] - 0.5}}} for s in steps]}
    (pre / "task_curves.json").write_text(json.dumps(curves))

    ctx = grammar.batch(0, 0, 48, T + 1)[:, 1:]  # BOS dropped
    toks = ctx.reshape(-1)
    pos = np.tile(np.arange(1, T + 1), len(ctx))
    pnames, props = labels.token_properties(toks, pos)
    ind = props[:, pnames.index("subj_number==pl")].astype(np.float32)
    rng = np.random.default_rng(0)
    N = len(toks)
    acts = rng.normal(size=(N, C, D)).astype(np.float32) * 0.1
    acts[:, :, 0] += ind[:, None] * 2.0
    w = create_store(root / "store", checkpoints=list(names), d_model=D, n_tokens=N, chunk_size=31 * 16,
                     model="tiny-grammar", layer=0, with_tokens=True, context_len=T + 1, drop_bos=True,
                     token_source={"kind": "synthetic", "seed": 0})
    for i in range(w.n_chunks):
        a, b = w.chunk_rows(i)
        w.write_chunk(i, acts[a:b], toks[a:b], pos[a:b])
    w.update_meta(scales=[1.0] * C)

    spec = crosscoder.Spec(n_checkpoints=C, d_model=D, dict_size=F, activation="l1")
    params = {k: np.array(v) for k, v in crosscoder.init_params(spec, jax.random.PRNGKey(0)).items()}
    params["W_enc"][:, :, 0] = 0.0
    params["W_enc"][:, 0, 0] = 1.0
    params["b_enc"][0] = -2.0  # latent 0 fires where the planted direction is on (C * 2.0 - 2.0 > 0)
    cc_dir = root / "crosscoder"
    cc_dir.mkdir()
    save_crosscoder(cc_dir / "crosscoder.safetensors", params, {}, spec, [1.0] * C, list(names))
    ev = {"tokens": 512, "l0": 5.0, "dead_frac": 0.1,
          "checkpoints": {n: {"fvu": 0.01 * (c + 1), "ce_clean": 2.5, "ce_spliced": 2.6, "ce_zero_ablation": 5.0,
                              "delta_ce": 0.1, "ce_loss_recovered": 0.96} for c, n in enumerate(names)}}
    (cc_dir / "eval.json").write_text(json.dumps(ev))
    (cc_dir / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s, "fvu": [0.1 / s] * C})
                                                    for s in (1, 2, 3, 4)))
    att = (cc_dir if attribution_under_crosscoder else root) / "attribution"
    att.mkdir()
    rows = []
    for lat, em in ((0, names[1]), (3, names[0]), (7, names[-1])):
        ie = [0.0 if names.index(em) > c else 0.2 + 0.1 * c for c in range(C)]
        tot = sum(abs(x) for x in ie)
        r = {"latent": lat}
        r.update({f"ie_{n}": ie[c] for c, n in enumerate(names)})
        r.update({f"relie_{n}": abs(ie[c]) / tot for c, n in enumerate(names)})
        r.update({f"reldec_{n}": 1.0 / C for n in names})
        r.update({f"ablation_{n}": ie[c] for c, n in enumerate(names)})
        r.update({"class": f"{em} specific", "lifecycle": f"emerges at {em}, maintained", "emerges": em,
                  "discontinued": ""})
        rows.append(r)
    # how sure: every one of 20 prompts has the task's IE (a sure onset), exact ablations equal to it
    ie_CK = np.array([[r[f"ie_{n}"] for r in rows] for n in names])
    chosen = np.array([r["latent"] for r in rows])
    c_i, p_i, k_i = np.nonzero(np.broadcast_to(ie_CK[:, None, :], (C, 20, len(rows))))
    entries = attribution.PromptEntries(c_i, p_i, chosen[k_i], ie_CK[c_i, k_i], C, 20)
    sure = task_analysis._how_sure(entries, chosen, timeline.onsets(ie_CK.T), ie_CK, names, 0.3, 40, 0)
    for r, extra in zip(rows, sure["rows"]):
        r.update(extra)
    with open(att / f"{TASK}.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    ie_CF = np.array([[next((r[f"ie_{n}"] for r in rows if r["latent"] == i), 0.0) for i in range(F)] for n in names])
    summ = {"checkpoints": list(names), "task": {n: {"accuracy": acc[int(n[4:])], "n": 8} for n in names},
            "ablation": {"rho_relie": 0.9, "rho_reldec": 0.5}, "how_sure": sure["summary"],
            "ie_all": {n: ie_CF[c].tolist() for c, n in enumerate(names)}}
    (att / f"{TASK}.json").write_text(json.dumps(summ))
    if seeds:  # a second seed: the same crosscoder with its latents in another order
        perm = np.random.default_rng(1).permutation(F)
        seed_dir = root / "seeds" / "seed1"
        seed_dir.mkdir(parents=True)
        save_crosscoder(seed_dir / "crosscoder.safetensors", {k: _permute(k, v, perm) for k, v in params.items()}, {},
                        spec, [1.0] * C, list(names))
        agreement.write_task_ie(seed_dir / "attribution", TASK, names, {"ie": ie_CF[:, perm], "metric": np.zeros(C)})
        res = agreement.agree((0, cc_dir), att, [(1, seed_dir)], names, rows_NCD=acts[:2000])
        agreement.write(res, root / "agreement")
    return root


def _permute(name, value, perm):
    """A crosscoder parameter with its latent axis reordered."""
    axis = {"W_enc": 2, "b_enc": 0, "W_dec": 0}.get(name)
    return value if axis is None else np.take(value, perm, axis=axis)


def test_report_renders_in_chromium(tmp_path, chromium):
    from crosscoder_jax.report import write_report

    demo = make_run(tmp_path / "demo")
    summary = write_report(demo, verbose=False)
    out = demo / "report"
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=\"data:image/png;base64," in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"accuracy_curves.png", "reldec_distribution.png", f"relie_{TASK}.png", "lifecycle.png",
            "training_curve.png", "timeline.png", "onset_histogram.png", "onset_scatter.png"} <= set(pngs)
    # the report leads with the timeline, then the onsets and the quality per snapshot, then the rest
    heads = re.findall(r"<h2>(.*?)</h2>", html)
    assert heads[0].startswith("Timeline") and heads[1] == "How sure" and heads[2].startswith("Onsets")
    assert heads.index("Summary") > 4
    # how sure: the second seed holds the same latents, so every onset is matched and seed-stable; every
    # prompt carries the same IE, so every onset is prompt-stable; exact ablations equal the IE
    sure = summary["how_sure"]
    assert sure["seeds"]["seeds"] == [0, 1] and sure["seeds"]["overall"] == {"n": 3, "seed_stable": 1.0,
                                                                              "prompt_stable": 1.0, "both": 1.0}
    assert sure["prompts"]["share"] == 1.0 and sure["exact"]["agreement"] == 1.0 and not sure["exact"]["disagreements"]
    assert "seed-stable" in html
    from crosscoder_jax.report import build, trajectory
    rows = trajectory.latent_rows(build.load_run(build.resolve_paths(demo)), TASK)
    assert all(r["stable"] and r["interval"] == (r["onset"], r["onset"]) and r["exact_onset"] == r["onset"]
               for r in rows)
    assert json.loads((out / "report_summary.json").read_text())["n_selected"] == 3
    # the measurement: the planted latent is labelled with the subject's number and emerges at the jump
    assert summary["attractor_jump"]["at"] == "step30"
    assert summary["n_labelled_live"] >= 1
    subj = {x["latent"]: x for x in summary["subject_number_latents"]}
    assert subj[0]["property"] == "subj_number==pl" and subj[0]["corr"] > 0.9 and subj[0]["vs_jump"] == "at"
    assert subj[0]["causal_onset"] == "step30" and subj[0]["snapshots_from_jump"] == 0
    assert summary["subject_number_vs_jump"]["at"] >= 1
    assert summary["subject_number_onset_near_jump"]["within"] >= 1
    # the ground truth: latent 0 carries the subject's number at the attractor noun, onset at the jump
    truth = summary["attractor_subject_number"]
    assert truth["tokens"] > 10 and truth["mismatched"] >= 1
    carried = {x["latent"]: x for x in truth["latents"]}
    assert carried[0]["subj_corr"] < -0.9 and abs(carried[0]["attr_corr"]) < abs(carried[0]["subj_corr"])
    assert carried[0]["causal_onset"] == "step30" and carried[0]["vs_jump"] == "at"
    assert truth["near_jump"]["within"] >= 1
    # the sweep over |corr| cuts: the looser the cut, the more latents; at the report's own cut, its count
    sweep = truth["by_threshold"]
    assert [x["threshold"] for x in sweep] == sorted(x["threshold"] for x in sweep)
    assert all(set(b["latents"]) <= set(a["latents"]) for a, b in zip(sweep, sweep[1:]))
    own = next(x for x in sweep if x["threshold"] == summary["label_threshold"])
    assert sorted(own["latents"]) == sorted(carried) and own["within"] == truth["near_jump"]["within"]
    from crosscoder_jax.report import render
    assert f'{own["threshold"]}: {own["within"]} of {own["n"]}' in render.summary_text(summary)

    dom = _chromium(chromium, (out / "report.html").as_uri(), tmp_path / "chrome1", "--dump-dom")
    n_img = html.count("<img ")
    assert re.search(r"<title>REPORT-OK (\d+) images</title>", dom), dom[:500]
    assert f'data-images="{n_img}"' in dom and 'data-images-ok="yes"' in dom
    tables = re.findall(r"<table.*?</table>", dom, flags=re.S)
    assert len(tables) >= 4 and all("<td" in t for t in tables)
    assert dom.count('class="card"') == 3 and dom.count('class="tok') > 20
    assert "not computed" not in dom

    shot = tmp_path / "report.png"
    _chromium(chromium, (out / "report.html").as_uri(), tmp_path / "chrome2", "--window-size=1280,3000",
              "--hide-scrollbars", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000
    keep = ROOT / "runs" / "test_artifacts"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "report_screenshot.png")


def test_report_degrades_when_pieces_are_missing(tmp_path):
    from crosscoder_jax.report import write_report

    run = make_run(tmp_path / "run", names=("step10", "step30"), attribution_under_crosscoder=True)
    # attribution only: no pretraining dir, no store, no crosscoder weights, no eval
    summary = write_report(None, tmp_path / "out", attribution=run / "crosscoder" / "attribution", verbose=False)
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("not computed") >= 4
    assert summary["attractor_jump"]["at"] == "step30"  # from the attribution summary's task accuracy
    assert summary["labels"].startswith("not computed")
    # the demo layout with attribution under crosscoder/, C = 2
    summary = write_report(run, verbose=False)
    assert summary["checkpoints"] == ["step10", "step30"] and summary["n_selected"] == 3
    assert "not computed" not in (run / "report" / "report.html").read_text()
