"""Models: the plain ResNet baselines and each paper's networks, all behind one registry."""
# Importing each family registers its constructors.
from . import dmcnet, drstn, gdfrnet, resneskt, resnet  # noqa: F401
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
