"""The FER2013 label set, in the dataset's own integer order (0 angry ... 6 neutral)."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(EMOTIONS)
