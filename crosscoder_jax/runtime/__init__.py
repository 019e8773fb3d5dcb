"""The floor every stage stands on: devices and meshes for batch-parallel programs, multi-host
start-up, and the run bookkeeping of long runs (metrics.jsonl, progress bars with rate and ETA).

Takes and gives nothing of the data flow; imports no other stage.
"""
