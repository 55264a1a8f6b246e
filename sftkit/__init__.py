"""sftkit: a plugin-style toolkit for supervised fine-tuning of large language models."""

__version__ = "0.1.0"
