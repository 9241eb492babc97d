"""Looking inside the networks: the chapters' probes, tables and pictures, one module per paper.

``dmcbook.models`` holds only the networks (what a user imports to train); the code here
imports them and ``dmcbook.viz`` and is never imported by them, so training pulls in
neither matplotlib nor these helpers.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def module_inputs(model: nn.Module, x: torch.Tensor, kind: type) -> dict[str, tuple]:
    """The positional inputs of every ``kind`` module of ``model``, by module name, in one
    eval-mode pass of ``x`` (the model's mode is restored afterwards)."""
    captured, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, kind):
            hooks.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: captured.__setitem__(name, args)))
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return captured
