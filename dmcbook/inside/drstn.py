"""Looking inside DRSTN (chapter 4): what each soft threshold does to its input, and the
network stage by stage."""
from __future__ import annotations

import torch
from torch import nn

from ..models.common import ResNet
from ..models.drstn import SoftThreshold


@torch.no_grad()
def threshold_statistics(model: nn.Module, images: torch.Tensor, keep_maps: bool = False) -> list[dict]:
    """Per :class:`SoftThreshold` layer of ``model`` on ``images`` (in eval mode): its name,
    ``tau`` (N, C), ``A`` (N, C), the fraction of activations it sets to zero, and the fraction
    that were already zero before it (so the shrinkage's own effect can be told apart).
    ``keep_maps`` also keeps its input and output feature maps ("before", "after")."""
    stats, hooks = [], []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            stats.append({"layer": name, "tau": module.thresholds(x).flatten(1),
                          "A": x.abs().mean(dim=(2, 3)),
                          "zeroed": (output == 0).float().mean().item(),
                          "zero_before": (x == 0).float().mean().item()})
            if keep_maps:
                stats[-1].update(before=x, after=output)
        return record

    for name, module in model.named_modules():
        if isinstance(module, SoftThreshold):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return stats


@torch.no_grad()
def stage_table(model: ResNet, input_size=(3, 32, 32)) -> list[dict]:
    """The network at a glance: for the stem, each stage, the pooling and the classifier, its
    blocks, output shape and parameters (the soft-threshold share given apart)."""
    parts = [("Conv_1 (stem)", model.stem)]
    parts += [(f"Conv_{i + 2}", stage) for i, stage in enumerate(model.layers)]
    parts += [("GAP", model.pool), ("FC", model.fc)]
    shapes, hooks = {}, []
    for label, module in parts:
        hooks.append(module.register_forward_hook(lambda m, i, o, label=label: shapes.__setitem__(label, tuple(o.shape[1:]))))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    return [{"part": label,
             "blocks": len(module) if module in model.layers else "",
             "output": " x ".join(map(str, shapes[label])),
             "params": count([module]),
             "of which soft threshold": count([m for m in module.modules() if isinstance(m, SoftThreshold)])}
            for label, module in parts]
