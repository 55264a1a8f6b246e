"""Training: the runner that drives TRL's `SFTTrainer` from a resolved recipe to a run
directory, the optimizer built from its plugin, the run's files and callbacks, and measure
mode (`estimate-memory --measure`). Models come from `sftkit.modeling`. Imports torch; only
commands that train or measure import it."""
