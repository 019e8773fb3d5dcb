"""The report's matplotlib figures (Agg backend), each returned as PNG bytes.

Every function takes plain arrays / dicts (what `crosscoder_jax.report` loads from the run's files)
and works for any number of checkpoints C >= 2.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def accuracy_curves(curves: dict[str, Any], crosscoded: Sequence[str], highlight: str | None = None) -> bytes:
    """Task accuracy over the whole checkpoint series (symlog-x steps), crosscoded checkpoints marked.
    `curves` is `task_curves.json` ({"tasks": [...], "checkpoints": [{name, step, tasks: {t: {accuracy}}}]})."""
    recs = sorted(curves["checkpoints"], key=lambda r: r["step"])
    steps = np.array([r["step"] for r in recs], float)
    tasks = curves.get("tasks") or sorted({t for r in recs for t in r["tasks"]})
    fig, ax = plt.subplots(figsize=(9, 4.6))
    cmap = plt.get_cmap("tab10")
    for j, t in enumerate(tasks):
        acc = np.array([r["tasks"].get(t, {}).get("accuracy", np.nan) for r in recs], float)
        strong = t == highlight
        ax.plot(steps, acc, marker="o", ms=3 if not strong else 5, lw=2.8 if strong else 1.2,
                color=cmap(j % 10), alpha=1.0 if strong or highlight is None else 0.75,
                label=t + (" (attractor)" if strong else ""), zorder=3 if strong else 2)
    by_name = {r["name"]: r for r in recs}
    for n in crosscoded:
        if n in by_name:
            ax.axvline(by_name[n]["step"], color="k", ls="--", lw=1, alpha=0.6)
            ax.text(by_name[n]["step"], 1.02, n, rotation=90, va="bottom", ha="center", fontsize=8,
                    transform=ax.get_xaxis_transform())
    ax.axhline(curves.get("chance", 0.5), color="gray", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("pretraining step (symlog)")
    ax.set_ylabel("accuracy (clean > patch)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    return _png(fig)


def training_curve(records: Sequence[dict[str, Any]], names: Sequence[str]) -> bytes:
    """Crosscoder training: loss and per-checkpoint FVU over steps (metrics.jsonl records)."""
    recs = [r for r in records if "loss" in r and "step" in r]
    step = np.array([r["step"] for r in recs], float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(step, [r["loss"] for r in recs], color="k")
    a.set_yscale("log")
    a.set_title("loss", fontsize=10)
    fvu = np.array([r.get("fvu", [np.nan] * len(names)) for r in recs], float).reshape(len(recs), -1)
    for c in range(fvu.shape[1]):
        b.plot(step, fvu[:, c], label=names[c] if c < len(names) else str(c))
    b.set_yscale("log")
    b.set_title("FVU per checkpoint", fontsize=10)
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _png(fig)


def reldec_distribution(reldec_FC: np.ndarray, names: Sequence[str]) -> bytes:
    """Histogram of RelDec_c (one panel per checkpoint) over live latents, plus for C = 3 a
    barycentric (ternary) scatter of the RelDec triples."""
    C = reldec_FC.shape[1]
    tern = C == 3
    fig, axes = plt.subplots(1, C + int(tern), figsize=(3.0 * (C + int(tern)), 3.0), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for c in range(C):
        ax = axes[0, c]
        ax.hist(reldec_FC[:, c], bins=bins, color=plt.get_cmap("tab10")(c))
        ax.axvline(1.0 / C, color="k", ls=":", lw=1)
        ax.set_title(f"RelDec {names[c]}", fontsize=10)
        ax.set_xlabel("share of decoder norm")
    axes[0, 0].set_ylabel(f"latents (of {reldec_FC.shape[0]} live)")
    if tern:
        ax = axes[0, C]
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
        xy = reldec_FC @ corners
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=0.8)
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.4)
        for k, (x, y) in enumerate(corners):
            ax.text(x, y + (0.04 if k == 2 else -0.08), names[k], ha="center", fontsize=8)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title("RelDec simplex", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def relie_heatmap(relie_LC: np.ndarray, ie_LC: np.ndarray, row_labels: Sequence[str], names: Sequence[str],
                  title: str) -> bytes:
    """RelIE of the selected latents (rows) over checkpoints (columns); cells show RelIE and |IE|."""
    L, C = relie_LC.shape
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * C + 4.5, 0.8 + 0.32 * max(L, 2)))
    im = ax.imshow(relie_LC, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for i in range(L):
        for c in range(C):
            ax.text(c, i, f"{relie_LC[i, c]:.2f}\n|{abs(ie_LC[i, c]):.2g}|", ha="center", va="center", fontsize=6,
                    color="white" if relie_LC[i, c] < 0.6 else "black")
    ax.set_xticks(range(C), names)
    ax.set_yticks(range(L), row_labels, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=10, pad=18)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="RelIE")
    return _png(fig)


def lifecycle_bars(emerges: dict[str, int], discontinued: dict[str, int], names: Sequence[str]) -> bytes:
    """Selected latents that emerge / are discontinued at each crosscoded checkpoint."""
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(names), 3.0))
    e = [emerges.get(n, 0) for n in names]
    d = [discontinued.get(n, 0) for n in names]
    ax.bar(x - 0.2, e, 0.4, label="emerges at", color="tab:green")
    ax.bar(x + 0.2, d, 0.4, label="discontinued at", color="tab:red")
    ax.set_xticks(x, names)
    ax.set_ylabel("selected latents")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


_STABLE_COLOR = {True: "tab:green", False: "tab:red", None: "black"}


def timeline(share_LC: np.ndarray, steps: Sequence[float], names: Sequence[str], row_labels: Sequence[str],
             repr_onset_L: Sequence[int | None], accuracy: Sequence[float] | None,
             jump: tuple[int, int] | None, task: str, onset_L: Sequence[int | None] | None = None,
             interval_L: Sequence[tuple[int, int] | None] | None = None,
             stable_L: Sequence[bool | None] | None = None, marks: Sequence[tuple[int, str]] = ()) -> bytes:
    """The lead figure: latents (rows, sorted by the caller) x crosscoded snapshots, one column each
    in training order (labelled with their steps), cell = |IE| as a share of the latent's peak; a
    cyan dot at the causal onset with its bootstrap interval over the prompts as a bar, a white dot
    at the representational onset, the row label green where the onset is stable (over seeds and
    prompts) and red where it is not; above, the task's accuracy at the same snapshots; the jump
    (from, at: snapshot indices) shaded in both panels, and `marks` (index, text) drawn as lines."""
    L, C = share_LC.shape
    x = np.arange(C)
    top_in, rows_in = 1.6, 0.13 * max(L, 8)
    fig = plt.figure(figsize=(10, top_in + rows_in + 1.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[top_in, rows_in], width_ratios=[60, 1], hspace=0.08, wspace=0.02)
    top, ax, cax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    fig.add_subplot(grid[0, 1]).axis("off")
    if accuracy is not None:
        top.plot(x, accuracy, color="k", marker="o", ms=3, lw=1.4)
        top.set_ylim(-0.02, 1.02)
    top.set_ylabel(f"accuracy\n{task}", fontsize=8)
    top.grid(alpha=0.3)
    im = ax.pcolormesh(np.arange(C + 1) - 0.5, np.arange(L + 1), share_LC, cmap="magma", vmin=0, vmax=1,
                       shading="flat")
    for i, r in enumerate(repr_onset_L):
        if r is not None:
            ax.plot(r, i + 0.5, "o", ms=3, mfc="white", mec="k", mew=0.4)
    for i, o in enumerate(onset_L or []):
        iv = interval_L[i] if interval_L else None
        if iv is not None and iv[0] >= 0:
            ax.plot([iv[0], iv[1]], [i + 0.5, i + 0.5], color="cyan", lw=1.2, alpha=0.9)
        if o is not None:
            ax.plot(o, i + 0.5, "o", ms=3.2, mfc="cyan", mec="k", mew=0.3)
    for a in (top, ax):
        if jump is not None:
            a.axvspan(jump[0], jump[1], color="tab:red", alpha=0.15, lw=0)
            a.axvline(jump[1], color="tab:red", ls="--", lw=1)
        for k, text in marks:
            a.axvline(k + 0.5, color="tab:green", ls=":", lw=1.2)
        a.set_xlim(-0.5, C - 0.5)
    for k, text in marks:
        top.text(k + 0.6, 0.05, text, color="tab:green", fontsize=7, va="bottom")
    ax.set_ylim(L, 0)
    ax.set_yticks(np.arange(L) + 0.5, row_labels, fontsize=6)
    for lab, st in zip(ax.get_yticklabels(), stable_L or []):
        lab.set_color(_STABLE_COLOR[st])
    top.tick_params(labelbottom=False)
    ax.set_xticks(x, [f"{n}" for n in names], rotation=70, fontsize=7)
    ax.set_xlabel("crosscoded snapshot, in training order (one column each)")
    fig.colorbar(im, cax=cax, label="|IE| / latent's peak |IE|")
    top.set_title("when each selected latent matters: rows sorted by causal onset (cyan dot and bar: causal onset "
                  "and its interval over prompts;\nwhite dot: representational onset; label green: onset stable over "
                  "seeds and prompts, red: not); red band: the accuracy jump", fontsize=8)
    return _png(fig)


def onset_histogram(causal: dict[str, int], representational: dict[str, int], names: Sequence[str],
                    jump_at: int | None, presence: dict[str, int] | None = None) -> bytes:
    """Latents whose causal / representational onset is at each snapshot (one slot each, in training
    order, as in the timeline)."""
    x = np.arange(len(names))
    kinds = [("causal onset (|IE|)", causal, "tab:purple"),
             ("representational onset (presence, labelled latents)", presence, "tab:green"),
             ("representational onset (decoder norm)", representational, "tab:gray")]
    kinds = [k for k in kinds if k[1] is not None]
    w = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(10, 2.9))
    for j, (label, counts, color) in enumerate(kinds):
        ax.bar(x - 0.4 + w * (j + 0.5), [counts.get(n, 0) for n in names], w, label=label, color=color)
    if jump_at is not None:
        ax.axvline(jump_at, color="tab:red", ls="--", lw=1, label="accuracy jump")
    ax.set_xticks(x, names, rotation=70, fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("crosscoded snapshot, in training order")
    ax.set_ylabel("selected latents")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def onset_scatter(repr_idx: Sequence[int], causal_idx: Sequence[int], names: Sequence[str]) -> bytes:
    """Representational against causal onset per latent (jittered snapshot indices); above the
    diagonal: represented before it is used."""
    rng = np.random.default_rng(0)
    r = np.asarray(repr_idx, float) + rng.uniform(-0.15, 0.15, len(repr_idx))
    c = np.asarray(causal_idx, float) + rng.uniform(-0.15, 0.15, len(causal_idx))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    n = len(names)
    ax.plot([-0.5, n - 0.5], [-0.5, n - 0.5], color="gray", lw=0.8)
    ax.scatter(r, c, s=14, alpha=0.7)
    ax.set_xticks(range(n), names, rotation=60, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("representational onset")
    ax.set_ylabel("causal onset")
    ax.grid(alpha=0.3)
    return _png(fig)
