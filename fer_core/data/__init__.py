"""Data sources -> :class:`FaceSet`."""

from fer_core.data.faceset import SPLITS, FaceSet

__all__ = ["SPLITS", "FaceSet"]
