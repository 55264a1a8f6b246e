"""sftkit-lion: the Lion optimizer for sftkit (see plugin.py for what it registers)."""

__version__ = "0.1.0"
