"""The whole-trajectory view of a run, from its attribution CSVs: one row per selected latent (the
first task that lists it wins, the attractor task first), its |IE| and decoder norm at every
crosscoded snapshot, causal and representational onsets (`analysis.timeline`), and the snapshots'
training steps. The lead figure, the onset figures and the ground-truth check read it."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crosscoder_jax.analysis import timeline


def steps_of_run(run: dict[str, Any]) -> list[float] | None:
    """Training step of each crosscoded snapshot: from the pretraining series, else from the names."""
    names = run["names"]
    if run.get("series"):
        by = {c["name"]: c["step"] for c in run["series"]["checkpoints"]}
        if all(n in by for n in names):
            return [float(by[n]) for n in names]
    steps = timeline.steps_of(names)
    return [float(s) for s in steps] if steps else None


def latent_rows(run: dict[str, Any], first_task: str | None = None, tau: float = 0.3) -> list[dict[str, Any]]:
    """Per selected latent: task, |IE| [C], decoder norms [C] (or None), onset / peak indices,
    sorted by causal onset, then peak, then latent."""
    names = run["names"]
    tasks = list(run["attribution"])
    tasks = ([first_task] if first_task in tasks else []) + [t for t in tasks if t != first_task]
    cc = run.get("cc")
    W_dec = cc.params["W_dec"] if cc is not None and cc.params["W_dec"].shape[1] == len(names) else None
    out, seen = [], set()
    seeds = {t: {int(r["latent"]): r for r in rows} for t, rows in (run.get("agreement") or {}).get("tasks", {}).items()}
    presence = run.get("presence_onsets") or {}  # {latent: snapshot index}, set by the report from analysis.presence
    for t in tasks:
        for r in run["attribution"][t]["rows"]:
            i = r["latent"]
            if i in seen:
                continue
            seen.add(i)
            ie = np.abs(np.array([r.get(f"ie_{n}", np.nan) for n in names], float))
            dec = np.array([r.get(f"decnorm_{n}", np.nan) for n in names], float)
            if np.isnan(dec).any():  # CSVs written before the decnorm columns: from the weights
                dec = (np.linalg.norm(np.asarray(W_dec[i], np.float64), axis=-1)
                       if W_dec is not None and i < W_dec.shape[0] else None)
            on, pk, off = timeline.onset_peak_offset(np.nan_to_num(ie), tau)
            rep = timeline.onset_peak_offset(dec, tau) if dec is not None else (None, None, None)
            out.append({"latent": i, "task": t, "abs_ie": ie, "decnorm": dec, "onset": on, "peak": pk,
                        "offset": off, "repr_onset": rep[0], "presence_onset": presence.get(i),
                        **sureness(r, seeds.get(t, {}).get(i), names)})
    big = len(names) + 1
    out.sort(key=lambda x: (big if x["onset"] is None else x["onset"], big if x["peak"] is None else x["peak"],
                            x["latent"]))
    return out


def _flag(v: Any) -> bool | None:
    """A CSV boolean ("True"/"False", or a bool) as a bool; None where absent."""
    if isinstance(v, bool):
        return v
    return {"True": True, "False": False}.get(str(v)) if v not in (None, "") else None


def sureness(row: dict[str, Any], seed_row: dict[str, Any] | None, names: Sequence[str]) -> dict[str, Any]:
    """How sure a selected latent's onset is, from its attribution row (bootstrap interval over the
    prompts, exact-ablation onset) and its agreement row (seeds): {"interval": (lo, hi) snapshot
    indices or None, "prompt_stable", "seed_stable", "stable" (both, or the one known; None if
    neither is), "onset_agreement", "match_fraction", "exact_onset" (index or None)}."""
    idx = {n: k for k, n in enumerate(names)}
    lo, hi = idx.get(row.get("onset_lo") or ""), idx.get(row.get("onset_hi") or "")
    prompt = _flag(row.get("prompt_stable"))
    seed = _flag(seed_row.get("seed_stable")) if seed_row else None
    known = [x for x in (prompt, seed) if x is not None]
    return {"interval": (lo, hi) if lo is not None and hi is not None else None, "prompt_stable": prompt,
            "seed_stable": seed, "stable": all(known) if known else None,
            "onset_agreement": float(seed_row["onset_agreement"]) if seed_row else None,
            "match_fraction": float(seed_row["match_fraction"]) if seed_row else None,
            "exact_onset": idx.get(row.get("exact_onset") or "")}


def onsets_near_jump(onsets: Sequence[int | None], jump_at: int, within: int = 1) -> dict[str, Any]:
    """How many causal onsets (snapshot indices) lie within `within` snapshots of the jump's index."""
    known = [o for o in onsets if o is not None]
    near = sum(abs(o - jump_at) <= within for o in known)
    return {"n": len(known), "within": near, "fraction": near / len(known) if known else float("nan"),
            "tolerance_snapshots": within, "without_onset": len(onsets) - len(known)}
