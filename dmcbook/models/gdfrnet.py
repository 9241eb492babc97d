"""GDFRNet: global dependency guided feature reconstruction (Yuan, Wu and Zhang, Acta Electronica Sinica 2026).

A ResNet-34 whose residual blocks carry a feature reconstruction module (FRM, Eq. 1-12), giving
the FRRB (Eq. 14), plus a feature optimisation branch (Fig. 7) that keeps layer1's resolution,
sharpens it with a fixed Laplacian-of-Gaussian (FGCM, Eq. 15-23), fuses deeper backbone stages
into it (FOM, Eq. 24-29) and hands the result back to the backbone through strided depthwise convs.

Our copy of the text has none of the paper's figures. The equations stand in for Figs. 2-6; the
branch (Fig. 7) and the ablation layouts (Figs. 11-13) are described only in words, and where this
file had to guess, the docstring says what it chose. The chapter notebook lists every decision.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from .common import DepthwiseConv2d, ResNet, init_weights, scaled_widths
from ..checks import check_choice
from .registry import register_model

UPSAMPLE = ("transposed", "bilinear")  # Fig. 10
DOWN = ("depthwise", "dense")  # the text says depthwise; "dense" comes within 3 % of Table 8
FRM_POSITIONS = ("A", "B", "C", "D")  # Fig. 11 / Table 4
# Table 5 (its row A repeats net5's numbers): levels whose low-res input also gets an FGCM
FGCM_LAYOUTS = {"A": (), "B": (1,), "C": (2,), "D": (1, 2, 3)}
BRANCH_DEPTHS = {"A": 0, "B": 1, "C": 2, "D": 3}  # Table 6: number of FGCM+FOM levels
VARIANTS = ("net1", "net2", "net3", "net4", "net5")  # Table 9


def _conv_bn(in_chans, out_chans, kernel_size=1, stride=1, depthwise=False, act=True):
    conv = (DepthwiseConv2d(in_chans, kernel_size, stride, kernel_size // 2, bias=False) if depthwise else
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, bias=False))
    layers = [conv, nn.BatchNorm2d(out_chans)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DirectionAwareAttention(nn.Module):
    """X2 of the FRM, Eq. 6-11: ``X2 = X * A_w * A_h``.

    H_Pool averages over H (X_h: C x 1 x W, Eq. 6), W_Pool over W (X_w: C x H x 1, Eq. 7); the two
    are concatenated along space (the shape Eq. 8 gives, C x (H+W) x 1; its text says along the
    channels), squeezed by a shared PWConv to C/r-BN-LeakyReLU(0.2) (Eq. 9-10), split, and each
    part gives a Sigmoid gate through its own PWConv: A_h (C x 1 x W) and A_w (C x H x 1). This is
    coordinate attention (Hou et al. 2021, the paper's ref. [14]) with a LeakyReLU (Hou et al. use
    h-swish and floor the bottleneck at max(8, C/r) channels; this paper keeps C/r). timm has it
    as ``CoordAttn`` only from 1.0.23 on, newer than the book requires, and the chapter needs A_h
    and A_w themselves, so it is written out here (the tests compare it with timm's where that is
    installed).
    """

    def __init__(self, channels: int, r: int = 32):
        super().__init__()
        if not isinstance(r, int) or r < 1 or channels % r:
            raise ValueError(f"FRM reduction r={r!r} must be a positive integer dividing the channel count "
                             f"C={channels} (the attention path has C/r channels); lower r or raise width")
        self.squeeze = nn.Sequential(nn.Conv2d(channels, channels // r, 1, bias=False),
                                     nn.BatchNorm2d(channels // r), nn.LeakyReLU(0.2))
        self.gate_h = nn.Conv2d(channels // r, channels, 1)
        self.gate_w = nn.Conv2d(channels // r, channels, 1)

    def weights(self, x):
        """A_h (N, C, 1, W) and A_w (N, C, H, 1)."""
        h, w = x.shape[-2:]
        y = torch.cat([x.mean(2, keepdim=True).transpose(2, 3), x.mean(3, keepdim=True)], 2)  # Eq. 6-8
        y_h, y_w = self.squeeze(y).split([w, h], 2)  # Eq. 9
        return torch.sigmoid(self.gate_h(y_h.transpose(2, 3))), torch.sigmoid(self.gate_w(y_w))

    def forward(self, x):
        a_h, a_w = self.weights(x)
        return x * a_w * a_h  # Eq. 11


class FRM(nn.Module):
    """Feature reconstruction module, Eq. 1-12: ``X_out = X1 + X2``.

    X1 (Eq. 2-5): DWConv3x3/2-BN-ReLU, PWConv to C/2-BN-ReLU, Conv1x1 back to C-BN-ReLU, and a
    transposed conv (kernel ``k``, stride 2, padding (k-2)/2, Table 3)-BN-ReLU back to H x W.
    X2 (Eq. 6-11): strip pooling over H and over W, concatenation, PWConv to C/r-BN-LeakyReLU(0.2),
    split, PWConv+Sigmoid to A_h and A_w, ``X2 = X * A_w * A_h``.

    The stride-2 conv gives ceil(H/2) rows and the transposed conv doubles that, so an odd
    input comes back one row or column too large; the extra last row/column is cropped so the
    output always matches the input. ``upsample="bilinear"`` replaces the transposed conv by
    parameter-free bilinear up-sampling and keeps its BN-ReLU (Fig. 10). ``down="dense"`` makes
    the first conv an ordinary 3x3 conv: not what the text says, but the most economical single
    change that brings the parameter count near the paper's Table 8 (2.6 % under; see the
    notebook's costs section). The transposed conv keeps PyTorch's default initialisation
    (``init_weights`` initialises ``nn.Conv2d`` only; the notebook's decisions list says why).
    """

    def __init__(self, channels: int, r: int = 32, k: int = 4, upsample: str = "transposed",
                 down: str = "depthwise"):
        super().__init__()
        check_choice("FRM upsample", upsample, UPSAMPLE)
        check_choice("FRM down", down, DOWN)
        if not isinstance(k, int) or k < 2 or k % 2:
            raise ValueError(f"FRM transposed-conv kernel k={k!r} must be an even integer >= 2 "
                             "(padding (k-2)/2 must be whole, Table 3)")
        if channels % 2:
            raise ValueError(f"FRM needs an even channel count for its C/2 pointwise conv; got C={channels}")
        self.r, self.k, self.upsample = r, k, upsample
        self.reconstruct = nn.Sequential(
            _conv_bn(channels, channels, 3, 2, depthwise=down == "depthwise"),  # Eq. 2
            _conv_bn(channels, channels // 2),  # Eq. 3
            _conv_bn(channels // 2, channels),  # Eq. 4
        )
        if upsample == "transposed":
            self.up = nn.ConvTranspose2d(channels, channels, k, 2, (k - 2) // 2, bias=False)  # Eq. 5
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up_bn = nn.BatchNorm2d(channels)
        self.attention = DirectionAwareAttention(channels, r)

    def reconstruction(self, x):
        """X1 of Eq. 5, cropped to the input size."""
        y = self.up(self.reconstruct(x))
        if y.shape[-2:] != x.shape[-2:]:  # an odd input: up-sampling overshoots it by one
            # cropped by a negative pad: a slice would hand BN a strided view and the transposed
            # conv a channels-first gradient, both slow paths on a CPU
            y = F.pad(y, (0, x.shape[-1] - y.shape[-1], 0, x.shape[-2] - y.shape[-2]))
        return F.relu(self.up_bn(y))

    def forward(self, x):
        return self.reconstruction(x) + self.attention(x)  # Eq. 12


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Eq. 16 sampled on a ``size`` x ``size`` grid and divided by its sum (the text calls G a
    normalised low-pass filter, so a constant map passes unchanged)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).float()


LAPLACIAN_8 = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]])


class LaplacianOfGaussian(nn.Module):
    """``L * G * X`` of Eq. 22, channel by channel (depthwise; the text does not say), with fixed
    kernels kept as buffers.

    G is the 5x5 Gaussian of Eq. 16 (sigma 1.0), L the 8-neighbour Laplacian. Each conv pads
    by replicating the border: features after ReLU are positive, and zero padding would make
    the Laplacian fire along the frame of every map.
    """

    def __init__(self, sigma: float = 1.0, size: int = 5):
        super().__init__()
        if size % 2 == 0 or size < 1:
            raise ValueError(f"Gaussian size must be odd and positive; got {size!r}")
        self.register_buffer("gaussian", gaussian_kernel(size, sigma)[None, None])
        self.register_buffer("laplacian", LAPLACIAN_8.clone()[None, None])

    @staticmethod
    def _depthwise(x, kernel):
        pad = kernel.shape[-1] // 2
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(x, kernel.expand(x.shape[1], 1, -1, -1), groups=x.shape[1])

    def forward(self, x):
        return self._depthwise(self._depthwise(x, self.gaussian), self.laplacian)


class FGCM(nn.Module):
    """Fine-grained feature capture module, Eq. 22-23: ``BN(Conv1x1(BN(Conv1x1(L * G * X))))``.

    The two pointwise convs also adjust the channel count ("通过逐点卷积调整通道"), which is how
    the branch brings layer1's map to the width of the stage it is fused with.
    """

    def __init__(self, in_chans: int, out_chans: int | None = None, sigma: float = 1.0):
        super().__init__()
        out_chans = out_chans or in_chans
        self.log = LaplacianOfGaussian(sigma)
        self.pointwise = nn.Sequential(_conv_bn(in_chans, out_chans, act=False),
                                       _conv_bn(out_chans, out_chans, act=False))

    def forward(self, x):
        return self.pointwise(self.log(x))


class FOM(nn.Module):
    """Feature optimisation module, Eq. 24-29.

    Both inputs have C channels (the branch's FGCM brings the high-res one to the low-res width).
    Conv3x3 to C/2 on each, bilinear up-sampling of the low-res one, ``M_sim1 = Sigmoid(sum_c
    F_lh* x F_h*)`` (Eq. 24), its global mean and max repeated over H x W (Eq. 25-28), a 7x7 conv
    and a Sigmoid to ``M_sim2``, and ``F = M_sim2 * Up(F_l) + (1 - M_sim2) * F_h`` (Eq. 29).
    The text names only the 3x3 convs, so they carry no BN. The 7x7 conv pads with zeros and has
    no bias (the text names neither): its border is the only place where M_sim2 varies within
    an image.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"FOM needs an even channel count for its C/2 convs; got C={channels}")
        self.conv_h = nn.Conv2d(channels, channels // 2, 3, 1, 1, bias=False)
        self.conv_l = nn.Conv2d(channels, channels // 2, 3, 1, 1, bias=False)
        self.refine = nn.Conv2d(2, 1, 7, 1, 3, bias=False)

    def similarity(self, f_h, f_l) -> dict:
        """M_sim1 (Eq. 24), the repeated avg/max prior (Eq. 25-28) and M_sim2."""
        size = f_h.shape[-2:]
        f_lh = F.interpolate(self.conv_l(f_l), size=size, mode="bilinear", align_corners=False)
        m_sim1 = torch.sigmoid((f_lh * self.conv_h(f_h)).sum(1, keepdim=True))
        prior = torch.cat([m_sim1.mean((2, 3), keepdim=True), m_sim1.amax((2, 3), keepdim=True)], 1)
        prior = prior.expand(-1, -1, *size)
        return {"M_sim1": m_sim1, "prior": prior, "M_sim2": torch.sigmoid(self.refine(prior))}

    def forward(self, f_h, f_l):
        m = self.similarity(f_h, f_l)["M_sim2"]
        up = F.interpolate(f_l, size=f_h.shape[-2:], mode="bilinear", align_corners=False)
        # Eq. 29 as one lerp, f_h + M_sim2 (Up(F_l) - f_h): the same sum in one pass over the map
        # instead of three (two products and a sum), in the forward and the backward pass
        return torch.lerp(f_h, up, m)


class OptimisationBranch(nn.Module):
    """The feature optimisation branch of Fig. 7 with ``levels`` FGCM+FOM levels (Table 6).

    Level l sharpens the high-res map with an FGCM (which also widens it to stage l+1's channels)
    and fuses stage l+1's output into it with an FOM; level 1 starts from layer1's output. Stage 3
    of the text: one stride-2 depthwise conv-BN per halving brings the map down to stage
    levels+1's resolution, where it is added to the backbone. ``fgcm_low`` lists the levels whose
    low-res input passes through an FGCM too (our reading of Table 5's layouts).
    """

    def __init__(self, widths, levels: int = 2, fgcm_low=()):
        super().__init__()
        if not 1 <= levels < len(widths):
            raise ValueError(f"the branch needs 1..{len(widths) - 1} levels; got {levels}")
        self.levels = levels
        self.fgcm_high = nn.ModuleList(FGCM(widths[i], widths[i + 1]) for i in range(levels))
        self.fgcm_low = nn.ModuleList(FGCM(widths[i + 1]) if i + 1 in fgcm_low else nn.Identity()
                                      for i in range(levels))
        self.fom = nn.ModuleList(FOM(widths[i + 1]) for i in range(levels))
        c = widths[levels]
        self.feedback = nn.Sequential(*(_conv_bn(c, c, 3, 2, depthwise=True, act=i < levels - 1) for i in range(levels)))

    def forward(self, feats):
        """``feats``: the outputs of layer1..layer(levels+1); returns what to add to the last one."""
        h = feats[0]
        for fgcm_h, fgcm_l, fom, low in zip(self.fgcm_high, self.fgcm_low, self.fom, feats[1:]):
            h = fom(fgcm_h(h), fgcm_l(low))
        return self.feedback(h)


class FRRB(BasicBlock):
    """FRM residual block, Eq. 14: ``H(x) = M(F(x)) + x`` with F = conv3x3-BN-ReLU-conv3x3-BN.

    ``position`` places the FRM as in Fig. 11 / Table 4 (the figure is missing; our reading):
    A on the block input before the first conv, B between the two convs, C after the second
    conv (the paper's choice), D on the shortcut, in parallel with the convs. "After the second
    conv" is read as after its BN, since Eq. 14 applies M to F(x), which ends in that BN.
    """

    def __init__(self, inplanes, planes, stride=1, downsample=None, r=32, k=4, upsample="transposed",
                 down="depthwise", position="C"):
        super().__init__(inplanes, planes, stride, downsample)
        check_choice("FRM position", position, FRM_POSITIONS)
        self.position = position
        self.frm = FRM(inplanes if position in "AD" else planes, r, k, upsample, down)

    def forward(self, x):
        identity = self.frm(x) if self.position == "D" else x
        if self.position == "A":
            x = self.frm(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.position == "B":
            out = self.frm(out)
        out = self.bn2(self.conv2(out))
        if self.position == "C":
            out = self.frm(out)
        if self.downsample is not None:
            identity = self.downsample(identity)
        return self.relu(out + identity)


class GDFRNet(ResNet):
    """ResNet-34 layout of ``block`` with an optional optimisation branch (Fig. 1)."""

    def __init__(self, block, layers, widths, branch_levels: int = 2, fgcm_low=(), **resnet_kwargs):
        super().__init__(block, layers, widths=widths, **resnet_kwargs)
        self.branch = OptimisationBranch(widths, branch_levels, fgcm_low) if branch_levels else None
        if self.branch is not None:
            init_weights(self.branch)

    def forward_features(self, x):
        x = self.stem(x)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.branch is not None and i == self.branch.levels:
                x = x + self.branch(feats + [x])
            feats.append(x)
        return x


@register_model
def gdfrnet(num_classes=10, in_chans=3, stem="cifar", width=64, variant="net5", r=32, k=4,
            upsample="transposed", down="depthwise", frm_position="C", fgcm_layout="A", branch_depth="C"):
    """GDFRNet and its Table 9 ablations.

    ``variant``: net1 = ResNet-34 with the 7x7 stem and max-pool (forced); net2 = ResNet-34 with
    the 3x3 stem and no max-pool (forced); net3 = FRRBs without the branch; net4 = the branch on
    plain basic blocks; net5 = the full network (``stem`` applies to net3-net5).
    FRM options (Fig. 8-11): ``r`` (32), ``k`` (4), ``upsample``, ``down``, ``frm_position`` (C).
    Branch options: ``fgcm_layout`` A-D (Table 5, A: its row repeats net5's accuracies),
    ``branch_depth`` A-D (Table 6, C = two levels; A = no branch, which is why Table 6's row A
    repeats net3's accuracies in Table 9).
    """
    check_choice("variant", variant, VARIANTS)
    check_choice("upsample", upsample, UPSAMPLE)
    check_choice("down", down, DOWN)
    check_choice("frm_position", frm_position, FRM_POSITIONS)
    check_choice("fgcm_layout", fgcm_layout, tuple(FGCM_LAYOUTS))
    check_choice("branch_depth", branch_depth, tuple(BRANCH_DEPTHS))
    if variant in ("net1", "net2"):
        stem = "imagenet" if variant == "net1" else "cifar"
    frrb = variant in ("net3", "net5")
    block_kwargs = dict(r=r, k=k, upsample=upsample, down=down, position=frm_position) if frrb else None
    levels = BRANCH_DEPTHS[branch_depth] if variant in ("net4", "net5") else 0
    return GDFRNet(FRRB if frrb else BasicBlock, (3, 4, 6, 3), scaled_widths(width), levels,
                   FGCM_LAYOUTS[fgcm_layout], num_classes=num_classes, in_chans=in_chans, stem=stem,
                   block_kwargs=block_kwargs)
