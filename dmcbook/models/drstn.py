"""DRSTN: the deep residual soft thresholding network (Cao and Zhu, Computer Science 2024).

A ResNet-18 whose residual blocks end in a learned soft threshold (Eq. 15): the threshold of
each channel is the channel's mean absolute value times a learned factor in (0, 1), as in the
channel-wise deep residual shrinkage network (DRSN-CW, Zhao et al. 2019), which Sec. 3.3's
description fits (the paper does not cite it). One threshold per channel, rather than DRSN-CS's
one per sample, and its place at the end of the residual branch are our reading: Fig. 2, which
would show them, is missing from the text. Table 2 varies the first convolution's kernel and the
number of blocks per stage (V1-V5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from .common import ResNet, scaled_widths
from ..checks import check_choice
from .registry import register_model

STEM_KERNELS = (3, 7)


def soft_threshold(x: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Eq. (15): ``x - tau`` above ``tau``, 0 on ``[-tau, tau]``, ``x + tau`` below ``-tau``.

    Its derivative in ``x`` is Eq. (16): 1 outside ``[-tau, tau]`` and 0 inside; autograd
    gives exactly that, and a gradient in ``tau`` of ``-sign(x)`` outside. ``tau`` broadcasts
    against ``x`` (one threshold per channel is shape ``(N, C, 1, 1)``), which is why this is not
    ``F.softshrink``: that takes one Python float for the whole tensor.
    """
    return torch.sign(x) * F.relu(x.abs() - tau)


class SoftThreshold(nn.Module):
    """The learned soft threshold of Fig. 2's blue box as Sec. 3.3 describes it, built channel-wise
    (DRSN-CW's shrinkage). The paper leaves per channel or shared open: global average pooling of
    ``|x|`` gives "an output feature map, denoted A", and the figure is missing.

    For an input ``x`` of shape ``(N, C, H, W)``:
    ``A = GAP(|x|)`` (one value per sample and channel, from that channel alone),
    ``alpha = Sigmoid(FC(ReLU(BN(FC(A)))))`` in (0, 1), ``tau = A * alpha`` and
    ``y = soft_threshold(x, tau)`` (Eq. 15). So ``0 <= tau_c < A_c``: each channel is shrunk by
    less than its own mean magnitude. ``alpha`` mixes channels through the FC layers (as an SE
    block does); ``A``, the scale of each threshold, does not.

    ``reduction`` sets the width M of the hidden FC layer to ``channels // reduction`` (at least 1).
    The paper names M (Sec. 3.3: "M is the number of FC neurons") without a value, and its Fig. 2
    is missing from the text. The default 4 (M = C/4) is the DRSN authors' reference TFLearn code
    (github.com/zhao62/Deep-Residual-Shrinkage-Networks, DRSN.py: ``out_channels//4``), which that
    repository recommends over its Keras file; the Keras file uses M = C (``reduction=1``).
    A batch of one sample in training mode has no batch variance, so BN then normalises with its
    running statistics instead of raising.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive integer; got {reduction!r}")
        hidden = max(channels // reduction, 1)
        # No bias: BN subtracts the batch mean right after, so a bias there gets zero gradient
        # (the reference code has one; it never trains).
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def _normalize(self, h: torch.Tensor) -> torch.Tensor:
        if self.training and h.shape[0] == 1:
            bn = self.bn
            return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.bn(h)

    def thresholds(self, x: torch.Tensor) -> torch.Tensor:
        """``tau`` of shape ``(N, C, 1, 1)``, one threshold per sample and channel."""
        a = x.abs().mean(dim=(2, 3))
        alpha = torch.sigmoid(self.fc2(self.relu(self._normalize(self.fc1(a)))))
        return (a * alpha)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_threshold(x, self.thresholds(x))


class STRB(BasicBlock):
    """The soft thresholding residual block (STRB, Table 2): torchvision's post-activation
    BasicBlock with a :class:`SoftThreshold` on the residual branch, after the second BN and
    before the add, and the block's ReLU after the add.

    The reference DRSN code (zhao62/Deep-Residual-Shrinkage-Networks, ``DRSN.py``) also shrinks
    at the end of the residual branch, before the add, but in a pre-activation unit: BN, ReLU,
    conv, BN, ReLU, conv, threshold, add, and no ReLU after the add. There the threshold follows a
    convolution, not a BN, and the negative values it keeps leave the block; here the ReLU after
    the add sets every negative sum to zero, so a negative feature the threshold keeps (Sec. 3.2:
    soft thresholding "can keep useful negative features") can lower the shortcut's values but
    never leaves the block negative. Either way the identity path is left untouched, so the block
    can still pass its input through. We keep the post-activation block because subclassing
    torchvision's keeps the names ``conv1``/``bn1``/``conv2``/``bn2``/``downsample``, so ResNet-18
    weights load by name (model transfer); the book's runs were trained with it.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 reduction: int = 4):
        super().__init__(inplanes, planes, stride, downsample)
        self.soft_threshold = SoftThreshold(planes, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.soft_threshold(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class DRSTN(ResNet):
    """DRSTN (Sec. 3.3, Table 2): a stem, stages of :class:`STRB`, global pooling and an FC.

    ``layers`` gives the blocks per stage (Conv_2 ... Conv_5); three entries drop Conv_5 (V5).
    ``stem_kernel`` is Conv_1's kernel (7 in V1, 3 in V2-V5). ``stem`` only sets the
    down-sampling: ``imagenet`` is stride 2 plus max-pooling as in ResNet-18, ``cifar`` keeps
    full resolution for 28-32 pixel images. Table 2 changes the kernel alone, so the two are
    independent here, unlike ``common.make_stem`` which ties 3x3 to ``cifar`` and 7x7 to ``imagenet``.
    """

    def __init__(self, layers, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar",
                 stem_kernel: int = 3, width: int = 64, reduction: int = 4):
        check_choice("stem_kernel", stem_kernel, STEM_KERNELS)
        super().__init__(STRB, layers, num_classes=num_classes, in_chans=in_chans, stem=stem,
                         widths=scaled_widths(width, len(layers)), block_kwargs={"reduction": reduction})
        conv = self.stem[0]
        if conv.kernel_size[0] != stem_kernel:
            self.stem[0] = nn.Conv2d(in_chans, conv.out_channels, stem_kernel, conv.stride,
                                     stem_kernel // 2, bias=False)
            nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out", nonlinearity="relu")


@register_model
def drstn_v1(num_classes=10, in_chans=3, stem="cifar", width=64, reduction=4):
    """DRSTN_V1: ResNet-18's layout (2, 2, 2, 2) with STRBs and the 7x7 Conv_1."""
    return DRSTN((2, 2, 2, 2), num_classes, in_chans, stem, 7, width, reduction)


@register_model
def drstn_v2(num_classes=10, in_chans=3, stem="cifar", width=64, reduction=4):
    """DRSTN_V2 = DRSTN_KS(3*3): V1 with a 3x3 Conv_1."""
    return DRSTN((2, 2, 2, 2), num_classes, in_chans, stem, 3, width, reduction)


@register_model
def drstn_v3(num_classes=10, in_chans=3, stem="cifar", width=64, reduction=4):
    """DRSTN_V3 = DRSTN_KS(3*3)_RB(1:1:1:1): one STRB per stage."""
    return DRSTN((1, 1, 1, 1), num_classes, in_chans, stem, 3, width, reduction)


@register_model
def drstn_v4(num_classes=10, in_chans=3, stem="cifar", width=64, reduction=4):
    """DRSTN_V4 = DRSTN_KS(3*3)_RB(2:3:5:2): most blocks in Conv_4."""
    return DRSTN((2, 3, 5, 2), num_classes, in_chans, stem, 3, width, reduction)


@register_model
def drstn_v5(num_classes=10, in_chans=3, stem="cifar", width=64, reduction=4):
    """DRSTN_V5 = DRSTN_KS(3*3)_RB(2:2:2): Conv_5 removed, so the features are 4x width wide."""
    return DRSTN((2, 2, 2), num_classes, in_chans, stem, 3, width, reduction)
