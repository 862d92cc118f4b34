"""framegen's version: the lowest layer holds it, so every artifact and manifest can record it."""

__version__ = "0.1.0"
