"""The public API (work in progress)."""

__all__: list[str] = []
