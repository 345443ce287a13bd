"""The package version (its own module so that preset writing can record it
without importing the package's `__init__` back)."""

__version__ = "0.1.0"
