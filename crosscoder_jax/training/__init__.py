"""Stage: the training loops.

Takes: an activation store (`data`) and a run config. Gives: a trained crosscoder in a workdir
(`crosscoder.safetensors`, orbax checkpoints to resume from, `metrics.jsonl`), through one jitted
step sharded on a (data, model) mesh (`train`, `sharding`, `runconfig`). Also the tiny LM's own
pretraining on the synthetic language (`pretrain`), which writes the checkpoint series and task
curves the demo harvests from.
"""
