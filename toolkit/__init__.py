"""framegen's pipeline (templates, preprocessing, audio, rendering, video, parity, golden vectors, benchmarks)
and its command line."""

__version__ = "0.1.0"
