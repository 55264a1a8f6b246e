"""Training: model and tokenizer loading, optimizer construction, the run directory, the
runner that drives TRL's `SFTTrainer`, and measure mode (`estimate-memory --measure`). Imports
torch; only commands that train or measure import it."""
