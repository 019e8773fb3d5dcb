"""Stage: what a trained crosscoder tells about the checkpoints.

Takes: a crosscoder (`crosscoder.Crosscoder`), its checkpoints (`models`), held-out contexts and
minimal-pair prompts (`data`). Gives: FVU, L0 and delta-CE spliced into each model (`evaluate`);
every latent's indirect effect on a task per checkpoint by AtP, IG or exact patching
(`attribution`); RelIE, RelDec, classes, lifecycles and the ablation check (`relie`); one task end to
end written as CSV and JSON (`task_analysis`); grammatical labels of latents on the synthetic
language (`labels`).
"""

from crosscoder_jax.analysis.task_analysis import analyze_task, write_outputs

__all__ = ["analyze_task", "write_outputs"]
