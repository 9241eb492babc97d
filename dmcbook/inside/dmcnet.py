"""Looking inside DMCNet (chapter 1): D_M_Conv's masks, the MMCF branches and where the
parameters sit."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock

from . import module_inputs
from ..checks import check_choice
from ..models.dmcnet import AE, MASKS, MMCF, DMCBottleneck, DynamicMaskConv, FGlo
from ..viz import OBJECT_THRESHOLD, object_mask


def capture_inputs(model: nn.Module, x: torch.Tensor, kind: type) -> dict[str, torch.Tensor]:
    """The input of every ``kind`` module (e.g. DynamicMaskConv, MMCF, AE) in one eval-mode pass of ``x``."""
    return {name: args[0] for name, args in module_inputs(model, x, kind).items()}


@torch.no_grad()
def mask_variants(dmc: DynamicMaskConv, x: torch.Tensor, m: float | None = None, seed: int = 0) -> dict:
    """D_M_Conv's output on ``x`` under each mask combination of Table 2. M1 and M2 are drawn once
    (``seed``) and shared, so the outputs differ only in which masks act."""
    m1, m2 = dmc.draw_masks(x, m, torch.Generator(device=x.device).manual_seed(seed))
    return {name: dmc.forward_parts(x, m1 if channel else None, m2 if kernel else None, conditional)["out"]
            for name, (kernel, channel, conditional) in MASKS.items()}


def param_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per part of the network (stem, F0, each branch, D_M_Conv, M3, FGlo, AE, shortcuts...),
    for comparing a variant's count with the paper's part by part."""
    labels = {"stem": "stem", "fc": "classifier"}
    for name, mod in model.named_modules():
        if isinstance(mod, MMCF):
            labels.update({f"{name}.f0": "MMCF F0 3x3 + BN (Eq. 11)", f"{name}.branch1": "branch 1 3x3 + BN (Eq. 14)",
                           f"{name}.branch2.0": "branch 2/3 1x1 (Eqs. 15-16)",
                           f"{name}.branch3.0": "branch 2/3 1x1 (Eqs. 15-16)",
                           f"{name}.branch2.2": "branch 2 3x3 (Eq. 15)", f"{name}.branch3.2": "branch 3 5x5 (Eq. 16)"})
        elif isinstance(mod, DynamicMaskConv):
            labels.update({f"{name}.conv": "D_M_Conv dilated 3x3 (Eq. 6)", f"{name}.cond": "M3 convs (Eq. 7)"})
        elif isinstance(mod, FGlo):
            labels[name] = "FGlo (Eq. 18)"
        elif isinstance(mod, AE):
            labels[name] = "AE (Eqs. 20-28)"
        elif isinstance(mod, BasicBlock):
            labels.update({f"{name}.{part}": "two 3x3 convs + BN (ResNet)" for part in ("conv1", "bn1", "conv2", "bn2")})
        elif isinstance(mod, DMCBottleneck):
            labels.update({f"{name}.reduce": "bottleneck 1x1s + BN", f"{name}.expand": "bottleneck 1x1s + BN"})
        elif name.endswith("downsample"):
            labels[name] = "shortcut 1x1 + BN"
    counts: dict[str, int] = {}
    for pname, p in model.named_parameters():
        key = max((k for k in labels if pname.startswith(k + ".")), key=len)
        counts[labels[key]] = counts.get(labels[key], 0) + p.numel()
    return counts


@torch.no_grad()
def _apply_masks(dmc: DynamicMaskConv, x: torch.Tensor, mask: str, m: float | None, seed: int):
    """D_M_Conv's intermediates on ``x`` under ``mask`` (Table 2) with masks drawn from ``seed``,
    the kept taps (C_out, C_in, k, k) and the first image's kept channels (C,), as bools."""
    check_choice("mask", mask, tuple(MASKS))
    kernel, channel, conditional = MASKS[mask]
    if conditional and not dmc.conditional_mask:
        raise ValueError(f"{mask} needs the conditional mask, which this module was built without")
    m1, m2 = dmc.draw_masks(x, m, torch.Generator(device=x.device).manual_seed(seed))
    parts = dmc.forward_parts(x, m1 if channel else None, m2 if kernel else None, conditional)
    taps = m2 > 0 if kernel else torch.ones_like(m2, dtype=torch.bool)
    channels = m1[0, :, 0, 0] > 0 if channel else torch.ones(x.shape[1], dtype=torch.bool)
    return parts, taps, channels


def mask_summary(dmc: DynamicMaskConv, x: torch.Tensor, mask: str = "mask8", m: float | None = None,
                 seed: int = 0) -> dict:
    """What :func:`plot_dynamic_masks` shows, as numbers: the first image's channels kept by M1,
    the share of taps kept by M2 (%), and the range of M3 over the image where ``mask`` uses it."""
    parts, taps, channels = _apply_masks(dmc, x, mask, m, seed)
    summary = {"channels kept": int(channels.sum()), "channels": len(channels),
               "taps kept %": 100 * taps.float().mean().item()}
    if "m3" in parts:
        summary |= {"M3 low": parts["m3"][0].min().item(), "M3 high": parts["m3"][0].max().item()}
    return summary


def plot_dynamic_masks(dmc: DynamicMaskConv, x: torch.Tensor, mask: str = "mask8", m: float | None = None,
                       seed: int = 0, title: str | None = None):
    """One figure of D_M_Conv at work on one input (1, C, H, W): the input, M1 (silenced channels in
    black), M2 (kept kernel taps, one 3x3 cell per output/input channel pair), M3 over the input,
    X_ke and X_out, for the masks that ``mask`` switches on. Two rows of three panels, so it fits
    the page; the input and M3 each with its own colour bar, X_ke and X_out on one scale centred
    on zero (zero is white)."""
    from .. import viz
    parts, taps, channels = _apply_masks(dmc, x, mask, m, seed)
    conditional = "m3" in parts
    k = dmc.conv.kernel_size[0]
    taps = taps.float().permute(0, 2, 1, 3).reshape(taps.shape[0] * k, taps.shape[1] * k)
    kept = channels.float()[None]
    signed = [parts["x_ke"][0].mean(0).cpu(), parts["out"][0].mean(0).cpu()]
    low, high = viz.shared_limits(signed, center_zero=True)
    scales = {"gray": {"cmap": "gray"}, "magma": {"cmap": "magma"},
              "signed": {"cmap": viz.diverging_cmap(), "vmin": low, "vmax": high}}
    panels = [("input X (channel mean)", x[0].mean(0), "gray"),
              (f"M1: {int(kept.sum())}/{x.shape[1]} channels kept", kept, "mask"),
              (f"M2: {100 * taps.mean():.0f}% taps kept", taps, "mask"),
              ("M3 (conditional)" if conditional else "no M3", parts["m3"][0, 0] if conditional else None, "magma"),
              ("X_ke (channel mean)", signed[0], "signed"),
              ("X_out (channel mean)", signed[1], "signed")]
    fig, axes = viz.page_subplots(len(panels), ncols=3, panel=2.3)
    for ax, (label, image, kind) in zip(axes, panels):
        ax.set(xticks=[], yticks=[])
        ax.set_title(label, fontsize=9)
        if image is None:
            ax.axis("off")
        elif kind == "mask":  # binary: black = dropped, white = kept
            ax.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            shown = ax.imshow(image.cpu().numpy(), **scales[kind])
            if kind != "signed":
                fig.colorbar(shown, ax=ax, shrink=0.8)
    viz.add_colorbar(fig, shown, axes[-2:], shrink=0.8)  # X_ke and X_out share one scale
    fig.suptitle(title or f"{mask}, m = {dmc.m if m is None else m}", fontsize=10)
    return fig


@torch.no_grad()
def stage_conditional_masks(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """M3 (N, 1, H, W) on ``images`` of the first D_M_Conv of each stage (the masked conv of its
    first block's second branch), in eval mode (random masks off, as at test time)."""
    inputs = capture_inputs(model, images, DynamicMaskConv)
    return {name: model.get_submodule(name).forward_parts(x)["m3"]
            for name, x in inputs.items() if name.endswith(".0.branch2.1")}


def plot_conditional_masks(masks: dict[str, torch.Tensor], images: torch.Tensor, title: str | None = None):
    """:func:`stage_conditional_masks` for their images (0-1 pixels, N, C, H, W): one row per
    stage, one column per image, M3 alone on one 0-1 scale (bright: the pixel is kept in X_co),
    with the garment's outline (the pixels :func:`conditional_mask_statistics` counts as garment)
    drawn over it. M3 is drawn opaque, so that its colours are the colour bar's."""
    from .. import viz
    n, (height, width) = len(images), images.shape[-2:]
    garment = object_mask(images).float().cpu().numpy()
    fig, axes = viz.page_subplots(n * len(masks), ncols=n, panel=1.6)
    for row, m3 in enumerate(masks.values()):
        for i in range(n):
            ax = axes[n * row + i]
            ax.imshow(m3[i, 0].cpu().numpy(), cmap="magma", vmin=0, vmax=1, extent=(0, width, height, 0))
            ax.contour(np.arange(width) + 0.5, np.arange(height) + 0.5, garment[i], levels=[0.5],
                       colors="cyan", linewidths=0.8)
            ax.axis("off")
        axes[n * row].set_title(f"stage {row + 1}", fontsize=9, loc="left")
    viz.add_colorbar(fig, axes[0].images[-1], axes, label="M3 (0-1)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def conditional_mask_statistics(masks: dict[str, torch.Tensor], images: torch.Tensor,
                                threshold: float = OBJECT_THRESHOLD) -> list[dict]:
    """Per stage, for :func:`stage_conditional_masks` over ``images`` (0-1 pixels, N, C, H, W):
    M3's mean over the garment and over the background (a pixel is garment where the image
    exceeds ``threshold``; at a stage's coarser resolution, where most of the cell's pixels are),
    and how much M3 varies within an image (its standard deviation over the pixels, averaged over
    the images): near zero, M3 keeps every pixel alike and is a fixed scaling, not a mask."""
    rows = []
    for stage, m3 in enumerate(masks.values(), 1):
        garment = F.adaptive_avg_pool2d(object_mask(images, threshold)[:, None].float(), m3.shape[-2:]) > 0.5
        rows.append({"stage": stage, "M3 on garment": m3[garment].mean().item(),
                     "M3 on background": m3[~garment].mean().item(),
                     "M3 spread within an image": m3.std((2, 3)).mean().item()})
    return rows


def m3_weight_size(model: nn.Module) -> float:
    """The mean |weight| of the convolutions that compute M3 (bias aside), over every D_M_Conv
    with a conditional mask: set beside the same network's at initialisation, how far training
    grew or shrank them."""
    sizes = [p.abs().mean().item() for m in model.modules() if isinstance(m, DynamicMaskConv) and m.conditional_mask
             for p in m.cond.parameters() if p.dim() > 1]
    if not sizes:
        raise ValueError("the model has no D_M_Conv with a conditional mask (M3)")
    return sum(sizes) / len(sizes)


@torch.no_grad()
def ae_weights(model: nn.Module, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """For every AE module, its pixel-branch weights W_p and channel weights W_a on ``images``
    (each (N, C): one value per channel and image), in eval mode."""
    weights = {}
    for name, s in capture_inputs(model, images, AE).items():
        parts = model.get_submodule(name).forward_parts(s)
        weights[name] = {key: parts[key][:, :, 0, 0] for key in ("w_p", "w_a")}
    return weights


def ae_offset(weights: dict[str, dict[str, torch.Tensor]]) -> float:
    """How far AE's weights (:func:`ae_weights`) stray from 0.5, the sigmoid of zero: the largest
    mean |w - 0.5| of any AE's W_p or W_a. Near zero, AE only scales its two branches by a half."""
    return max((w - 0.5).abs().mean().item() for parts in weights.values() for w in parts.values())


def branch_receptive_fields(block: MMCF, size: int = 25) -> list[torch.Tensor]:
    """How far each MMCF branch sees: |d(branch output at the centre) / d(branch input)| summed over
    channels, one (size, size) map per branch (3x3; 3x3 after a dilation-2 D_M_Conv; 5x5 after a
    dilation-3 one). Eval mode, so the random masks are off."""
    was_training = block.training
    block.eval()
    maps = []
    for branch, chans in zip((block.branch1, block.branch2, block.branch3), block.sizes):
        x = torch.randn(1, chans, size, size, requires_grad=True)
        branch(x)[:, :, size // 2, size // 2].sum().backward()
        maps.append(x.grad.abs().sum((0, 1)))
    block.train(was_training)
    return maps


def alternative_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts of ``model`` under the readings the chapter did not choose (open
    questions 6-8 and D_M_Conv's kernel size), each built from the modules it would replace so
    that it follows the code: AE with a full 3x3 for S_v or MixDehazeNet's MLP width 4c; the 1x1
    convs of MMCF's branches 2 and 3 halving their channels; M3 computed by a full-width 3x3, or
    by one 3x3 to a single channel with FGlo reducing by 32 (narrower than ours); D_M_Conv with a
    5x5 kernel. ``ours`` is the model."""
    def count(*modules):
        return sum(p.numel() for module in modules for p in module.parameters())

    ours = count(model)
    narrow = "M3: one 3x3 to 1 channel, FGlo /32"
    delta = dict.fromkeys(("AE: full 3x3 for S_v", "AE: MLP hidden width 4c",
                           "branches 2-3 halve their channels", "M3: full-width 3x3", narrow,
                           "D_M_Conv: 5x5 kernel"), 0)
    for module in model.modules():
        if isinstance(module, AE):
            c = module.value[1].out_channels
            delta["AE: full 3x3 for S_v"] += count(nn.Conv2d(c, c, 3)) - count(module.value[1])
            delta["AE: MLP hidden width 4c"] += count(AE(c, mlp_ratio=4.0)) - count(module)
        elif isinstance(module, DynamicMaskConv):
            c_in, c_out = module.conv.in_channels, module.conv.out_channels
            delta["D_M_Conv: 5x5 kernel"] += count(nn.Conv2d(c_in, c_out, 5, bias=False)) - count(module.conv)
            if module.conditional_mask:
                full = DynamicMaskConv(c_in, c_out, cond_reduction=1)
                delta["M3: full-width 3x3"] += count(full.cond) - count(module.cond)
                single = DynamicMaskConv(c_in, c_out, cond_reduction=c_in)  # Conv3x3 b -> 1, Conv1x1 1 -> 1
                delta[narrow] += count(single.cond) - count(module.cond)
        elif isinstance(module, MMCF):
            reduced = FGlo(module.fglo.fc[1].in_channels, reduction=32)
            delta[narrow] += count(reduced) - count(module.fglo)
            for branch in (module.branch2, module.branch3):
                c, dmc, last = branch[0].in_channels, branch[1], branch[2]
                half = max(c // 2, 1)
                halved = (nn.Conv2d(c, half, 1, bias=False),
                          DynamicMaskConv(half, half, dmc.conv.dilation[0], conditional_mask=dmc.conditional_mask),
                          nn.Conv2d(half, c, last.kernel_size, bias=False))
                delta["branches 2-3 halve their channels"] += count(*halved) - count(branch)
    return {"ours": ours, **{reading: ours + d for reading, d in delta.items()}}
