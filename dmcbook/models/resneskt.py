"""ResNeSkt (Luo and Cai): ResNeSt's split attention followed by a spatial-kernel attention.

Each bottleneck splits its features into K cardinal groups of R splits (Eq. 1-3, ResNeSt's split
attention), then gives every group a spatial weight chosen between a 3x3 and a 5x5 view of its
average-, max- and GeM-pooled maps (Eq. 4-5 and the text after them, SKNet-style selection).
With the spatial branch off the network is a ResNeSt with the same stem, blocks and shortcuts
(and with ``stem="imagenet", deep_stem=True, avd=True`` exactly timm's ``resnest50d``).

GeM and the spatial-kernel attention are written here because no library has them (timm and
torchvision have no GeM, let alone one that pools along channels); the split attention reuses
timm's ``RadixSoftmax`` and is checked against timm's ``SplitAttn``.

The Table 2 baselines are registered here too. They are built from the community's reference
blocks (torchvision's ``Bottleneck`` for ResNet/ResNeXt, timm's ``Bottleneck`` with SE or CBAM,
``SelectiveKernelBottleneck`` and ``ResNestBottleneck``) inside the package's ResNet skeleton, so
that every network here shares the same stems, shortcuts and ``width`` option.
"""
from __future__ import annotations

import functools
from typing import Dict, Sequence

import torch
from timm.layers.split_attn import RadixSoftmax
from timm.models.resnest import ResNestBottleneck
from timm.models.resnet import Bottleneck as TimmBottleneck
from timm.models.sknet import SelectiveKernelBottleneck
from torch import nn
from torchvision.models.resnet import Bottleneck

from .common import ResNet, scaled_widths
from ..checks import check_choice
from .registry import register_model

LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 200: (3, 24, 36, 3)}

# The paper's ten ImageNet classes (Sec. 2.2; dmcbook.data.IMAGENET10_WNIDS) with their ImageNet names.
IMAGENET10_NAMES = {"n01514668": "cock", "n01530575": "brambling", "n01728572": "thunder snake",
                    "n01847000": "drake", "n01871265": "tusker", "n02708093": "analog clock",
                    "n02814533": "beach wagon", "n02963159": "cardigan", "n03991062": "pot", "n11939491": "daisy"}

# The paper's Tables 1 and 2 (10 ImageNet classes, 224x224): registered name -> (label, parameters in
# millions, GFLOPs as thop counts them, i.e. G multiply-accumulates (Sec. 2.3.2), top-1 accuracy in %).
# The ResNeXt, SENet and SKNet sizes repeat SKNet's Table 2 (Li et al. 2019), where SENet is
# SE-ResNeXt 32x4d; the registered seresnet50/101 are SE-ResNet (the chapter counts both).
PAPER_TABLE = {
    "resneskt50": ("ResNeSkt-50", 27.6, 4.32, 81.39),
    "resneskt101": ("ResNeSkt-101", 48.3, 8.19, 81.74),
    "resneskt200": ("ResNeSkt-200", 70.1, 13.99, 82.05),
    "resnet50": ("ResNet-50", 25.5, 4.14, 75.06),
    "resnext50_32x4d": ("ResNeXt-50", 25.0, 4.24, 76.63),
    "seresnet50": ("SENet-50 as SE-ResNet-50", 27.7, 4.25, 77.76),
    "sknet50": ("SKNet-50", 27.5, 4.47, 78.14),
    "resnest50": ("ResNeSt-50", 27.5, 4.25, 80.06),
    "cbam_resnet50": ("ResNet-50+CBAM", 28.1, 4.36, 77.34),
    "resnet101": ("ResNet-101", 44.5, 7.87, 76.26),
    "resnext101_32x4d": ("ResNeXt-101", 44.3, 7.99, 77.82),
    "seresnet101": ("SENet-101 as SE-ResNet-101", 49.2, 8.00, 78.35),
    "sknet101": ("SKNet-101", 48.9, 8.46, 78.78),
    "resnest101": ("ResNeSt-101", 48.3, 8.07, 80.53),
    "cbam_resnet101": ("ResNet-101+CBAM", 49.3, 8.05, 77.86),
}


class GeM(nn.Module):
    """Generalised-mean pooling, Eq. (4): ``(mean over dim of x^p)^(1/p)``.

    p = 1 is average pooling and p -> infinity approaches max pooling. Inputs are clamped to
    ``eps`` first, so a fractional power never sees a negative value (Radenovic et al., whose
    GeM the paper cites). ``dim=(2, 3)`` pools over space (global pooling); ``dim=1`` pools over
    channels into a spatial map, as the spatial-kernel attention does. ``learnable`` makes p a
    trained parameter, as in Radenovic et al.; the paper gives only its value, p = 3. p is not
    constrained: a p that reached 0 would make the power 1/p infinite.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, dim: int | Sequence[int] = (2, 3),
                 learnable: bool = True):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x^p as exp(p log x): the same numbers, but autograd's pow with a tensor exponent guards
        # x = 0 with masks in its backward, which made GeM 1.6x slower to train (clamping rules x = 0 out).
        powered = (self.p * x.clamp(min=self.eps).log()).exp()
        return powered.mean(dim=self.dim, keepdim=True).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3g}, eps={self.eps}, dim={self.dim}, learnable={self.p.requires_grad}"


class _ChannelPool(torch.autograd.Function):
    """Average, max and GeM pooling along dim 1 as one autograd node (:func:`pool_channels`)."""

    @staticmethod
    def forward(ctx, x, p, eps):
        ctx.dtype = x.dtype
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        clamped = xf.clamp(min=eps)
        log_x = clamped.log()
        powered = (log_x * p).exp_()                       # x^p, as GeM.forward computes it
        m = powered.mean(1, keepdim=True)
        gem = m.pow(1.0 / p)
        top = xf.amax(1, keepdim=True)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # What the backward needs, as full maps: x^(p-1), zero where the clamp holds x at eps,
            # and the max's ties, each taking an equal share as autograd's amax gives them.
            slope = (powered / clamped).mul_(xf >= eps)
            ties = (xf == top).to(xf.dtype)
            ties /= ties.sum(1, keepdim=True)
            log_mean = (powered * log_x).mean(1, keepdim=True) if ctx.needs_input_grad[1] else None
            ctx.save_for_backward(slope, ties, m, gem, log_mean, p)
        return torch.cat([xf.mean(1, keepdim=True), top, gem], 1).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        slope, ties, m, gem, log_mean, p = ctx.saved_tensors
        g_mean, g_max, g_gem = grad.to(slope.dtype).split(1, 1)
        channels = slope.shape[1]
        # d gem / d x_c = gem / (C m) x_c^(p-1); d mean / d x_c = 1 / C
        grad_x = torch.addcmul(g_mean / channels, slope, g_gem * gem / (channels * m))
        grad_x.addcmul_(ties, g_max)
        grad_p = None
        if ctx.needs_input_grad[1]:  # d gem / d p = gem (mean_c(x^p log x) / (p m) - log m / p^2)
            grad_p = (g_gem * gem * (log_mean / (p * m) - m.log() / p ** 2)).sum()
        return grad_x.to(ctx.dtype), grad_p, None


def pool_channels(x: torch.Tensor, gem: GeM) -> torch.Tensor:
    """The average, max and GeM (Eq. 4, with ``gem``'s p and eps) of ``x`` along its channels:
    (B, C, H, W) -> (B, 3, H, W), computed in at least float32.

    The same numbers as ``torch.cat([x.mean(1), x.amax(1), gem(x)])`` with gem pooling along
    dim 1, and the same gradients (ties of the max share it equally, the clamp passes none), but
    as one autograd node with a hand-written backward: autograd's three poolings over the same
    map made about twenty passes over it in a training step, most of them in the backward of
    GeM's clamp, log and exp and in summing the three gradients. Written out, they made a
    ResNeSkt-50 training step (width 16, batch 128, one thread, bf16) 1.13 times as long.
    """
    return _ChannelPool.apply(x, gem.p, gem.eps)


class SplitAttention(nn.Module):
    """ResNeSt's split attention (the paper's Eq. 1-3, Fig. 3).

    A grouped 3x3 conv gives G = K*R splits (K cardinal groups, radix R). Per cardinal group k the
    R splits are summed (U^k), averaged over space (s^k, Eq. 1), passed through FC-BN-ReLU-FC, and an
    r-softmax over the radix gives the weights a_i^k(c) (Eq. 3) of the weighted sum V^k (Eq. 2).
    With R = 1 the softmax becomes a sigmoid gate (SE-style), as in ResNeSt.

    This is timm's ``SplitAttn`` written out step by step (same layer names and state dict, checked
    equal in the tests) so that :meth:`details` can return the radix weights for the chapter's plots.
    The softmax is timm's ``RadixSoftmax``, which orders the weights exactly as ResNeSt does.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3,
                 stride: int = 1, cardinality: int = 1, radix: int = 2, reduction: int = 4,
                 min_attn_channels: int = 32):
        super().__init__()
        out_channels = out_channels or in_channels
        self.radix = radix
        attn_channels = max(in_channels * radix // reduction, min_attn_channels)
        self.conv = nn.Conv2d(in_channels, out_channels * radix, kernel_size, stride, kernel_size // 2,
                              groups=cardinality * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(out_channels * radix)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_channels, 1, groups=cardinality)
        self.bn1 = nn.BatchNorm2d(attn_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_channels, out_channels * radix, 1, groups=cardinality)
        self.rsoftmax = RadixSoftmax(radix, cardinality)

    def _attend(self, x: torch.Tensor):
        # The R splits as channel slices, not a 5-D view: slices keep the channels-last layout, so
        # autograd's gradients keep it too (the 5-D view made a training step 1.5x slower).
        splits = self.act0(self.bn0(self.conv(x))).chunk(self.radix, 1)
        s = functools.reduce(torch.add, splits).mean((2, 3), keepdim=True)      # Eq. (1)
        logits = self.fc2(self.act1(self.bn1(self.fc1(s))))
        weights = self.rsoftmax(logits).view(x.shape[0], self.radix, -1)         # Eq. (3)
        out = functools.reduce(torch.add, (split * weights[:, i, :, None, None]  # Eq. (2)
                                           for i, split in enumerate(splits)))
        return splits, weights, out

    def details(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The intermediate tensors: ``splits`` (B, R, C, H, W), ``weights`` a_i(c) (B, R, C), ``out``."""
        splits, weights, out = self._attend(x)
        return {"splits": torch.stack(splits, 1), "weights": weights, "out": out}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(x)[2]


class SpatialKernelAttention(nn.Module):
    """The paper's Spatial-Kernel Attention (Fig. 4 and the text after Eq. 4).

    For each of the K groups V^k of the split-attention output:
      1. average, max and GeM (Eq. 4) pooling along the group's channels give three H x W maps
         (pooled along channels, as CBAM's spatial attention does; Eq. 4 as printed pools over
         space, which would leave the convolutions no map);
      2. the three maps are the 3 input channels of a 3x3 and of a 5x5 conv (each conv + BN, as
         CBAM's spatial conv, without the ReLU of SKNet's branches), giving V_3x3^k and V_5x5^k;
      3. U^k = V_3x3^k + V_5x5^k, T^k = GAP(U^k) (Eq. 5), Z = ReLU(BN(FC(T^k))), and a softmax over
         the kernels gives a_3x3 + a_5x5 = 1 (SKNet's selection; the second FC has a bias, 2 per
         group, which the paper's formula, SKNet's and timm's ``fc_select`` lack);
      4. the spatial weight sigmoid(a_3x3 V_3x3^k + a_5x5 V_5x5^k) multiplies every channel of V^k
         (the text prints the sum with A_3x3, A_5x5 and says the weights go onto the maps; the
         sigmoid as in CBAM: the paper applies "the spatial weight" without naming a gate);
      5. the groups are concatenated back.
    The K groups have their own convs and FCs, implemented as grouped convolutions.
    """

    def __init__(self, channels: int, groups: int = 1, gem_p: float = 3.0, kernel_sizes: Sequence[int] = (3, 5),
                 attn_dim: int = 32):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.groups = groups
        self.gem = GeM(gem_p, dim=1)
        # A real k x k kernel per branch (not SKNet's dilated 3x3 stand-in for 5x5): the paper names 5x5.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * groups, groups, k, padding=k // 2, groups=groups, bias=False),
                          nn.BatchNorm2d(groups))
            for k in kernel_sizes)
        self.fc1 = nn.Conv2d(groups, groups * attn_dim, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(groups * attn_dim)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(groups * attn_dim, groups * len(kernel_sizes), 1, groups=groups)

    def _attend(self, x: torch.Tensor):
        b, c, h, w = x.shape
        # Channel slices for the K groups, as in SplitAttention._attend (channels-last throughout).
        pooled = torch.cat([pool_channels(v, self.gem) for v in x.chunk(self.groups, 1)], 1)  # (B, 3K, H, W)
        responses = [branch(pooled) for branch in self.branches]             # V_3x3^k, V_5x5^k: (B, K, H, W)
        t = functools.reduce(torch.add, responses).mean((2, 3), keepdim=True)  # U^k, then Eq. (5)
        logits = self.fc2(self.act(self.bn(self.fc1(t)))).view(b, self.groups, -1)
        kernel_weights = logits.softmax(-1)
        spatial_weight = torch.sigmoid(functools.reduce(
            torch.add, (kernel_weights[:, :, i, None, None] * v for i, v in enumerate(responses))))
        per_channel = spatial_weight if self.groups == 1 else spatial_weight.repeat_interleave(c // self.groups, 1)
        return pooled, responses, kernel_weights, spatial_weight, x * per_channel

    def details(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The intermediate tensors: ``pooled`` (B, K, 3, H, W) = avg, max, GeM maps; ``responses``
        (B, K, n_kernels, H, W) = V_3x3, V_5x5; ``kernel_weights`` (B, K, n_kernels) = a_3x3, a_5x5;
        ``spatial_weight`` (B, K, H, W); ``out``."""
        pooled, responses, kernel_weights, spatial_weight, out = self._attend(x)
        b, _, h, w = x.shape
        return {"pooled": pooled.view(b, self.groups, 3, h, w), "responses": torch.stack(responses, 2),
                "kernel_weights": kernel_weights, "spatial_weight": spatial_weight, "out": out}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(x)[4]


class ResNeSktBottleneck(nn.Module):
    """The ResNeSkt block (Fig. 2): 1x1 conv, split attention, spatial-kernel attention, 1x1 conv,
    residual add (Y = V + T(X)).

    The rest is timm's ``ResNestBottleneck``. By default (``avd=False``) a strided block strides its
    split-attention conv, as ResNeXt does: the paper's 4.25 G MACs for ResNeSt-50 and 4.32 G for
    ResNeSkt-50 fit this (or ResNeSt's "fast" variant, ``avd_first``: the pool before the conv,
    which the package does not build), not avd after the conv. ``avd=True`` is what ResNeSt's
    released models do (timm's ``avd=True, avd_first=False``): the split-attention conv runs at
    stride 1 and a 3x3 average pool with the block's stride follows it; the spatial-kernel
    attention comes after that pool, so it sees the same resolution either way. With
    ``spatial=False`` the block's layer names and state dict are timm's ``ResNestBottleneck``'s
    (with the same ``avd``), and it computes the same.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, radix: int = 2, base_width: int = 64, gem_p: float = 3.0,
                 spatial: bool = True, avd: bool = False):
        super().__init__()
        group_width = int(planes * base_width / 64) * cardinality
        avd = avd and stride > 1
        self.conv1 = nn.Conv2d(inplanes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = SplitAttention(group_width, stride=1 if avd else stride, cardinality=cardinality,
                                    radix=radix)
        self.avd_last = nn.AvgPool2d(3, stride, padding=1) if avd else nn.Identity()
        self.ska = SpatialKernelAttention(group_width, cardinality, gem_p) if spatial else nn.Identity()
        self.conv3 = nn.Conv2d(group_width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.ska(self.avd_last(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act3(out + shortcut)


@torch.no_grad()
def zero_init_last(model: nn.Module) -> nn.Module:
    """Zero the last BN of every ResNeSkt block, so that each block starts as its shortcut (Goyal et
    al.'s trick, timm's default for ResNeSt); short runs of deep bottleneck networks need it."""
    for block in model.modules():
        if isinstance(block, ResNeSktBottleneck):
            nn.init.zeros_(block.bn3.weight)
    return model


def _check_groups(width: int, cardinality: int, base_width: int, radix: int = 1) -> None:
    """A clear error where the first stage's grouped conv would get no channels or uneven groups."""
    per_group = int(width * base_width / 64)
    if per_group < 1 or per_group % radix:
        raise ValueError(f"width={width} gives a first-stage group width of int(width*{base_width}/64)={per_group} "
                         f"channels per cardinal group (cardinality {cardinality}); it must be a positive "
                         f"multiple of the radix ({radix})")


def _resneskt(depth, num_classes, in_chans, stem, width, cardinality, radix, base_width, gem_p, spatial,
              deep_stem, avd):
    for name, value in (("cardinality", cardinality), ("radix", radix), ("base_width", base_width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    for name, value in (("spatial", spatial), ("deep_stem", deep_stem), ("avd", avd)):
        check_choice(name, value, (True, False))
    _check_groups(width, cardinality, base_width, radix)
    # ResNeSt's average-pool shortcut ("avg_down") for the strided blocks.
    return ResNet(ResNeSktBottleneck, LAYERS[depth], num_classes=num_classes, in_chans=in_chans,
                  stem=stem, widths=scaled_widths(width), shortcut="avgpool", deep_stem=deep_stem,
                  block_kwargs=dict(cardinality=cardinality, radix=radix, base_width=base_width,
                                    gem_p=gem_p, spatial=spatial, avd=avd))


# Options of every constructor: cardinality K, radix R, GeM's p, ``spatial`` (False: no spatial-kernel
# attention, i.e. ResNeSt), ``deep_stem`` (ResNet-D's three 3x3 convs, common.make_stem) and ``avd``
# (ResNeSktBottleneck). The defaults fit the paper's costs: at 224x224 ResNeSt-50 is 4.09 G MACs as
# built by default, 4.33 G with the deep stem and 5.13-5.37 G with avd, against the paper's 4.25 G.
# resneskt50(stem="imagenet", deep_stem=True, avd=True, spatial=False) is exactly timm's resnest50d
# (the released ResNeSt-50): its state dict loads with transfer.torchvision_to_dmcbook's names.
# ``spatial`` changes nothing else, so ResNeSkt and its ResNeSt baseline always share stem and blocks.


@register_model
def resneskt50(num_classes=10, in_chans=3, stem="cifar", width=64, cardinality=1, radix=2, base_width=64,
               gem_p=3.0, spatial=True, deep_stem=False, avd=False):
    """ResNeSkt-50, Table 1 (27.6 M, 4.32 G). ``spatial=False`` gives ResNeSt-50 with the same stem,
    blocks and shortcuts. K defaults to 1 (ResNeSt-50's 1s2x64d), not the printed 32: see the
    chapter's open questions (only K = 1 matches the paper's parameter count)."""
    return _resneskt(50, num_classes, in_chans, stem, width, cardinality, radix, base_width, gem_p, spatial,
                     deep_stem, avd)


@register_model
def resneskt101(num_classes=10, in_chans=3, stem="cifar", width=64, cardinality=1, radix=2, base_width=64,
                gem_p=3.0, spatial=True, deep_stem=False, avd=False):
    """ResNeSkt-101, Table 1 (48.3 M, 8.19 G): blocks (3, 4, 23, 3)."""
    return _resneskt(101, num_classes, in_chans, stem, width, cardinality, radix, base_width, gem_p, spatial,
                     deep_stem, avd)


@register_model
def resneskt200(num_classes=10, in_chans=3, stem="cifar", width=64, cardinality=1, radix=2, base_width=64,
                gem_p=3.0, spatial=True, deep_stem=False, avd=False):
    """ResNeSkt-200, Table 1 (70.1 M, 13.99 G): ResNeSt-200's blocks (3, 24, 36, 3)."""
    return _resneskt(200, num_classes, in_chans, stem, width, cardinality, radix, base_width, gem_p, spatial,
                     deep_stem, avd)


# ---- Table 2 baselines: reference blocks from torchvision / timm in the shared skeleton ----------

_RESNEXT = dict(groups=32, base_width=4)                                   # torchvision's 32x4d
_SKNET = dict(cardinality=32, base_width=4,                                # timm's skresnext50_32x4d
              sk_kwargs=dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False))
_RESNEST = dict(radix=2, cardinality=1, base_width=64)                     # resnest50d's blocks, no avd


def _baseline(block, depth, block_kwargs, num_classes, in_chans, stem, width, shortcut="conv"):
    _check_groups(width, block_kwargs.get("groups", block_kwargs.get("cardinality", 1)),
                  block_kwargs.get("base_width", 64), block_kwargs.get("radix", 1))
    return ResNet(block, LAYERS[depth], num_classes=num_classes, in_chans=in_chans, stem=stem,
                  widths=scaled_widths(width), shortcut=shortcut, block_kwargs=block_kwargs)


def _register_baseline(name, block, depth, block_kwargs, doc, shortcut="conv"):
    def constructor(num_classes=10, in_chans=3, stem="cifar", width=64):
        return _baseline(block, depth, block_kwargs, num_classes, in_chans, stem, width, shortcut)
    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = doc
    register_model(constructor)


_register_baseline("resnet101", Bottleneck, 101, {},
                   "ResNet-101 (He et al.), torchvision's Bottleneck (ResNet-50 is models.resnet's resnet50).")
for _depth in (50, 101):
    _register_baseline(f"resnext{_depth}_32x4d", Bottleneck, _depth, _RESNEXT,
                       f"ResNeXt-{_depth} 32x4d (Xie et al.), torchvision's Bottleneck with 32 groups of width 4.")
    _register_baseline(f"seresnet{_depth}", TimmBottleneck, _depth, dict(attn_layer="se"),
                       f"SE-ResNet-{_depth} (Hu et al.), timm's Bottleneck with its SE module (reduction 16). "
                       "The paper's SENet rows repeat SKNet's Table 2, whose SENet is SE-ResNeXt 32x4d "
                       f"(timm's seresnext{_depth}_32x4d); the chapter counts both.")
    _register_baseline(f"sknet{_depth}", SelectiveKernelBottleneck, _depth, _SKNET,
                       f"SKNet-{_depth} (Li et al.), timm's SelectiveKernelBottleneck on ResNeXt 32x4d "
                       "(timm's skresnext50_32x4d at depth 50).")
    _register_baseline(f"resnest{_depth}", ResNestBottleneck, _depth, _RESNEST,
                       f"ResNeSt-{_depth} 1s2x64d (Zhang et al.), timm's ResNestBottleneck with the average-pool "
                       "shortcut. Unlike timm's resnest50d: the package's stem (not the deep 3x3 stem) and no avd "
                       "(see ResNeSktBottleneck), so that it is exactly ResNeSkt at its defaults with the spatial "
                       "branch off (resneskt50's deep_stem and avd options build resnest50d itself).",
                       shortcut="avgpool")
    _register_baseline(f"cbam_resnet{_depth}", TimmBottleneck, _depth, dict(attn_layer="cbam"),
                       f"ResNet-{_depth} + CBAM (Woo et al.), timm's Bottleneck with its CBAM module in every block.")
