"""The stages of `sftkit run`, in order, each one module with a typed input and output:
`plan` (resolve the device, pre-flight memory, plan the resume), `claim` (the run directory:
its lock and metadata), `data`, `model`, `train`, `evaluate`, `report`.
`sftkit.training.runner` runs them."""
