"""Looking inside DRSTN (chapter 4): what each soft threshold does to its input, and the
network stage by stage."""
from __future__ import annotations

import torch
from torch import nn

from ..models.common import ResNet
from ..models.drstn import SoftThreshold


def gate_weight_size(model: nn.Module) -> float:
    """The mean |weight| of the threshold networks' two FC layers (biases aside), over every
    :class:`SoftThreshold`: set beside the same network's at initialisation, how far training grew
    or shrank the weights that make ``alpha`` depend on the input."""
    sizes = [fc.weight.abs().mean().item() for m in model.modules() if isinstance(m, SoftThreshold)
             for fc in (m.fc1, m.fc2)]
    if not sizes:
        raise ValueError("the model has no SoftThreshold (a DRSTN version was expected)")
    return sum(sizes) / len(sizes)


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


def plot_shrinkage(before: torch.Tensor, after: torch.Tensor, channels=range(6), title=None):
    """What one soft threshold did to a few channels of one image: ``before`` and ``after``
    are its input and output maps (C, H, W).

    All panels share one diverging scale centred on zero (zero is white, one colour bar), and
    in the lower row the activations the threshold set exactly to zero are painted grey, with
    their share in the title: on a shared colour scale small values look white both before and
    after, so without the grey the shrinkage would be invisible.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .. import viz

    channels = list(channels)
    before, after = before.detach().float().cpu(), after.detach().float().cpu()
    limit = float(before[channels].abs().max())
    cmap = viz.diverging_cmap().with_extremes(bad="0.7")  # masked (exact zeros): grey
    width = min(viz.PAGE_WIDTH, 1.1 * len(channels) + 1.0)
    fig, axes = plt.subplots(2, len(channels), figsize=(width, 3.0), squeeze=False,
                             layout="constrained")
    for col, c in enumerate(channels):
        zero = after[c] == 0
        image = axes[0, col].imshow(before[c], cmap=cmap, vmin=-limit, vmax=limit)
        axes[1, col].imshow(np.ma.masked_where(zero.numpy(), after[c].numpy()), cmap=cmap,
                            vmin=-limit, vmax=limit)
        axes[0, col].set_title(f"ch {c}: z", fontsize=8)
        axes[1, col].set_title(f"soft(z): {100 * zero.float().mean():.0f} % 0", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    viz.add_colorbar(fig, image, axes, label="activation (grey: exactly 0)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def transfer_table(transfer) -> list[dict]:
    """A :class:`~dmcbook.transfer.TransferReport` per module rather than per tensor: one row
    per (what happened, module name with block indices as ``*``), counting its tensors, with
    the reason of the first of them. Copied modules are left out: they are the rule."""
    import re

    groups: dict[tuple[str, str], dict] = {}
    for row in transfer.rows():
        if row["action"] == "copied":
            continue
        module = re.sub(r"\.\d+", ".*", row["key"].rsplit(".", 1)[0])
        group = groups.setdefault((row["action"], module),
                                  {"action": row["action"], "module": module, "tensors": 0,
                                   "why": row["reason"]})
        group["tensors"] += 1
    return sorted(groups.values(), key=lambda g: (g["action"], g["module"]))


def table1_weights_cached() -> bool:
    """Whether torch.hub's cache already holds the ImageNet weights of Table 1's four networks,
    looked up without downloading anything (so an offline machine prints no failed download)."""
    from pathlib import Path

    from torchvision.models import get_model_weights

    from ..transfer import TABLE1_NETWORKS

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return all((folder / Path(get_model_weights(name).IMAGENET1K_V1.url).name).is_file()
               for name, _ in TABLE1_NETWORKS.values())
