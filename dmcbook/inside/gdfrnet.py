"""Looking inside GDFRNet (chapter 2): the FRM's maps, the LoG claims measured on images,
gradients by stage, the feature maps of Fig. 17 and the costs part by part."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import module_inputs
from ..models.common import ResNet
from ..models.gdfrnet import FOM, FRM, FRRB, LaplacianOfGaussian


def frm_maps(frm: FRM, x: torch.Tensor) -> dict:
    """X1, X2, the output and the attention weights A_h (N, C, 1, W) and A_w (N, C, H, 1) of ``frm``
    on ``x``, for pictures."""
    a_h, a_w = frm.attention.weights(x)
    x1, x2 = frm.reconstruction(x), x * a_w * a_h
    return {"X1": x1, "X2": x2, "out": x1 + x2, "A_h": a_h, "A_w": a_w}


def detail_statistics(images: torch.Tensor, labels: torch.Tensor, sigma: float = 1.0, pairs: int = 1000,
                      edge_quantile: float = 0.9, seed: int = 0) -> dict:
    """The two claims of Sec. 1.3.1 measured on real images (N, 1, H, W) with their labels.

    For same-class and different-class pairs: ``var``/``var_gauss``, the pixel variance of
    dI = I1 - I2 and of G * dI (the text: smoothing shrinks it for same-class pairs), and
    ``D_orig``/``D_laplace``/``D_log``, the mean |difference| of the images, of their 8-neighbour
    Laplacians (Eq. 19-20) and of their LoG responses over the edge region, the pixels where
    either image's Sobel magnitude is in its top ``1 - edge_quantile`` (the text: larger after
    the Laplacian for different-class pairs). A filter's gain moves both kinds of pair alike,
    so compare each number between the two kinds as well as before and after.
    """
    from skimage.filters import sobel  # a reference edge detector for the region, not one of ours

    gen = torch.Generator().manual_seed(seed)
    i, j = torch.randint(len(images), (2, 40 * pairs), generator=gen)
    log = LaplacianOfGaussian(sigma).to(images.device)
    stats = {}
    for kind, keep in (("same", labels[i] == labels[j]), ("different", (labels[i] != labels[j]) & (i != j))):
        a, b = images[i[keep][:pairs]], images[j[keep][:pairs]]
        edges = [torch.from_numpy(sobel(x[:, 0].cpu().numpy(), axis=(1, 2))) for x in (a, b)]
        omega = sum((e >= e.flatten(1).quantile(edge_quantile, dim=1)[:, None, None]) for e in edges) > 0
        omega = omega[:, None].to(images.device)

        def edge_mean(x, y):
            return ((x - y).abs() * omega).sum().item() / omega.sum().item()

        with torch.no_grad():
            d = a - b
            stats[kind] = {
                "var": d.var(dim=(1, 2, 3)).mean().item(),
                "var_gauss": log._depthwise(d, log.gaussian).var(dim=(1, 2, 3)).mean().item(),
                "D_orig": edge_mean(a, b),
                "D_laplace": edge_mean(log._depthwise(a, log.laplacian), log._depthwise(b, log.laplacian)),
                "D_log": edge_mean(log(a), log(b)),
            }
    return stats


def gradient_norms_by_stage(model: ResNet, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The norm of the loss gradient over the parameters of the stem, each stage and the classifier,
    for one batch in training mode: where an architecture amplifies gradients on the way back."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    parts = {"stem": model.stem, **{f"layer{i + 1}": layer for i, layer in enumerate(model.layers)}, "fc": model.fc}
    norms = {name: torch.cat([p.grad.flatten() for p in part.parameters()]).norm().item()
             for name, part in parts.items()}
    model.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def inside_gdfrnet(model: ResNet, x: torch.Tensor, stage: int = 0) -> dict:
    """Feature maps of Fig. 17 for a batch ``x``, in eval mode.

    ``conv``: the last block of ``stage`` before its FRM, F(x) (for a plain block: before the
    addition); ``block``: that block's output; and when the model has them, ``frm`` (the
    :func:`frm_maps` of that FRM), ``detail`` (the first FGCM's output), ``fused`` (the first
    FOM's output) and ``fom`` (that FOM's M_sim1, prior and M_sim2).
    """
    block = model.layers[stage][-1]
    seen, hooks = {}, []

    def keep(name, inputs=False):
        # a copy: a plain block adds its shortcut to bn2's output in place, which would turn
        # the kept F(x) into the block's output
        return lambda module, args, out=None: seen.__setitem__(
            name, args if inputs else out.detach().clone())

    hooks.append(block.bn2.register_forward_hook(keep("conv")))
    hooks.append(block.register_forward_hook(keep("block")))
    if isinstance(block, FRRB):
        hooks.append(block.frm.register_forward_pre_hook(keep("frm_in", inputs=True)))
    branch = getattr(model, "branch", None)
    if branch is not None:
        hooks.append(branch.fgcm_high[0].register_forward_hook(keep("detail")))
        hooks.append(branch.fom[0].register_forward_hook(keep("fused")))
        hooks.append(branch.fom[0].register_forward_pre_hook(keep("fom_in", inputs=True)))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if "frm_in" in seen:
        seen["frm"] = frm_maps(block.frm, seen.pop("frm_in")[0])
    if "fom_in" in seen:
        seen["fom"] = branch.fom[0].similarity(*seen.pop("fom_in"))
    return seen


@torch.no_grad()
def attention_statistics(model: ResNet, images: torch.Tensor) -> list[dict]:
    """Per stage, how its FRMs' coordinate attention weights the map on ``images`` (eval mode):
    the mean weight A_w A_h, and how much it varies over the map (its standard deviation over
    the positions, averaged over channels, images and the stage's FRMs). Near zero, the attention
    scales whole channels and picks out no region."""
    stages: dict[int, list[tuple[float, float]]] = {}
    for name, (x,) in module_inputs(model, images, FRM).items():
        a_h, a_w = model.get_submodule(name).attention.weights(x)
        weight = a_w * a_h
        stage = int(re.search(r"layers\.(\d+)\.", name).group(1)) + 1
        stages.setdefault(stage, []).append((weight.mean().item(), weight.std((2, 3)).mean().item()))
    return [{"stage": stage, "FRMs": len(values), "mean weight": sum(v[0] for v in values) / len(values),
             "spread over the map": sum(v[1] for v in values) / len(values)}
            for stage, values in sorted(stages.items())]


@torch.no_grad()
def fusion_statistics(model: ResNet, images: torch.Tensor, frame: int = 3) -> list[dict]:
    """For each FOM of the branch, its weight M_sim2 on ``images`` (eval mode) inside the
    ``frame``-pixel border, where it is one number per image: the mean over the images, how
    much it differs between images, and how much it varies within an image (about zero)."""
    rows = []
    for name, (f_h, f_l) in module_inputs(model, images, FOM).items():
        inner = model.get_submodule(name).similarity(f_h, f_l)["M_sim2"][:, 0, frame:-frame, frame:-frame]
        per_image = inner.mean((1, 2))
        rows.append({"FOM": name.rsplit(".", 1)[-1], "M_sim2 mean": per_image.mean().item(),
                     "between images": per_image.std().item(), "within an image": inner.std((1, 2)).mean().item()})
    return rows


def parameter_breakdown(model: ResNet) -> list[dict]:
    """Parameters by part: the ResNet-34 skeleton, the FRMs (split by operation) and the branch."""
    def count(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    frms = [m for m in model.modules() if isinstance(m, FRM)]
    branch = getattr(model, "branch", None)
    parts = {
        "FRM transposed convs (Eq. 5) + BN": count([m for f in frms for m in (f.up, f.up_bn)]),
        "FRM down conv (Eq. 2) + BN": count([f.reconstruct[0] for f in frms]),
        "FRM pointwise convs (Eq. 3-4) + BN": count([m for f in frms for m in f.reconstruct[1:]]),
        "FRM attention (Eq. 6-11)": count([f.attention for f in frms]),
        "branch FGCMs (Eq. 23)": count(branch.fgcm_high) + count(branch.fgcm_low) if branch else 0,
        "branch FOMs (Eq. 24-29)": count(branch.fom) if branch else 0,
        "branch feedback depthwise convs": count([branch.feedback]) if branch else 0,
    }
    rows = [{"part": "ResNet-34 skeleton (stem, convs, BN, shortcuts, fc)", "params": count([model]) - sum(parts.values())}]
    rows += [{"part": part, "params": n} for part, n in parts.items()]
    return rows + [{"part": "total", "params": count([model])}]


# Where each counted layer's MACs go: (pattern in the layer's name, part), the first match wins.
# The FRM and branch labels are parameter_breakdown's, so the two tables line up.
_MAC_PARTS = (
    (r"\.frm\.reconstruct\.0\.", "FRM down conv (Eq. 2) + BN"),
    (r"\.frm\.reconstruct\.", "FRM pointwise convs (Eq. 3-4) + BN"),
    (r"\.frm\.up$", "FRM transposed convs (Eq. 5) + BN"),
    (r"\.frm\.attention\.", "FRM attention (Eq. 6-11)"),
    (r"^branch\.fgcm_", "branch FGCMs (Eq. 23)"),
    (r"^branch\.fom", "branch FOMs (Eq. 24-29)"),
    (r"^branch\.feedback", "branch feedback depthwise convs"),
    (r"^stem\.", "stem"),
)


def _mac_part(name: str) -> str:
    for pattern, part in _MAC_PARTS:
        if re.search(pattern, name):
            return part
    if name.startswith("layers."):
        return f"layer{int(name.split('.')[1]) + 1} convs and shortcuts"
    return "head (fc)"


@torch.no_grad()
def mac_breakdown(model: ResNet, input_size=(3, 32, 32)) -> list[dict]:
    """Multiply-accumulates of one ``input_size`` image, part by part: the stem, each stage's own
    convs and shortcuts, the FRMs split by operation, the branch's FGCMs, FOMs and feedback convs,
    and the classifier, then the total. Counted as ``profile.count_flops`` counts (PyTorch's
    FlopCounterMode: convs, transposed convs per *input* pixel, the classifier; element-wise
    products, pooling and interpolation cost nothing), so the total is its MACs. Works on the
    meta device. The part list is the same for every variant, so two tables can be zipped.
    """
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    counted = counter.get_flop_counts()  # keyed "<class name>.<module name>", children included

    def flops(name, module):  # a container that is never called (ModuleList) holds its children's
        key = ".".join(filter(None, (type(model).__name__, name)))
        if key in counted:
            return sum(counted[key].values())
        return sum(flops(f"{name}.{child}" if name else child, m) for child, m in module.named_children())

    parts = dict.fromkeys(["stem", *(f"layer{i + 1} convs and shortcuts" for i in range(len(model.layers)))]
                          + [part for _, part in _MAC_PARTS[:-1]] + ["head (fc)"], 0)
    for name, module in model.named_modules():
        # what the module computes itself: its own layer, or functional convs such as the LoG's
        children = sum(flops(f"{name}.{child}" if name else child, m) for child, m in module.named_children())
        parts[_mac_part(name)] += (flops(name, module) - children) // 2
    return [{"part": part, "macs": macs} for part, macs in parts.items()] + [
        {"part": "total", "macs": sum(parts.values())}]
