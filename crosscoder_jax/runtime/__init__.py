"""The floor every stage stands on: devices and meshes for batch-parallel programs, multi-host
start-up, the run bookkeeping of long runs (metrics.jsonl, progress bars with rate and ETA),
the per-machine choice of matmul operand dtype (`matmul_choice`), keeping XLA:CPU's temporaries
mapped between train steps (`host_memory`), and kernels run on the CPU host where XLA's are slow
(`host_kernels`: a per-row top-k, gathers and scatter-adds of rows; `host_ffi` makes them XLA
custom calls, `host_calls` puts them in traced programs where they pay).

Takes and gives nothing of the data flow; imports no other stage.
"""
