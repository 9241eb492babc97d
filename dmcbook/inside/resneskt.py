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
                spatial = {k: v.cpu() for k, v in block.ska.details(block.avd_last(split["out"])).items() if k != "out"}
            details.append({"block": name, "split": {"weights": split["weights"].cpu()}, "spatial": spatial})
    finally:
        for hook in hooks:
            hook.remove()
        for g, p in zip(gems, saved_p):
            g.p.copy_(p)
        model.train(was_training)
    return details


def plot_spatial_kernel_attention(images: torch.Tensor, spatial: dict, index: int = 0, group: int = 0,
                                  title=None):
    """One image's way through a spatial-kernel attention, in two rows that fit the page.

    Top: the image and its average, max and GeM maps (pooled along the group's channels, one
    shared scale). Bottom: the 3x3 and 5x5 responses V_3x3, V_5x5 with their weights a_3x3,
    a_5x5 (a diverging scale centred on zero, shared by both), and the spatial weight
    sigmoid(a_3x3 V_3x3 + a_5x5 V_5x5) on its 0-1 scale, alone and over the image.
    """
    import matplotlib.pyplot as plt
    pooled, responses = spatial["pooled"][index, group], spatial["responses"][index, group]
    weight = spatial["spatial_weight"][index, group]
    a = spatial["kernel_weights"][index, group]
    fig = plt.figure(figsize=(viz.PAGE_WIDTH, 4.2), layout="constrained")
    # One sub-figure per row, so that the colour bars of one row do not shift the other's panels.
    axes = [row.subplots(1, 4) for row in fig.subfigures(2, 1)]
    for ax in (*axes[0], *axes[1]):
        ax.axis("off")
    image = images[index].cpu()
    axes[0][0].imshow(image.permute(1, 2, 0).squeeze(-1), cmap="gray")
    axes[0][0].set_title("input", fontsize=9)
    low, high = viz.shared_limits(pooled)
    for ax, panel, label in zip(axes[0][1:], pooled, ("average", "max", "GeM")):
        shown = ax.imshow(panel, cmap="viridis", vmin=low, vmax=high)
        ax.set_title(label, fontsize=9)
    viz.add_colorbar(fig, shown, axes[0][1:], label="pooled value")
    low, high = viz.shared_limits(responses, center_zero=True)
    for ax, panel, k, weight_k in zip(axes[1][:2], responses, ("3", "5"), a):
        shown = ax.imshow(panel, cmap=viz.diverging_cmap(), vmin=low, vmax=high)
        ax.set_title(f"$V_{{{k}\\times{k}}}$,  $a_{{{k}\\times{k}}}$ = {weight_k:.2f}", fontsize=9)
    viz.add_colorbar(fig, shown, axes[1][:2], label="response")
    shown = axes[1][2].imshow(weight, cmap="jet", vmin=0, vmax=1)
    axes[1][2].set_title("spatial weight", fontsize=9)
    viz.heatmap_overlay(image, weight, ax=axes[1][3], vmin=0, vmax=1, title="over the input")
    viz.add_colorbar(fig, shown, axes[1][2:], label="weight")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
