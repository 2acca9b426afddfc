"""Reelfab shared libraries (installed as the ``reelfab`` package): bus, codec, db, storage,
metrics, settings and the CLI. Services import from here and never from each other."""

__all__ = ["__version__"]
__version__ = "0.1.0"
