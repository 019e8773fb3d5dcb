"""The floor every stage stands on: devices and meshes for batch-parallel programs, multi-host
start-up, the run bookkeeping of long runs (metrics.jsonl, progress bars with rate and ETA),
the per-machine choice of matmul operand dtype (`matmul_choice`), and keeping XLA:CPU's temporaries
mapped between train steps (`host_memory`).

Takes and gives nothing of the data flow; imports no other stage.
"""
