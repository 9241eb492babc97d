"""Building blocks shared by every paper's network: stems, the residual-stage builder and a
configurable ResNet skeleton that the chapters fill with their own blocks."""
from __future__ import annotations

from typing import Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, is_integer

SHORTCUTS = ("conv", "avgpool")


def cpu_float32_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                       padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d``, but computed in fp32 where a CPU autocast would run it in bf16 (see
    :class:`Float32Conv2d`); everywhere else exactly ``F.conv2d``."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), stride, padding,
                            dilation, groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class Float32Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) that computes in fp32 where a CPU
    autocast would run it in bf16, for the convolutions oneDNN's bf16 kernels (torch 2.14, AMX
    CPU) serve badly: a dilated one gets non-finite weight gradients at some shapes
    (tests/test_engine_dilated.py), a depthwise one took an order of magnitude longer than in
    fp32 (results/performance/depthwise.json). Both have few MACs, so fp32 costs little. On GPUs
    and outside autocast it is a plain ``nn.Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"Float32Conv2d pads with zeros only; got padding_mode={self.padding_mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_float32_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class DepthwiseConv2d(Float32Conv2d):
    """A depthwise convolution (``groups`` = channels: one filter per channel) in fp32 under a
    CPU autocast (:class:`Float32Conv2d`): GDFRNet's 18 depthwise convs took a third of its
    training step in bf16."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__(channels, channels, kernel_size, stride, padding, groups=channels, bias=bias)


def make_stem(stem: str, in_chans: int, out_chans: int, deep: bool = False) -> nn.Sequential:
    """``cifar``: 3x3 conv-BN-ReLU at full resolution. ``imagenet``: 7x7/2 conv-BN-ReLU and 3x3/2 max-pool.

    ``deep=True`` replaces the single conv by ResNet-D's deep stem (Bag of Tricks, He et al. 2019;
    timm's ``stem_type="deep"``): three 3x3 convs of widths out/2, out/2, out with BN-ReLU between
    them, the first one strided for ``imagenet``. Index 0 of the stem is always the conv part and
    index 1 its BN, so torchvision's and timm's ``conv1``/``bn1`` map onto ``stem.0``/``stem.1``.
    """
    check_choice("stem", stem, ("cifar", "imagenet"))
    stride = 1 if stem == "cifar" else 2
    if deep:
        if out_chans % 2:
            raise ValueError(f"the deep stem has out/2 channels in its first convs; got an odd width {out_chans}")
        mid = out_chans // 2
        conv = nn.Sequential(nn.Conv2d(in_chans, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid),
                             nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                             nn.Conv2d(mid, out_chans, 3, 1, 1, bias=False))
    elif stem == "cifar":
        conv = nn.Conv2d(in_chans, out_chans, 3, 1, 1, bias=False)
    else:
        conv = nn.Conv2d(in_chans, out_chans, 7, 2, 3, bias=False)
    layers = [conv, nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(3, 2, 1)) if stem == "imagenet" else nn.Sequential(*layers)


def make_shortcut(in_chans: int, out_chans: int, stride: int, kind: str = "conv") -> nn.Module | None:
    """The projection shortcut of a residual block, or None where the identity fits.

    ``conv`` is ResNet's strided 1x1 conv + BN; ``avgpool`` averages first and then projects with
    a stride-1 1x1 conv + BN, so no input pixel is skipped (ResNet-D, DMCNet's Fig. 2b).
    """
    check_choice("shortcut", kind, SHORTCUTS)
    if stride == 1 and in_chans == out_chans:
        return None
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), nn.BatchNorm2d(out_chans))
    pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    return nn.Sequential(pool, nn.Conv2d(in_chans, out_chans, 1, 1, bias=False), nn.BatchNorm2d(out_chans))


class ResNet(nn.Module):
    """A ResNet skeleton: stem, four (or fewer) residual stages, global pooling and a classifier.

    ``block`` follows torchvision's signature ``block(inplanes, planes, stride, downsample, **block_kwargs)``
    and has a class attribute ``expansion``. ``block_kwargs_per_stage`` lets a paper switch a module
    on in some stages only (DMCNet's AE placements, for example). ``deep_stem``: see :func:`make_stem`.
    """

    def __init__(self, block: Type[nn.Module], layers: Sequence[int], num_classes: int = 10,
                 in_chans: int = 3, stem: str = "cifar", widths: Sequence[int] = (64, 128, 256, 512),
                 shortcut: str = "conv", block_kwargs: dict | None = None,
                 block_kwargs_per_stage: Sequence[dict] | None = None, deep_stem: bool = False):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        check_choice("shortcut", shortcut, SHORTCUTS)
        self.stem = make_stem(stem, in_chans, widths[0], deep_stem)
        inplanes = widths[0]
        stages = []
        for index, (planes, depth) in enumerate(zip(widths, layers)):
            kwargs = dict(block_kwargs or {})
            if block_kwargs_per_stage is not None:
                kwargs.update(block_kwargs_per_stage[index])
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(depth):
                s = stride if b == 0 else 1
                out = planes * block.expansion
                blocks.append(block(inplanes, planes, s, make_shortcut(inplanes, out, s, shortcut), **kwargs))
                inplanes = out
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(stages)
        self.num_features = inplanes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)

    def forward_features(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x):
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


def init_weights(model: nn.Module) -> None:
    """He initialisation for convs, unit BN, as torchvision's ResNet does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def scaled_widths(width: int, stages: int = 4) -> tuple[int, ...]:
    """Stage widths that double from ``width``: 64 gives ResNet's (64, 128, 256, 512)."""
    if not is_integer(width) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}")
    return tuple(width * 2 ** i for i in range(stages))
