"""Model zoo: see :mod:`fer_core.models.registry`."""

from fer_core.models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
