"""Stage: everything the crosscoder and the analysis read.

Takes: LM checkpoints (`models`), text or synthetic token sources, task files.
Gives: activation stores (`store`: tensorstore zarr3 `[N, C, D]` plus `store.json`), written by
`harvest` from checkpoints or by `planted_store` from planted features, and read back by
`reader.StoreReader` (whole chunks in random order, prefetch, per-host splits, resumable);
fixed-length token contexts (`token_sources`); minimal-pair prompts and their metric (`tasks`).
"""
