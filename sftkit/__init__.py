"""sftkit: a plugin-style toolkit for supervised fine-tuning of large language models."""

from sftkit._version import __version__ as __version__
