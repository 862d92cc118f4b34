"""framegen's pipeline (templates, preprocessing, audio, rendering, video, parity, golden vectors, benchmarks)
and its command line."""

from framegen.models.version import __version__

__all__ = ["__version__"]
