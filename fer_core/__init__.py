"""FER Studio core: data, models, training, evaluation and explanations for facial-expression
recognition on 48x48 grayscale faces. Deliberately free of any UI import (Streamlit lives in
``dashboard/``), so the same code runs from the CLI, tests, notebooks and the dashboard."""

from fer_core.labels import EMOTIONS, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NUM_CLASSES", "RunLogger", "__version__"]


def __getattr__(name: str):
    # lazy, so `import fer_core` stays light (RunLogger imports torch)
    if name == "RunLogger":
        from fer_core.foreign.logger import RunLogger

        return RunLogger
    raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
