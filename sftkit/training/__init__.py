"""Training: model and tokenizer loading, optimizer construction, the run directory, and the
runner that drives TRL's `SFTTrainer`. Imports torch; only commands that train import it."""
