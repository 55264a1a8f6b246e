"""sftkit-embed: LoRA strategies that also train the token embeddings and the LM head."""

__version__ = "0.1.0"
