"""Data sources -> :class:`FaceSet` (entry point: :func:`fer_core.data.spec.open_dataset`)."""

from fer_core.data.faceset import SPLITS, FaceSet
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES
from fer_core.data.spec import DataError, open_dataset, parse_spec

__all__ = ["SPLITS", "DataError", "FERPLUS_VOTE_NAMES", "FaceSet", "open_dataset", "parse_spec"]
