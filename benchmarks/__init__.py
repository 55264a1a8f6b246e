"""Measurements of sftkit on real hardware: the memory estimator against measured peaks, and
training speed against the seed's plain TRL script.

Scripts run as modules from the project's root (``python -m benchmarks.grid ...``); every one
takes ``--device cpu`` so the whole harness runs, and is tested, on a CPU with a tiny model.
`docs/benchmarks.md` says how to reproduce the GPU figures.
"""
