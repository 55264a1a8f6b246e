"""Optimizer factories behind the built-in optimizer plugins (`sftkit.builtin.optimizers`)."""
