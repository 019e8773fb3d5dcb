"""Onsets across crosscoder seeds: crosscoders trained with different seeds on the same store, each
attributed on the same tasks, their latents matched to the reference crosscoder's (`matching`), and
every selected latent of the reference given its matches' onsets and their agreement
(`uncertainty.seed_onsets`, `seed_agreement`).

Files (a stable layout, read by the report):
  <seed run>/attribution/<task>.json   {"checkpoints": [...], "ie_all": {ckpt: [F]}, "clean_metric": [C]}
                                       (`write_task_ie`: the IE of every latent, no selection)
  <out>/agreement.json                 the cut and what it is judged against, the seeds, per task and
                                       overall the shares of selected latents seed-stable,
                                       prompt-stable and both
  <out>/<task>.csv                     one row per selected latent of the reference: its onset, per
                                       seed the matched latent, their similarity and its onset, the
                                       match fraction, the agreement, seed_stable, prompt_stable
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import attribution, matching, uncertainty
from crosscoder_jax.crosscoder import load_crosscoder


def write_task_ie(out_dir: str | Path, task: str, names: Sequence[str], res: dict[str, Any]) -> Path:
    """The IE of every latent on one task (`attribution.attribute`'s result) as `<task>.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{task}.json"
    path.write_text(json.dumps({"checkpoints": list(names), "clean_metric": np.asarray(res["metric"]).tolist(),
                                "ie_all": {n: np.asarray(res["ie"][c]).tolist() for c, n in enumerate(names)}}))
    return path


def read_task_ie(directory: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """{task: IE [C, F]} from the `<task>.json` files of an attribution directory (the reference's,
    with its CSVs, or a seed's from `write_task_ie`); the checkpoints must be `names`."""
    out = {}
    for path in sorted(Path(directory).glob("*.json")):
        d = json.loads(path.read_text())
        if "ie_all" not in d:
            continue
        if list(d.get("checkpoints", names)) != list(names):
            raise ValueError(f"{path} holds checkpoints {d.get('checkpoints')}, not the reference's {list(names)}: "
                             "seeds are compared only on the same store")
        out[path.stem] = np.stack([np.asarray(d["ie_all"][n], np.float64) for n in names])
    return out


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def agree(reference: tuple[int, str | Path], reference_attribution: str | Path, seeds: Sequence[tuple[int, str | Path]],
          names: Sequence[str], cut: float = matching.DEFAULT_CUT, tau: float = 0.3, match_by: str = "codes",
          rows_NCD: np.ndarray | None = None) -> dict[str, Any]:
    """Seed agreement of every selected latent of the reference crosscoder.

    `reference`: (seed, training workdir with crosscoder.safetensors); `reference_attribution`: its
    attribution directory (<task>.csv rows, <task>.json with "ie_all"); `seeds`: (seed, training
    workdir) of every other seed, each with an attribution/ of `write_task_ie` files. Latents match
    by `match_by` ("codes": code correlation on `rows_NCD`, raw store rows; "decoder": joined
    decoder cosine), from `cut`. Returns {"summary" (with the runs' directories and what the cut is
    judged against), "tasks": {task: rows}}."""
    if match_by not in ("codes", "decoder"):
        raise ValueError(f"match_by must be 'codes' or 'decoder', got {match_by!r}")
    if match_by == "codes" and rows_NCD is None:
        raise ValueError("matching by codes needs store rows (rows_NCD) to encode with every crosscoder")
    reference_attribution = Path(reference_attribution)
    ref_cc = load_crosscoder(Path(reference[1]) / "crosscoder.safetensors")
    others = [load_crosscoder(Path(d) / "crosscoder.safetensors") for _, d in seeds]
    ie_ref = read_task_ie(reference_attribution, names)
    ie_seeds = [read_task_ie(Path(d) / "attribution", names) for _, d in seeds]
    W_ref = np.asarray(ref_cc.params["W_dec"])
    if match_by == "codes":
        f_ref = ref_cc.encode_rows(rows_NCD)
        f_oth = [cc.encode_rows(rows_NCD) for cc in others]
        live_ref = f_ref.max(axis=0) > 0
        sims = [matching.code_correlations(f_ref, f) for f in f_oth]
        matches = [matching.match(W_ref, np.asarray(cc.params["W_dec"]), cut, live_ref, f.max(axis=0) > 0, sim=sm)
                   for cc, f, sm in zip(others, f_oth, sims)]
        stats = matching.similarity_stats(matching.code_correlations(f_ref, f_ref),
                                          matching.code_chance(f_ref, f_oth[0]) if f_oth else float("nan"), live_ref)
    else:
        matches = [matching.match(W_ref, np.asarray(cc.params["W_dec"]), cut) for cc in others]
        stats = matching.cosine_stats(W_ref)
    all_seeds = [int(reference[0])] + [int(s) for s, _ in seeds]
    tasks: dict[str, list[dict[str, Any]]] = {}
    per_task: dict[str, Any] = {}
    seed_flags, prompt_flags = [], []
    for task in sorted(ie_ref):
        path = reference_attribution / f"{task}.csv"
        rows_in = _read_rows(path) if path.is_file() else []
        if not rows_in or any(task not in ie for ie in ie_seeds):
            continue
        lat = np.array([int(r["latent"]) for r in rows_in], np.int64)
        matched, partner, onset = uncertainty.seed_onsets([ie_ref[task]] + [ie[task] for ie in ie_seeds],
                                                          [None] + [m["partner"] for m in matches], lat, tau)
        agr = uncertainty.seed_agreement(matched, onset)
        name = lambda c: "" if c < 0 else names[int(c)]  # noqa: E731
        rows = []
        for k, r in enumerate(rows_in):
            row: dict[str, Any] = {"latent": int(lat[k]), "causal_onset": name(onset[0, k])}
            for j, s in enumerate(all_seeds[1:], start=1):
                sim = matches[j - 1]["cos"][lat[k]]
                row.update({f"seed{s}_latent": int(partner[j, k]) if matched[j, k] else "",
                            f"seed{s}_similarity": round(float(sim), 4) if matched[j, k] else "",
                            f"seed{s}_onset": name(onset[j, k])})
            prompt_stable = r.get("prompt_stable")
            row.update({"match_fraction": float(agr["match_fraction"][k]), "onset_agreement": float(agr["agreement"][k]),
                        "seed_stable": bool(agr["stable"][k]),
                        "prompt_stable": "" if prompt_stable in (None, "") else prompt_stable == "True",
                        "onset_lo": r.get("onset_lo", ""), "onset_hi": r.get("onset_hi", "")})
            rows.append(row)
        tasks[task] = rows
        s_flags = [x["seed_stable"] for x in rows]
        p_flags = [x["prompt_stable"] for x in rows] if all(x["prompt_stable"] != "" for x in rows) else None
        seed_flags += s_flags
        prompt_flags = None if prompt_flags is None or p_flags is None else prompt_flags + p_flags
        per_task[task] = {**uncertainty.shares(s_flags, p_flags),
                          "matched_in_every_seed": float(np.mean(agr["match_fraction"] == 1.0))}
    summary = {"seeds": all_seeds, "reference_seed": all_seeds[0], "match_by": match_by, "cut": cut, "tau": tau,
               "runs": {str(s): str(Path(d).resolve()) for s, d in seeds},
               "reference_run": str(Path(reference[1]).resolve()),
               "within_snapshots": 1, "seed_stable_at": uncertainty.SEED_STABLE,
               "prompt_stable_at": uncertainty.PROMPT_STABLE,
               "similarity": _similarity_summary(stats, matches, all_seeds[1:]),
               "tasks": per_task, "overall": uncertainty.shares(seed_flags, prompt_flags)}
    return {"summary": summary, "tasks": tasks}


def _similarity_summary(stats: dict[str, Any], matches: Sequence[dict[str, Any]], seeds: Sequence[int]
                        ) -> dict[str, Any]:
    """What the cut is judged against (`matching.similarity_stats` / `cosine_stats` of the
    reference), and per seed the matches made and the quantiles of every latent's best similarity."""
    out: dict[str, Any] = {"reference": stats}
    for s, m in zip(seeds, matches):
        best = m["best"][np.isfinite(m["best"]) & (m["best"] > -1)]
        out[f"seed{s}"] = {"matched": int((m["partner"] >= 0).sum()),
                           **{f"best_q{q}": float(np.quantile(best, q / 100)) for q in (10, 25, 50, 75, 90)}}
    return out


def write(result: dict[str, Any], out_dir: str | Path) -> Path:
    """`<out_dir>/agreement.json` and one `<task>.csv` per task."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in result["tasks"].items():
        with open(out / f"{task}.csv", "w", newline="") as fh:
            if rows:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    path = out / "agreement.json"
    path.write_text(json.dumps(result["summary"], indent=1))
    return path


def seed_task_ie(lms, names: Sequence[str], cc, prompts_by_task: dict[str, Any], layer: int, out_dir: str | Path, *,
                 drop_bos: bool, method: str = "ig", steps: int = 10, patch: str = "zero", eps_patch: str = "clean",
                 threshold: float = 0.1, reduce: str = "mean", batch_size: int = 32, **_) -> list[Path]:
    """The IE of every latent of one seed's crosscoder on every task, written for `agree` (the same
    attribution settings as the reference's; no selection, ablations or bootstrap)."""
    paths = []
    for task, prompts in prompts_by_task.items():
        res = attribution.attribute(lms, cc, prompts, layer, method=method, steps=steps, patch=patch,
                                    eps_patch=eps_patch, threshold=threshold, reduce=reduce, drop_bos=drop_bos,
                                    batch_size=batch_size)
        paths.append(write_task_ie(out_dir, task, names, res))
    return paths
