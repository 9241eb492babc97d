"""Looking inside ResNeSkt (chapter 3): the split-attention and spatial-kernel weights of every
block, and one image's way through a spatial-kernel attention."""
from __future__ import annotations

import torch
from torch import nn

from .. import viz
from ..models.resneskt import GeM, ResNeSktBottleneck, SpatialKernelAttention


@torch.no_grad()
def attention_details(model: nn.Module, images: torch.Tensor, gem_p: float | None = None) -> list[dict]:
    """What every ResNeSkt block of ``model`` computes on ``images``, for the chapter's pictures.

    Runs one forward pass in eval mode on the model's device and returns, block by block, on the
    CPU: ``{"block": name, "split": {"weights"}, "spatial": SpatialKernelAttention.details without
    its output, or None with the branch off}`` (the feature maps themselves are left out: for a
    batch of 224x224 images they would take gigabytes). ``gem_p`` replaces every GeM's p during
    this pass only (the chapter's widget).
    """
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, ResNeSktBottleneck)]
    gems = [m for m in model.modules() if isinstance(m, GeM)]
    saved_p = [g.p.detach().clone() for g in gems]
    inputs = {}
    hooks = [block.conv2.register_forward_hook(lambda module, args, out, key=name: inputs.__setitem__(key, args[0]))
             for name, block in blocks]
    was_training = model.training
    model.eval()
    try:
        if gem_p is not None:
            for g in gems:
                g.p.fill_(gem_p)
        model(images.to(next(model.parameters()).device))
        details = []
        for name, block in blocks:
            split = block.conv2.details(inputs.pop(name))
            spatial = None
            if isinstance(block.ska, SpatialKernelAttention):
                spatial = {k: v.cpu() for k, v in block.ska.details(split["out"]).items() if k != "out"}
            details.append({"block": name, "split": {"weights": split["weights"].cpu()}, "spatial": spatial})
    finally:
        for hook in hooks:
            hook.remove()
        for g, p in zip(gems, saved_p):
            g.p.copy_(p)
        model.train(was_training)
    return details


def plot_spatial_kernel_attention(images: torch.Tensor, spatial: dict, index: int = 0, group: int = 0, title=None):
    """One image's way through a spatial-kernel attention: the avg / max / GeM maps, the 3x3 and 5x5
    responses with their weights a3 and a5, and the spatial weight drawn over the image."""
    import matplotlib.pyplot as plt
    pooled, responses = spatial["pooled"][index, group], spatial["responses"][index, group]
    a = spatial["kernel_weights"][index, group]
    panels = [(pooled[0], "average"), (pooled[1], "max"), (pooled[2], "GeM"),
              (responses[0], f"3x3 response, a3={a[0]:.3f}"), (responses[1], f"5x5 response, a5={a[1]:.3f}"),
              (spatial["spatial_weight"][index, group], "spatial weight")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.3 * (len(panels) + 1), 2.6))
    for ax, (panel, label) in zip(axes, panels):
        ax.imshow(panel.cpu(), cmap="viridis")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    viz.heatmap_overlay(images[index].cpu(), spatial["spatial_weight"][index, group], ax=axes[-1],
                        title="weight over the image")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
