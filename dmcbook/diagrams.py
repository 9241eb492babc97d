"""Block and network diagrams drawn from the built modules.

Every label is read from the module handed in (channels, kernel sizes, strides, dilations,
reductions, GeM's p, which masks are on...), so a drawing cannot drift from the code: build the
model with other options and the picture changes with it. The equations cited are those of the
model files' docstrings.

Drawn with matplotlib boxes and arrows rather than graphviz or torchview: those need the
graphviz binary, which a Colab reader has but this book's build machine does not, and they draw
every tensor operation instead of the paper's boxes.
"""
from __future__ import annotations

import torch
from torch import nn

from .models.common import ResNet
from .models.dmcnet import AE, MMCF, DMCBottleneck, DynamicMaskConv
from .models.drstn import STRB, SoftThreshold
from .models.gdfrnet import FGCM, FOM, FRM, FRRB, LaplacianOfGaussian
from .models.resneskt import GeM, ResNeSktBottleneck
from .viz import PAGE_WIDTH

ROW = 0.52  # inches from one row of boxes to the next
TITLE = 0.35  # inches kept for the title
FONT = 7.5
PAD = 0.12  # inches of box around its text
LINE = 40  # characters per line before a label wraps at " · "
COLORS = {"io": "#eeeeee", "conv": "#dbe9f6", "attn": "#fde2c8", "mask": "#f6d1d1", "op": "#ffffff",
          "stage": "#e6e0f3"}


# ---- labels read from modules ---------------------------------------------------------------

def _kernel(size) -> str:
    size = (size, size) if isinstance(size, int) else tuple(size)
    return f"{size[0]}x{size[1]}"


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def layer_label(module: nn.Module) -> str:
    """A short label of one layer, read from its attributes: 'Conv 3x3/2, d=2, dw, 8→8'."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv1d)):
        if isinstance(module, nn.Conv1d):
            return f"Conv1d k={module.kernel_size[0]}"
        name = "ConvT" if isinstance(module, nn.ConvTranspose2d) else "Conv"
        text = f"{name} {_kernel(module.kernel_size)}"
        text += f"/{module.stride[0]}" if module.stride[0] > 1 else ""
        text += f", d={module.dilation[0]}" if module.dilation[0] > 1 else ""
        if module.groups > 1:
            depthwise = module.groups == module.in_channels == module.out_channels
            text += ", dw" if depthwise else f", g={module.groups}"
        return f"{text}, {module.in_channels}→{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"FC {module.in_features}→{module.out_features}"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "BN"
    if isinstance(module, nn.LeakyReLU):
        return f"LeakyReLU({module.negative_slope:g})"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "GAP"
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        name = "AvgPool" if isinstance(module, nn.AvgPool2d) else "MaxPool"
        return f"{name} {_kernel(module.kernel_size)}/{_first(module.stride)}"
    if isinstance(module, nn.Upsample):
        return f"Up x{module.scale_factor:g} ({module.mode})"
    if isinstance(module, nn.Identity):
        return "identity"
    if isinstance(module, DynamicMaskConv):
        return dynamic_mask_conv_label(module)
    if isinstance(module, AE):
        return f"AE (Eqs. 20-28), {module.value[0].in_channels} ch"
    if isinstance(module, FRM):
        return frm_label(module)
    if isinstance(module, GeM):
        return f"GeM p={module.p.item():.3g}"
    if isinstance(module, LaplacianOfGaussian):
        return log_label(module)
    if isinstance(module, nn.Sequential):
        return describe(module)
    return type(module).__name__  # ReLU, GELU, Sigmoid...


def describe(modules, width: int = LINE) -> str:
    """Labels of a chain of layers joined by ' · ' and wrapped to lines of ``width`` characters;
    nested Sequentials are flattened."""
    parts = []
    for module in modules:
        parts.extend([describe(module, 10 ** 6)] if isinstance(module, nn.Sequential) else [layer_label(module)])
    lines, line = [], ""
    for part in " · ".join(parts).split(" · "):
        if line and len(line) + 3 + len(part) > width:
            lines.append(line)
            line = part
        else:
            line = f"{line} · {part}" if line else part
    return "\n".join(lines + [line])


def dynamic_mask_conv_label(dmc: DynamicMaskConv) -> str:
    conv = dmc.conv
    masks = [name for name, on in (("M1", dmc.channel_mask), ("M2", dmc.kernel_mask), ("M3", dmc.conditional_mask))
             if on]
    return (f"D_M_Conv {_kernel(conv.kernel_size)}, d={conv.dilation[0]}, {conv.in_channels}→{conv.out_channels}\n"
            f"masks {' '.join(masks) or 'none'}, m={dmc.m:g}")


def log_label(log: LaplacianOfGaussian) -> str:
    """'LoG 5x5, σ=1': sigma read back from the Gaussian's centre and its neighbour,
    g(0)/g(1) = exp(1/(2σ²))."""
    g = log.gaussian[0, 0].double()
    centre = g.shape[-1] // 2
    sigma = (0.5 / torch.log(g[centre, centre] / g[centre, centre + 1])).sqrt().item()
    return f"LoG {_kernel(tuple(g.shape))}, σ={sigma:.3g}"


def frm_label(frm: FRM) -> str:
    channels = frm.up_bn.num_features
    r = channels // frm.attention.squeeze[0].out_channels
    up = layer_label(frm.up).split(",")[0]
    return f"FRM (Eqs. 1-12), {channels} ch\nr={r}, {up}"


# ---- a small box-and-arrow canvas ------------------------------------------------------------

class Diagram:
    """Boxes placed at (x inches, row) and arrows between them; :meth:`figure` lays them out.

    ``arrow(a, b, lane=x)`` routes the arrow along the vertical line x = ``lane`` (skip
    connections); otherwise it is straight, clipped at the boxes' edges.
    """

    def __init__(self, title: str, width: float = PAGE_WIDTH):
        self.title, self.width = title, width
        self.nodes: dict[str, tuple] = {}
        self.edges: list[tuple] = []

    def box(self, key: str, x: float, row: float, text: str, kind: str = "conv") -> str:
        self.nodes[key] = (x, row, text, kind, "box")
        return key

    def op(self, key: str, x: float, row: float, symbol: str) -> str:
        self.nodes[key] = (x, row, symbol, "op", "circle")
        return key

    def arrow(self, a: str, b: str, text: str | None = None, lane: float | None = None) -> None:
        self.edges.append((a, b, text, lane))

    def chain(self, *keys: str) -> None:
        for a, b in zip(keys, keys[1:]):
            self.arrow(a, b)

    def figure(self):
        import matplotlib.pyplot as plt
        from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
        from matplotlib.path import Path
        rows = max(row for _, row, *_ in self.nodes.values()) + 1
        height = rows * ROW + TITLE
        fig = plt.figure(figsize=(self.width, height))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set(xlim=(0, self.width), ylim=(0, height))
        ax.axis("off")
        renderer = fig.canvas.get_renderer()
        boxes = {}
        for key, (x, row, text, kind, shape) in self.nodes.items():
            y = height - TITLE - (row + 0.5) * ROW
            label = ax.text(x, y, text, ha="center", va="center", fontsize=FONT, zorder=3, linespacing=1.15)
            extent = label.get_window_extent(renderer)
            w, h = extent.width / fig.dpi * 1.04 + PAD, extent.height / fig.dpi + PAD
            if shape == "box":  # keep the box on the page; a lane arrow still lands inside it
                x = min(max(x, w / 2 + 0.03), self.width - w / 2 - 0.03)
                label.set_x(x)
            if shape == "circle":
                w = h = max(w, h, 0.22)
                patch = Circle((x, y), w / 2, fc=COLORS[kind], ec="0.25", lw=0.8, zorder=2)
            else:
                patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.04",
                                       fc=COLORS[kind], ec="0.35", lw=0.8, zorder=2)
            ax.add_patch(patch)
            boxes[key] = (x, y, w, h, patch)
        style = dict(arrowstyle="-|>", mutation_scale=8, lw=0.8, color="0.2", zorder=1)
        for a, b, text, lane in self.edges:
            xa, ya, wa, ha, pa = boxes[a]
            xb, yb, wb, hb, pb = boxes[b]
            if lane is None:
                arrow = FancyArrowPatch((xa, ya), (xb, yb), patchA=pa, patchB=pb, shrinkA=0, shrinkB=0, **style)
                mid = ((xa + xb) / 2, (ya + yb) / 2)
            else:
                start = (xa + (wa / 2 if lane > xa else -wa / 2), ya)
                if abs(lane - xb) < 1e-9:
                    points = [start, (lane, ya), (lane, yb + (hb / 2 if yb < ya else -hb / 2))]
                else:
                    points = [start, (lane, ya), (lane, yb), (xb + (wb / 2 if lane > xb else -wb / 2), yb)]
                arrow = FancyArrowPatch(path=Path(points), **style)
                mid = (lane, (ya + yb) / 2)
            ax.add_patch(arrow)
            if text:
                ax.text(mid[0] + 0.06, mid[1], text, fontsize=FONT - 0.5, style="italic", ha="left", va="center",
                        color="0.25", zorder=3, bbox=dict(fc="white", ec="none", pad=0.5, alpha=0.85))
        ax.text(self.width / 2, height - TITLE / 2, self.title, ha="center", va="center", fontsize=9,
                weight="bold")
        return fig


def labels(fig) -> list[str]:
    """Every text drawn in a figure (title, boxes, arrow notes), for tests and checks."""
    from matplotlib.text import Text
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _shortcut(d: Diagram, block: nn.Module, start: str, end: str, lane: float, row: float) -> None:
    """The residual path from ``start`` to ``end``: a box with the projection, or 'identity'."""
    if block.downsample is None:
        d.arrow(start, end, "identity", lane=lane)
    else:
        d.box("shortcut", lane, row, "shortcut\n" + describe(block.downsample, 22), "conv")
        d.arrow(start, "shortcut", lane=lane)
        d.arrow("shortcut", end, lane=lane)


def _channels_in(module: nn.Module) -> int:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels


# ---- the four papers' blocks -----------------------------------------------------------------

def draw_dynamic_mask_conv(dmc: DynamicMaskConv):
    """D_M_Conv (Fig. 3, Eqs. 1-10): channel mask M1, kernel mask M2, conditional mask M3."""
    d = Diagram("D_M_Conv: dynamic mask convolution (Eqs. 1-10)")
    conv, c = dmc.conv, dmc.conv.in_channels
    d.box("in", 3.4, 0, f"input X: {c} ch", "io")
    m1 = f"X_ch = X × M1 (Eqs. 1-2)\nchannel mask, drop p={dmc.m:g}, training only" if dmc.channel_mask \
        else "channel mask M1 off: X_ch = X"
    d.box("m1", 3.4, 1, m1, "mask" if dmc.channel_mask else "io")
    m2 = "W × M2: kernel mask, training only (Eqs. 5-6)" if dmc.kernel_mask else "kernel mask M2 off"
    d.box("ke", 1.8, 3, f"X_ke = {layer_label(conv)}\n{m2}", "conv")
    d.chain("in", "m1", "ke")
    if dmc.conditional_mask:
        d.box("cond", 5.3, 2.5, "M3 = " + describe(dmc.cond, 26) + "\n(Eq. 7), one value per pixel", "mask")
        d.op("co", 5.3, 4, "×")
        d.arrow("m1", "cond")
        d.arrow("cond", "co")
        d.arrow("m1", "co", "X_ch", lane=6.9)
        d.op("add", 3.4, 5, "+")
        d.arrow("co", "add", "X_co (Eq. 9)")
        d.arrow("ke", "add")
        d.box("out", 3.4, 6, f"X_out = X_co + X_ke (Eq. 10): {conv.out_channels} ch", "io")
        d.arrow("add", "out")
    else:
        d.box("out", 1.8, 4.5, f"X_out = X_ke: {conv.out_channels} ch (no M3)", "io")
        d.arrow("ke", "out")
    return d.figure()


def draw_mmcf(block: nn.Module):
    """DMCNet's MMCF block (Eqs. 11-19): F0, the channel split, the three branches with
    D_M_Conv, concatenation, FGlo, the scaled residual sum and the shortcut (with AE if any).
    A DMCBottleneck is drawn through its inner MMCF."""
    if isinstance(block, DMCBottleneck):
        block = block.mmcf
    if not isinstance(block, MMCF):
        raise TypeError(f"draw_mmcf needs an MMCF block; got {type(block).__name__}")
    d = Diagram(f"DMCNet's MMCF block ({type(block).__name__}, Eqs. 11-19)")
    conv0 = block.f0[0]
    d.box("in", 3.2, 0, f"input F: {conv0.in_channels} ch", "io")
    d.box("f0", 3.2, 1, "F0 = " + describe(block.f0) + " (Eq. 11)")
    d.box("split", 3.2, 2, "split into {} | {} | {} channels (Eq. 13)".format(*block.sizes), "op")
    d.chain("in", "f0", "split")
    xs = (1.0, 3.2, 5.4)
    for j, (x, branch) in enumerate(zip(xs, (block.branch1, block.branch2, block.branch3)), 1):
        groups = _layer_groups(branch)
        keys = [d.box(f"b{j}.{i}", x, 3 + i * (2 / max(len(groups) - 1, 1)) if len(groups) > 1 else 4,
                      (f"F{j}' (Eq. {13 + j}): " if i == 0 else "") + describe(group, 22),
                      "mask" if isinstance(group[0], DynamicMaskConv) else "conv")
                for i, group in enumerate(groups)]
        d.arrow("split", keys[0])
        d.chain(*keys)
        d.arrow(keys[-1], "cat")
    d.op("cat", 3.2, 6, "C")
    d.box("fglo", 5.4, 7, "F_T = FGlo (Eq. 18)\n" + describe(block.fglo.fc, 30), "attn")
    d.op("mul", 3.2, 8, "×")
    d.arrow("cat", "mul", "F_cat (Eq. 17)")
    d.arrow("cat", "fglo")
    d.arrow("fglo", "mul")
    d.box("scale", 3.2, 9, f"× s = {block.s:g}", "op")
    d.op("add", 3.2, 10, "+")
    d.box("out", 3.2, 11, f"F_out = s·(F_cat × F_T) + F_in (Eq. 19): {conv0.out_channels} ch", "io")
    d.chain("mul", "scale", "add", "out")
    _shortcut(d, block, "in", "add", lane=6.9, row=5)
    return d.figure()


def _layer_groups(sequence: nn.Sequential) -> list[list[nn.Module]]:
    """Layers grouped as a paper draws them: each conv with the BN and activation after it."""
    groups: list[list[nn.Module]] = []
    for module in sequence:
        trailing = isinstance(module, (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Sigmoid))
        if trailing and groups:
            groups[-1].append(module)
        else:
            groups.append([module])
    return groups


def draw_ae(ae: AE):
    """DMCNet's AE (Fig. 4, Eqs. 20-28): pixel branch, ECA channel branch, MLP, residual."""
    d = Diagram("DMCNet's AE: adaptive enhancement (Eqs. 20-28)")
    c = ae.value[0].in_channels
    d.box("in", 3.4, 0, f"input S: {c} ch", "io")
    d.box("sv", 1.0, 1.5, "S_v (Eq. 20)\n" + describe(ae.value, 18))
    d.box("wp", 3.4, 1.5, "W_p (Eqs. 21-22)\n" + describe(ae.pixel_gate, 22), "attn")
    d.box("wa", 5.8, 1.5, f"W_a (Eq. 24), ECA:\nGAP · {layer_label(ae.channel_conv)} · Sigmoid", "attn")
    d.op("spa", 2.2, 3, "×")
    d.op("att", 5.8, 3, "×")
    for key in ("sv", "wp", "wa"):
        d.arrow("in", key)
    d.arrow("sv", "spa")
    d.arrow("wp", "spa")
    d.arrow("wa", "att")
    d.arrow("in", "att", "S", lane=7.2)
    d.op("cat", 3.4, 4, "C")
    d.arrow("spa", "cat", "S_spa (Eq. 23)")
    d.arrow("att", "cat", "S_att (Eq. 25)")
    d.box("mlp", 3.4, 5, "S_mlp (Eqs. 26-27)\n" + describe(ae.mlp, 34))
    d.op("add", 3.4, 6, "+")
    d.box("out", 3.4, 7, f"S_out = S + S_mlp (Eq. 28): {c} ch", "io")
    d.chain("cat", "mlp", "add", "out")
    d.arrow("in", "add", "S", lane=0.25)
    return d.figure()


def draw_frrb(block: FRRB):
    """GDFRNet's FRRB (Eq. 14): the basic block's two convs with the FRM at its position."""
    d = Diagram(f"GDFRNet's FRRB, FRM at position {block.position} (Eq. 14)")
    d.box("in", 3.0, 0, f"input x: {block.conv1.in_channels} ch", "io")
    row, previous = 1, "in"
    for name, layers in (("A", None), ("conv1", (block.conv1, block.bn1, block.relu)), ("B", None),
                         ("conv2", (block.conv2, block.bn2)), ("C", None)):
        if layers is None and name != block.position:
            continue
        key = d.box(name, 3.0, row, frm_label(block.frm) if layers is None else describe(layers),
                    "attn" if layers is None else "conv")
        d.arrow(previous, key)
        previous, row = key, row + 1
    d.op("add", 3.0, row, "+")
    d.arrow(previous, "add")
    d.box("out", 3.0, row + 1, f"ReLU: H(x) = M(F(x)) + x, {block.conv2.out_channels} ch", "io")
    d.arrow("add", "out")
    if block.position == "D":
        d.box("D", 6.0, 1.5, frm_label(block.frm), "attn")
        d.arrow("in", "D", lane=6.0)
        start = "D"
    else:
        start = "in"
    _shortcut(d, block, start, "add", lane=6.0, row=row - 1 if block.position == "D" else row / 2)
    return d.figure()


def draw_frm(frm: FRM):
    """GDFRNet's FRM (Eqs. 1-12): the reconstruction path X1 and the direction-aware attention X2."""
    channels = frm.up_bn.num_features
    d = Diagram("GDFRNet's FRM: X_out = X1 + X2 (Eqs. 1-12)")
    d.box("in", 3.6, 0, f"input X: {channels} ch", "io")
    keys = [d.box(f"x1.{i}", 1.8, 1 + i, describe(group) + f" (Eq. {2 + i})")
            for i, group in enumerate(frm.reconstruct)]
    keys.append(d.box("up", 1.8, 4, describe([frm.up, frm.up_bn, nn.ReLU()]) + " (Eq. 5)"))
    d.chain("in", *keys)
    attention = frm.attention
    d.box("pool", 5.4, 1, "H-pool → C×1×W, W-pool → C×H×1\nconcatenated (Eqs. 6-8)", "attn")
    d.box("squeeze", 5.4, 2, describe(attention.squeeze, 30) + " (Eqs. 9-10)", "attn")
    d.box("ah", 4.5, 3, "A_h: " + describe([attention.gate_h, nn.Sigmoid()], 18), "attn")
    d.box("aw", 6.4, 3, "A_w: " + describe([attention.gate_w, nn.Sigmoid()], 18), "attn")
    d.op("x2", 5.4, 4, "×")
    d.chain("in", "pool", "squeeze")
    for key in ("ah", "aw"):
        d.arrow("squeeze", key)
        d.arrow(key, "x2")
    d.arrow("in", "x2", "X", lane=7.3)
    d.op("add", 3.6, 5, "+")
    d.arrow("up", "add", "X1")
    d.arrow("x2", "add", "X2 = X × A_w × A_h (Eq. 11)")
    d.box("out", 3.6, 6, f"X_out = X1 + X2 (Eq. 12): {channels} ch", "io")
    d.arrow("add", "out")
    return d.figure()


def draw_resneskt_block(block: ResNeSktBottleneck):
    """The ResNeSkt bottleneck (Fig. 2): 1x1 conv, split attention (Eqs. 1-3), spatial-kernel
    attention (Eqs. 4-5, GeM), 1x1 conv and the residual add."""
    d = Diagram("ResNeSkt bottleneck: split attention + spatial-kernel attention (Fig. 2)")
    sa, ska = block.conv2, block.ska
    radix, width = sa.radix, sa.conv.out_channels // sa.radix
    cardinality = sa.conv.groups // radix
    d.box("in", 2.6, 0, f"input X: {block.conv1.in_channels} ch", "io")
    d.box("conv1", 2.6, 1, describe([block.conv1, block.bn1, block.act1]))
    d.box("splits", 2.6, 2, describe([sa.conv, sa.bn0, sa.act0], 44)
          + f"\n→ R={radix} splits of {width} ch, K={cardinality} cardinal group(s)", "attn")
    d.box("gap", 5.5, 3, "U = Σ splits, GAP (Eq. 1)", "attn")
    d.box("fc", 5.5, 4, describe([sa.fc1, sa.bn1, sa.act1, sa.fc2], 32) + f"\nsoftmax over R={radix} (Eq. 3)", "attn")
    d.op("sum", 2.6, 5, "Σ")
    d.chain("in", "conv1", "splits", "gap", "fc")
    d.arrow("splits", "sum")
    d.arrow("fc", "sum", "a_i(c)")
    row = 6
    if isinstance(ska, nn.Identity):
        last = "sum"
    else:
        gem = ska.gem.p.item()
        d.box("pool", 2.6, 6, f"per group: avg | max | GeM p={gem:.3g} over channels (Eq. 4)", "attn")
        d.arrow("sum", "pool", "V = Σ a_i · split_i (Eq. 2)")
        xs = [1.2 + 2.8 * i for i in range(len(ska.branches))] if len(ska.branches) > 1 else [2.6]
        for i, (x, branch) in enumerate(zip(xs, ska.branches)):
            k = _kernel(branch[0].kernel_size)
            d.box(f"k{i}", x, 7, f"V_{k}: " + describe(branch, 24), "attn")
            d.arrow("pool", f"k{i}")
            d.arrow(f"k{i}", "select")
            d.arrow(f"k{i}", "weight")
        d.box("select", 5.5, 8, "Σ V_k, GAP (Eq. 5) · " + describe([ska.fc1, ska.bn, ska.act, ska.fc2], 28)
              + f"\nsoftmax over the {len(ska.branches)} kernels: a_k", "attn")
        d.box("weight", 2.6, 9, "spatial weight σ(Σ_k a_k V_k)", "attn")
        d.op("mul", 2.6, 10, "×")
        d.arrow("select", "weight")
        d.arrow("weight", "mul")
        d.arrow("sum", "mul", "V", lane=0.2)
        last, row = "mul", 11
    d.box("conv3", 2.6, row, describe([block.conv3, block.bn3]))
    d.op("add", 2.6, row + 1, "+")
    d.box("out", 2.6, row + 2, f"ReLU: {block.conv3.out_channels} ch", "io")
    d.chain(last, "conv3", "add", "out")
    _shortcut(d, block, "in", "add", lane=6.9, row=row - 1)
    return d.figure()


def draw_strb(block: STRB):
    """DRSTN's STRB: the basic block with the learned soft threshold (Eq. 15) before the add."""
    st: SoftThreshold = block.soft_threshold
    d = Diagram("DRSTN's STRB: soft thresholding residual block (Eq. 15)")
    d.box("in", 2.6, 0, f"input x: {block.conv1.in_channels} ch", "io")
    d.box("conv1", 2.6, 1, describe([block.conv1, block.bn1, block.relu]))
    d.box("conv2", 2.6, 2, describe([block.conv2, block.bn2]))
    d.box("a", 5.5, 3, "A = GAP(|x|), one per channel", "attn")
    d.box("alpha", 5.5, 4, "α = " + describe([st.fc1, st.bn, st.relu, st.fc2, nn.Sigmoid()], 30), "attn")
    d.box("tau", 5.5, 5, "τ = A · α,  0 ≤ τ < A", "attn")
    d.box("shrink", 2.6, 5, "soft threshold (Eq. 15)\ny = sign(x) · max(|x| − τ, 0)", "mask")
    d.op("add", 2.6, 6, "+")
    d.box("out", 2.6, 7, f"ReLU: {block.conv2.out_channels} ch", "io")
    d.chain("in", "conv1", "conv2", "a", "alpha", "tau", "shrink")
    d.arrow("conv2", "shrink")
    d.chain("shrink", "add", "out")
    _shortcut(d, block, "in", "add", lane=0.3, row=3.5)
    return d.figure()


# ---- whole networks ----------------------------------------------------------------------------

@torch.no_grad()
def _stage_shapes(model: ResNet, size: int) -> list[tuple[int, ...]]:
    """(C, H, W) after the stem and after every stage, from one forward pass on a dummy image."""
    shapes, hooks = [], []
    for module in (model.stem, *model.layers):
        hooks.append(module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        model(torch.zeros(1, _channels_in(model.stem), size, size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes[:1] + shapes[-len(model.layers):]


def draw_network(model: ResNet, input_size: int = 32):
    """A network of the package: stem, stages (blocks × count, channels and resolution from one
    forward pass at ``input_size``), pooling and classifier; GDFRNet's optimisation branch (FGCM,
    FOM, feedback) beside the stages when the model has one."""
    if not isinstance(model, ResNet):
        raise TypeError(f"draw_network needs one of the package's ResNet-style models; got {type(model).__name__}")
    shapes = _stage_shapes(model, input_size)
    branch = getattr(model, "branch", None)
    name = getattr(model, "model_name", type(model).__name__)  # the registry's name, e.g. dmcnet34
    d = Diagram(f"{name}: the whole network at a {input_size}×{input_size} input")
    d.box("in", 2.0, 0, f"image: {_channels_in(model.stem)}×{input_size}×{input_size}", "io")
    d.box("stem", 2.0, 1, "stem: " + describe(model.stem, 34) + "\n→ {}×{}×{}".format(*shapes[0]))
    d.arrow("in", "stem")
    previous, row = "stem", 2
    for i, (stage, shape) in enumerate(zip(model.layers, shapes[1:])):
        blocks = list(stage)
        key = d.box(f"layer{i + 1}", 2.0, row,
                    f"layer{i + 1}: {len(blocks)} × {type(blocks[0]).__name__}\n→ {shape[0]}×{shape[1]}×{shape[2]}",
                    "stage")
        d.arrow(previous, key)
        previous, row = key, row + (2 if branch is not None and i < branch.levels else 1)
        if branch is not None and i == branch.levels:
            previous, row = _draw_branch(d, branch, row), row + 1
    d.box("pool", 2.0, row, "global average pool", "op")
    d.box("fc", 2.0, row + 1, layer_label(model.fc), "io")
    d.chain(previous, "pool", "fc")
    return d.figure()


def _draw_branch(d: Diagram, branch: nn.Module, row: int) -> str:
    """GDFRNet's optimisation branch (Fig. 7) beside the stages; returns the key of the sum."""
    high = "layer1"
    for level, (fgcm_high, fgcm_low, fom) in enumerate(zip(branch.fgcm_high, branch.fgcm_low, branch.fom)):
        stage_row = 2 + 2 * level
        fgcm = d.box(f"fgcm{level}", 5.2, stage_row + 1, _fgcm_label(fgcm_high), "attn")
        fuse = d.box(f"fom{level}", 5.2, stage_row + 2, _fom_label(fom), "attn")
        d.arrow(high, fgcm, lane=5.2 if level == 0 else None)
        d.arrow(fgcm, fuse)
        note = "FGCM first" if isinstance(fgcm_low, FGCM) else None
        d.arrow(f"layer{level + 2}", fuse, note)
        high = fuse
    feedback = d.box("feedback", 5.2, row, "back to the stages:\n" + describe(branch.feedback, 44), "attn")
    d.arrow(high, feedback)
    d.op("branch_add", 2.0, row, "+")
    d.arrow(feedback, "branch_add")
    d.arrow(f"layer{branch.levels + 1}", "branch_add")
    return "branch_add"


def _fgcm_label(fgcm: FGCM) -> str:
    return f"FGCM (Eqs. 22-23): {log_label(fgcm.log)}\n" + describe(fgcm.pointwise, 36)


def _fom_label(fom: FOM) -> str:
    c = fom.conv_h.in_channels
    return (f"FOM (Eqs. 24-29), {c} ch: {layer_label(fom.conv_h).split(',')[0]} ×2,\n"
            f"M_sim → {layer_label(fom.refine).split(',')[0]} → blend")


DRAWERS = ((DynamicMaskConv, draw_dynamic_mask_conv), (AE, draw_ae), (MMCF, draw_mmcf), (DMCBottleneck, draw_mmcf),
           (FRRB, draw_frrb), (FRM, draw_frm), (ResNeSktBottleneck, draw_resneskt_block), (STRB, draw_strb),
           (ResNet, draw_network))


def draw(module: nn.Module):
    """The diagram of ``module``, chosen by its type (a block of one of the papers, or a network)."""
    for kind, drawer in DRAWERS:
        if isinstance(module, kind):
            return drawer(module)
    raise TypeError(f"no diagram for {type(module).__name__}; expected one of "
                    f"{', '.join(kind.__name__ for kind, _ in DRAWERS)}")
