"""sftkit's version, in a module of its own so that any module can read it without importing
the public face (`sftkit/__init__.py`), which re-exports from the layers above."""

__version__ = "0.1.0"
