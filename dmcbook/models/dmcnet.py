"""DMCNet: dynamic mask convolution for image classification (Jiang, You and Zhang, 2026).

The text extraction of the paper carries no equation numbers, so the numbers below count its
display equations in order: (1)-(2) channel mask, (3)-(4) dilated output size, (5)-(6) kernel
mask, (7)-(8) conditional mask, (9)-(10) mask fusion, (11)-(13) MMCF stem and split, (14)-(16)
the three branches, (17) concatenation, (18) FGlo, (19) scaled residual output, (20)-(28) AE.

Choices where the paper is silent or contradicts itself (each is discussed in the chapter, and
the parameter counts of Table 7 were the referee):
- ``m`` is the drop probability of the random masks (the sentence "r > m keeps"); default 0.1.
- M1 and M2 act in training only and rescale kept values by 1/(1-m), as inverted dropout does,
  so evaluation is deterministic and sees the expected activation.
- M3 is one sigmoid map per pixel, from Conv3x3 (b -> b/16) and Conv1x1 (-> 1).
- Without the conditional mask the X_co term of Eq. 10 is left out (X_out = X_ke), rather than
  M3 taken as 1 (X_out = X_ch + X_ke, an identity path beside the dilated conv).
- D_M_Conv's kernel is 3x3 (the text gives only its dilation) and M2 has the weight's full shape
  (C_out, C_in, k, k), after "the shape of the kernel's weights"; Eq. 5's three indices would fit
  one (C_in, k, k) mask shared by the output channels.
- FGlo's weights F_T multiply F_cat (the equation for F_out leaves F_T unused).
- The 1x1 convs of branches 2 and 3 keep c/3 channels; branch 1 takes the remainder when c is
  not divisible by 3.
- AE's S_v uses a depth-wise 3x3 and its MLP a hidden width of c (MixDehazeNet's block, which AE
  follows, uses a depth-wise 3x3 too); W_p is one weight per channel, as its equation says.
- AE sits on the average-pool shortcut of the first block of a stage; placements A..H of
  Table 4 are the eight subsets of {DMCBLOCK2, 3, 4}.
- The 3x3 stem for small images is conv + BN + ReLU, the package's stem for every network;
  the paper's sentence names only "a 3x3 conv and ReLU" (and only "a 7x7 conv and max-pooling"
  for large images, whose BN and ReLU no ResNet-34 lacks). The BN adds 128 parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from .common import DepthwiseConv2d, Float32Conv2d, ResNet, cpu_float32_conv2d, scaled_widths
from ..checks import check_choice
from .registry import register_model

# Table 2: (kernel mask M2, channel mask M1, conditional mask M3).
MASKS = {
    "mask1": (False, False, False), "mask2": (True, False, False),
    "mask3": (False, True, False), "mask4": (False, False, True),
    "mask5": (True, True, False), "mask6": (True, False, True),
    "mask7": (False, True, True), "mask8": (True, True, True),
}
# Table 4 / Fig. 5 (the figure is missing from the text). A is Net1 of Table 7 (its row of
# accuracies is identical) and H is "AE in DMCBLOCK2, 3 and 4"; the text says B (block 2
# alone) is weak and D (block 4 alone) better, which the subset order below reproduces.
AE_PLACEMENTS = {
    "A": (), "B": (2,), "C": (3,), "D": (4,),
    "E": (2, 3), "F": (2, 4), "G": (3, 4), "H": (2, 3, 4),
}
# Fig. 2: (a) strided 1x1-conv shortcut, (b) average-pool shortcut, (c) = (b) + AE.
BLOCKS = {"a": "conv", "b": "avgpool", "c": "avgpool"}
# Table 7 ablations as create_model("dmcnet34", **ABLATIONS[name]) options.
ABLATIONS = {
    "DMCNet": {},
    "Net1": {"ae": "A"},
    "Net2": {"mmcf": False},
    "Net3": {"mmcf": False, "ae": "A"},
    # "Net3 with the initial 3x3 conv changed to 7x7": the ImageNet stem (7x7 + max-pool) on Net3.
    # Same count as ResNet-34 (Table 7's 21.34 M); ResNet-34 itself has the strided shortcut, block "a".
    "Net4": {"mmcf": False, "ae": "A", "stem": "imagenet"},
}


def _check_channels(what: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {value!r}")


class DynamicMaskConv(nn.Module):
    """D_M_Conv, the dilated convolution with three masks (Fig. 3, Eqs. 1-10).

    - channel mask M1 (Eqs. 1-2): one uniform number per sample and input channel; the channel
      is zeroed where r < m, so X_ch = X * M1;
    - kernel mask M2 (Eqs. 5-6): a mask of the weight's shape; X_ke = conv_d(X_ch, W * M2);
    - conditional mask M3 (Eq. 7): Sigmoid(Conv1x1(Conv3x3(X_ch))), one value per pixel;
      X_co = X_ch * M3 (Eq. 9) and X_out = X_co + X_ke (Eq. 10).

    M1 and M2 are random and act in training only, rescaling kept values by 1/(1-m) like
    inverted dropout. Without the conditional mask the X_co term is dropped as well, so with all
    three switches off the module is a plain dilated convolution.
    """

    def __init__(self, in_chans: int, out_chans: int, dilation: int = 2, m: float = 0.1,
                 kernel_mask: bool = True, channel_mask: bool = True, conditional_mask: bool = True,
                 kernel_size: int = 3, cond_reduction: int = 16):
        super().__init__()
        _check_channels("in_chans", in_chans)
        _check_channels("out_chans", out_chans)
        if not 0.0 <= m < 1.0:
            raise ValueError(f"m is the drop probability and must lie in [0, 1); got {m!r}")
        if conditional_mask and in_chans != out_chans:
            raise ValueError(f"X_co has in_chans={in_chans} channels and X_ke out_chans={out_chans}; "
                             "Eq. 10 adds them, so the conditional mask needs in_chans == out_chans")
        self.m = m
        self.kernel_mask, self.channel_mask, self.conditional_mask = kernel_mask, channel_mask, conditional_mask
        # fp32 under a CPU bf16 autocast: oneDNN's bf16 dilated kernels give non-finite weight gradients
        self.conv = Float32Conv2d(in_chans, out_chans, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                                  dilation=dilation, bias=False)
        if conditional_mask:
            mid = max(in_chans // cond_reduction, 1)
            self.cond = nn.Sequential(nn.Conv2d(in_chans, mid, 3, padding=1), nn.Conv2d(mid, 1, 1), nn.Sigmoid())

    def draw_masks(self, x: torch.Tensor, m: float | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw M1 (N, C, 1, 1) and M2 (the weight's shape) with drop probability ``m`` (default: the
        module's), already scaled by 1/(1-m). Drawn explicitly rather than through F.dropout2d so
        that the chapter can show them; ``forward`` uses those whose switch is on."""
        m = self.m if m is None else m
        w = self.conv.weight
        m1 = torch.rand(x.shape[0], x.shape[1], 1, 1, generator=generator, device=x.device) >= m
        m2 = torch.rand(w.shape, generator=generator, device=w.device) >= m
        return m1.to(x.dtype) / (1 - m), m2.to(w.dtype) / (1 - m)

    def forward_parts(self, x: torch.Tensor, m1: torch.Tensor | None = None, m2: torch.Tensor | None = None,
                      conditional: bool | None = None) -> dict[str, torch.Tensor]:
        """Every intermediate of Eqs. 1-10 for given masks (None: no mask): x_ch, m3, x_co, x_ke, out.
        ``conditional=False`` leaves the X_co term out (default: the module's switch)."""
        conditional = self.conditional_mask if conditional is None else conditional
        if conditional and not self.conditional_mask:
            raise ValueError("this DynamicMaskConv was built without the conditional mask")
        x_ch = x if m1 is None else x * m1
        weight = self.conv.weight if m2 is None else self.conv.weight * m2
        x_ke = cpu_float32_conv2d(x_ch, weight, None, 1, self.conv.padding, self.conv.dilation)
        parts = {"x_ch": x_ch, "x_ke": x_ke, "out": x_ke}
        if conditional:
            m3 = self.cond(x_ch)
            parts.update(m3=m3, x_co=x_ch * m3, out=x_ch * m3 + x_ke)
        return parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m1 = m2 = None
        if self.training and (self.channel_mask or self.kernel_mask):
            m1, m2 = self.draw_masks(x)
            m1, m2 = (m1 if self.channel_mask else None), (m2 if self.kernel_mask else None)
        return self.forward_parts(x, m1, m2)["out"]


class FGlo(nn.Module):
    """FGlo, the global feature weighting after the concatenation (Eq. 18).

    F_T = Sigmoid(Conv1x1(Conv1x1(GAP(F_cat)))), returned as weights of shape (N, C, 1, 1).
    As the paper writes it there is no activation between the two 1x1 convs (CGNet's FGlo, which
    this borrows from, has a ReLU there); the reduction of CGNet, 16, is kept.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        _check_channels("channels", channels)
        mid = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid, 1), nn.Conv2d(mid, channels, 1),
                                nn.Sigmoid())

    def forward(self, f_cat: torch.Tensor) -> torch.Tensor:
        return self.fc(f_cat)


def split_sizes(channels: int) -> tuple[int, int, int]:
    """Channel groups of Eq. 13: c/3 each, the remainder going to branch 1."""
    _check_channels("MMCF channels", channels, 3)
    third = channels // 3
    return channels - 2 * third, third, third


class MMCF(nn.Module):
    """The multi-branch mask convolution fusion block (Eqs. 11-19), used as a residual block.

    F0 = ReLU(BN(Conv3x3(F))) (Eq. 11, strided when the block down-samples), split into
    [F1, F2, F3] (Eq. 13); F1' = BN(Conv3x3(F1)) (14); F2' = Conv3x3(D_M_Conv_d2(Conv1x1(F2))) (15);
    F3' = Conv5x5(D_M_Conv_d3(Conv1x1(F3))) (16); F_cat = Concat (17); F_T = FGlo(F_cat) (18);
    F_out = s * (F_cat * F_T) + F_in (19), where F_in is the input through ``downsample``
    (one of Fig. 2's shortcuts) or the input itself. torchvision's block signature, so the
    ResNet skeleton stacks it.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 s: float = 0.5, m: float = 0.1, kernel_mask: bool = True, channel_mask: bool = True,
                 conditional_mask: bool = True, dilations: tuple[int, int] = (2, 3), fglo_reduction: int = 16):
        super().__init__()
        _check_channels("inplanes", inplanes)
        c1, c2, c3 = split_sizes(planes)
        self.s = s
        self.sizes = (c1, c2, c3)
        self.downsample = downsample
        self.f0 = nn.Sequential(nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                                nn.ReLU(inplace=True))
        masks = dict(m=m, kernel_mask=kernel_mask, channel_mask=channel_mask, conditional_mask=conditional_mask)
        self.branch1 = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
        self.branch2 = nn.Sequential(conv1x1(c2, c2), DynamicMaskConv(c2, c2, dilations[0], **masks),
                                     nn.Conv2d(c2, c2, 3, padding=1, bias=False))
        self.branch3 = nn.Sequential(conv1x1(c3, c3), DynamicMaskConv(c3, c3, dilations[1], **masks),
                                     nn.Conv2d(c3, c3, 5, padding=2, bias=False))
        self.fglo = FGlo(planes, fglo_reduction)

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediates for the chapter's pictures: f0, the three branch outputs, f_cat, f_t, out."""
        f0 = self.f0(x)
        f1, f2, f3 = torch.split(f0, self.sizes, dim=1)
        branches = [self.branch1(f1), self.branch2(f2), self.branch3(f3)]
        f_cat = torch.cat(branches, dim=1)
        f_t = self.fglo(f_cat)
        f_in = x if self.downsample is None else self.downsample(x)
        return {"f0": f0, "branches": branches, "f_cat": f_cat, "f_t": f_t, "out": self.s * f_cat * f_t + f_in}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x)["out"]


class AE(nn.Module):
    """The adaptive enhancement module (Fig. 4, Eqs. 20-28).

    Pixel branch: S_v = Conv3x3(Conv1x1(S)) (20), W_p = Sigmoid(Conv1x1(AAP(S))) (21-22),
    S_spa = S_v * W_p (23). Channel branch (ECA): W_a = Sigmoid(Conv1d(AAP(S))) (24),
    S_att = S * W_a (25). S_mlp = Conv1x1(GELU(Conv1x1(Concat(S_spa, S_att)))) (26-27),
    S_out = S + S_mlp (28). The 3x3 of S_v is depth-wise and the MLP's hidden width is c: the
    parameter counts of Table 7 (AE adds 1.73 M) fit only these. The ECA kernel size follows ECA-Net's
    rule k = odd(|log2(c) + 1| / 2), but at least 3: for c < 8 ECA-Net's rule gives 1 (a
    per-channel gate with no neighbours), where this module uses 3. Written here rather than
    taken from timm's EcaModule because that module returns only S_att, and the chapter plots W_a.
    """

    def __init__(self, channels: int, mlp_ratio: float = 1.0):
        super().__init__()
        _check_channels("channels", channels)
        hidden = max(int(channels * mlp_ratio), 1)
        t = int(abs(math.log2(channels) + 1) / 2)
        k = max(t if t % 2 else t + 1, 3)
        self.value = nn.Sequential(nn.Conv2d(channels, channels, 1),
                                   DepthwiseConv2d(channels, 3, padding=1))
        self.pixel_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.Sigmoid())
        self.channel_conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.mlp = nn.Sequential(nn.Conv2d(2 * channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward_parts(self, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediates for the chapter's pictures: s_v, w_p, s_spa, w_a, s_att, s_mlp, out."""
        s_v = self.value(s)
        w_p = self.pixel_gate(s)
        w_a = torch.sigmoid(self.channel_conv(s.mean((2, 3)).unsqueeze(1))).view(s.shape[0], -1, 1, 1)
        s_spa, s_att = s_v * w_p, s * w_a
        s_mlp = self.mlp(torch.cat([s_spa, s_att], dim=1))
        return {"s_v": s_v, "w_p": w_p, "s_spa": s_spa, "w_a": w_a, "s_att": s_att, "s_mlp": s_mlp,
                "out": s + s_mlp}

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(s)["out"]


def with_ae(downsample: nn.Module | None, channels: int, ae: bool) -> nn.Module | None:
    """Fig. 2(c): AE appended to a block's average-pool shortcut.

    The skeleton passes ``ae`` to every block of a stage; only the first one has a shortcut
    to carry it, so a stage gets exactly one AE.
    """
    return nn.Sequential(downsample, AE(channels)) if ae and downsample is not None else downsample


class DMCBasicBlock(MMCF):
    """The residual block of DMCNet-18/34: MMCF with a Fig. 2 shortcut, optionally carrying AE."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, ae=False, **mmcf):
        super().__init__(inplanes, planes, stride, with_ae(downsample, planes, ae), **mmcf)


class PlainBlock(BasicBlock):
    """torchvision's BasicBlock with a Fig. 2 shortcut, optionally carrying AE (Net2, Net3)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, ae=False):
        super().__init__(inplanes, planes, stride, with_ae(downsample, planes, ae))


class DMCBottleneck(nn.Module):
    """The bottleneck of DMCNet-50/101: 1x1 reduce, MMCF in place of the 3x3, 1x1 expand.

    MMCF keeps its own residual (Eq. 19); when the block down-samples, its F_in is average-pooled
    (no parameters, the channel count is unchanged). The outer shortcut is Fig. 2's, so AE, when
    the stage has one, works at the expanded width 4c. The ReLU before ``expand`` is the one
    ResNet's bottleneck has after its 3x3 (MMCF's Eq. 19 ends without one); no equation of the
    paper gives it.
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, ae=False, **mmcf):
        super().__init__()
        self.reduce = nn.Sequential(conv1x1(inplanes, planes), nn.BatchNorm2d(planes), nn.ReLU(inplace=True))
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else None
        self.mmcf = MMCF(planes, planes, stride, pool, **mmcf)
        self.expand = nn.Sequential(nn.ReLU(inplace=True), conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4))
        self.downsample = with_ae(downsample, planes * 4, ae)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.expand(self.mmcf(self.reduce(x))) + identity)


def _dmcnet(layers, bottleneck, num_classes, in_chans, stem, width, mask, ae, block, m, mmcf):
    check_choice("block", block, tuple(BLOCKS))
    if ae is None:
        ae = "H" if block == "c" else "A"
    check_choice("AE placement", ae, tuple(AE_PLACEMENTS))
    if ae != "A" and block != "c":
        raise ValueError(f"AE placement {ae!r} needs block 'c' (Fig. 2c); block {block!r} has no AE")
    if mmcf:
        mask = "mask8" if mask is None else mask
        check_choice("mask", mask, tuple(MASKS))
        kernel_mask, channel_mask, conditional_mask = MASKS[mask]
        kwargs = dict(m=0.1 if m is None else m, kernel_mask=kernel_mask, channel_mask=channel_mask,
                      conditional_mask=conditional_mask)
        unit = DMCBottleneck if bottleneck else DMCBasicBlock
    else:
        if mask is not None or m is not None:
            raise ValueError("mask and m configure MMCF; they do not apply with mmcf=False")
        kwargs, unit = {}, PlainBlock
    per_stage = [{"ae": stage in AE_PLACEMENTS[ae]} for stage in (1, 2, 3, 4)]
    net = ResNet(unit, layers, num_classes=num_classes, in_chans=in_chans, stem=stem, widths=scaled_widths(width),
                 shortcut=BLOCKS[block], block_kwargs=kwargs, block_kwargs_per_stage=per_stage)
    return net


# Options of every constructor: ``mask`` mask1..mask8 of Table 2 (default mask8, all three masks);
# ``ae`` the AE placement A..H of Table 4 (default H with block c, A otherwise); ``block`` a, b or c
# of Fig. 2 (default c); ``m`` the drop probability of the random masks (default 0.1);
# ``mmcf=False`` swaps MMCF for torchvision's two-conv block (Table 7, see ``ABLATIONS``).


@register_model
def dmcnet18(num_classes=10, in_chans=3, stem="cifar", width=64, mask=None, ae=None, block="c", m=None, mmcf=True):
    """DMCNet-18: MMCF basic blocks (2, 2, 2, 2)."""
    return _dmcnet((2, 2, 2, 2), False, num_classes, in_chans, stem, width, mask, ae, block, m, mmcf)


@register_model
def dmcnet34(num_classes=10, in_chans=3, stem="cifar", width=64, mask=None, ae=None, block="c", m=None, mmcf=True):
    """DMCNet-34, the paper's main model: MMCF basic blocks (3, 4, 6, 3)."""
    return _dmcnet((3, 4, 6, 3), False, num_classes, in_chans, stem, width, mask, ae, block, m, mmcf)


@register_model
def dmcnet50(num_classes=10, in_chans=3, stem="cifar", width=64, mask=None, ae=None, block="c", m=None):
    """DMCNet-50: bottlenecks carrying MMCF (3, 4, 6, 3)."""
    return _dmcnet((3, 4, 6, 3), True, num_classes, in_chans, stem, width, mask, ae, block, m, True)


@register_model
def dmcnet101(num_classes=10, in_chans=3, stem="cifar", width=64, mask=None, ae=None, block="c", m=None):
    """DMCNet-101: bottlenecks carrying MMCF (3, 4, 23, 3)."""
    return _dmcnet((3, 4, 23, 3), True, num_classes, in_chans, stem, width, mask, ae, block, m, True)
