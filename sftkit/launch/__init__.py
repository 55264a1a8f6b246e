"""`sftkit launch`: one run on many processes, GPUs or nodes.

``session`` plans a launch (torch-free: the resolved recipe, the topology, the generated
engine configs, the launcher command), prepares the run on node 0 exactly as `sftkit run`
does, starts the workers and waits; ``worker`` is what each rank runs
(``python -m sftkit.launch.worker RUN_DIR``). It sits above `sftkit.training`, which it
drives, and uses `sftkit.distributed` for everything engine-specific.
"""
