"""Data sources -> :class:`FaceSet`."""

from fer_core.data.faceset import SPLITS, FaceSet
from fer_core.data.sources import DataError, open_dataset

__all__ = ["SPLITS", "DataError", "FaceSet", "open_dataset"]
