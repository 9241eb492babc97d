"""A registry of named model constructors, in the manner of timm's ``register_model``.

Every constructor takes ``num_classes``, ``in_chans`` and ``stem`` plus its own keyword
options, and returns an ``nn.Module``. :func:`create_model` adds an input check so that a
batch of the wrong rank or channel count fails with a message that says what was expected,
instead of a shape error deep inside the first convolution.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

from ..checks import check_choice

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
STEMS = ("cifar", "imagenet")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; the name is what :func:`create_model` takes."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """The names :func:`create_model` accepts, sorted."""
    return sorted(_MODELS)


def _check_input(module: nn.Module, args) -> None:
    x = args[0]
    expected = module.in_chans
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{module.model_name} expects a batch of shape (N, {expected}, H, W); got {shape}")
    if x.shape[1] != expected:
        raise ValueError(
            f"{module.model_name} expects {expected}-channel images (N, {expected}, H, W); "
            f"got {x.shape[1]} channels in a batch of shape {tuple(x.shape)}")


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar",
                 **options) -> nn.Module:
    """Build the registered model ``name``.

    ``stem="cifar"`` is a 3x3 convolution without max-pooling (for 28-32 pixel data);
    ``stem="imagenet"`` is the 7x7 stride-2 convolution with max-pooling (for 224 pixels).
    Unknown names and options raise ValueError listing what is valid.
    """
    check_choice("model", name, list_models())
    check_choice("stem", stem, STEMS)
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer; got {in_chans!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    try:
        model = _MODELS[name](num_classes=num_classes, in_chans=in_chans, stem=stem, **options)
    except TypeError as err:  # an option the constructor does not take
        raise ValueError(f"{name}: {err}") from None
    model.model_name = name
    model.in_chans = in_chans
    model.register_forward_pre_hook(_check_input)
    return model
