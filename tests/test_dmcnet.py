"""Tests of the DMCNet chapter's modules: equations against direct formulas, shapes, gradients,
the random masks, the AE placements and the paper's parameter counts."""
import pytest
import torch
import torch.nn.functional as F

from dmcbook import create_model
from dmcbook.inside.dmcnet import branch_receptive_fields, capture_inputs, mask_variants, param_breakdown
from dmcbook.models.common import make_shortcut
from dmcbook.models.dmcnet import (ABLATIONS, AE, AE_PLACEMENTS, MASKS, MMCF, DynamicMaskConv, FGlo,
                                   split_sizes)

from dmcbook.verify import batch_norm_eval as bn_eval, randomize_bn

torch.set_num_threads(1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def dilated_conv_direct(x, weight, dilation):
    """Eq. 6's convolution as an explicit sum over kernel taps (no F.conv2d)."""
    k = weight.shape[-1]
    pad = dilation * (k - 1) // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    out = 0
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i * dilation:i * dilation + h, j * dilation:j * dilation + w]
            out = out + torch.einsum("oc,nchw->nohw", weight[:, :, i, j], patch)
    return out


def d_m_conv_direct(x_ch, dmc, dilation, m2=1.0):
    """Eqs. 6-10 written out for a given X_ch (Eq. 2) and kernel mask: (X_out, M3)."""
    x_ke = dilated_conv_direct(x_ch, dmc.conv.weight * m2, dilation)     # Eq. 6
    c3, c1 = dmc.cond[0], dmc.cond[1]
    ctx = dilated_conv_direct(x_ch, c3.weight, 1) + c3.bias.view(1, -1, 1, 1)
    m3 = 1 / (1 + torch.exp(-(torch.einsum("oc,nchw->nohw", c1.weight[:, :, 0, 0], ctx)
                               + c1.bias.view(1, -1, 1, 1))))            # Eqs. 7-8
    return x_ch * m3 + x_ke, m3                                          # Eqs. 9-10


# ---- DynamicMaskConv (Eqs. 1-10) ----

def test_dynamic_mask_conv_matches_direct_formula_with_given_masks():
    torch.manual_seed(0)
    dmc = DynamicMaskConv(6, 6, dilation=2, m=0.3)
    x = torch.randn(2, 6, 9, 9)
    m1 = (torch.rand(2, 6, 1, 1) >= 0.3).float() / 0.7
    m2 = (torch.rand_like(dmc.conv.weight) >= 0.3).float() / 0.7
    parts = dmc.forward_parts(x, m1, m2)
    expected, m3 = d_m_conv_direct(x * m1, dmc, 2, m2)                  # Eq. 2: X_ch = X M1
    assert m3.shape == (2, 1, 9, 9)
    torch.testing.assert_close(parts["m3"], m3, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts["out"], expected, atol=1e-5, rtol=1e-5)


def test_all_masks_off_is_a_plain_dilated_conv():
    torch.manual_seed(0)
    dmc = DynamicMaskConv(5, 7, dilation=3, kernel_mask=False, channel_mask=False, conditional_mask=False)
    plain = torch.nn.Conv2d(5, 7, 3, padding=3, dilation=3, bias=False)
    plain.weight.data.copy_(dmc.conv.weight.data)
    x = torch.randn(2, 5, 11, 11)
    dmc.train()  # no mask is on, so even training mode must be the plain convolution
    torch.testing.assert_close(dmc(x), plain(x))
    assert not hasattr(dmc, "cond")


@pytest.mark.parametrize("h,dilation", [(9, 2), (10, 3), (7, 1)])
def test_output_size_follows_eq3(h, dilation):
    dmc = DynamicMaskConv(3, 3, dilation=dilation)
    k, s, p = 3, 1, dilation
    expected = (h + 2 * p - dilation * (k - 1) - 1) // s + 1
    assert dmc(torch.randn(1, 3, h, h + 1)).shape[-2:] == (expected, expected + 1)


def test_channel_mask_drops_the_intended_fraction_in_training():
    torch.manual_seed(0)
    m = 0.3
    dmc = DynamicMaskConv(256, 256, m=m, kernel_mask=False, conditional_mask=False).train()
    x = torch.ones(64, 256, 2, 2)
    m1, _ = dmc.draw_masks(x)
    assert m1.shape == (64, 256, 1, 1)
    x_ch = dmc.forward_parts(x, m1)["x_ch"]
    dropped = (x_ch[:, :, 0, 0] == 0).float().mean().item()
    assert abs(dropped - m) < 0.02
    kept = x_ch[x_ch != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - m)))  # inverted-dropout scaling
    # a channel is dropped or kept as a whole
    assert torch.all(x_ch.amax((2, 3)) == x_ch.amin((2, 3)))


def test_kernel_mask_drops_the_intended_fraction_of_taps():
    torch.manual_seed(0)
    dmc = DynamicMaskConv(64, 64, m=0.2, channel_mask=False, conditional_mask=False).train()
    _, m2 = dmc.draw_masks(torch.zeros(1, 64, 4, 4))
    assert m2.shape == dmc.conv.weight.shape
    assert abs((m2 == 0).float().mean().item() - 0.2) < 0.02


def test_masks_are_random_in_training_and_off_in_eval():
    torch.manual_seed(0)
    dmc = DynamicMaskConv(8, 8, m=0.5)
    x = torch.randn(2, 8, 6, 6)
    dmc.train()
    assert not torch.equal(dmc(x), dmc(x))
    dmc.eval()
    torch.testing.assert_close(dmc(x), dmc.forward_parts(x)["out"], rtol=0, atol=0)


@pytest.mark.parametrize("mask", ["mask2", "mask3", "mask5"])
def test_forward_in_training_applies_exactly_the_masks_switched_on(mask):
    # forward draws M1 and M2 with draw_masks; replaying the same random numbers gives the masks it
    # used, so its output must be forward_parts with M1 where the channel switch is on and M2 where
    # the kernel switch is on (Table 2: mask2 = kernel, mask3 = channel).
    kernel, channel, conditional = MASKS[mask]
    dmc = DynamicMaskConv(16, 16, m=0.5, kernel_mask=kernel, channel_mask=channel,
                          conditional_mask=conditional).train()
    x = torch.randn(3, 16, 7, 7)
    torch.manual_seed(11)
    out = dmc(x)
    torch.manual_seed(11)
    m1, m2 = dmc.draw_masks(x)
    torch.testing.assert_close(out, dmc.forward_parts(x, m1 if channel else None, m2 if kernel else None)["out"])


def test_kernel_mask_is_shared_by_the_batch_and_channel_mask_is_per_sample():
    # M2 masks the weight, so identical samples stay identical; M1 silences channels per sample,
    # so identical samples come out different. Swapping the two switches breaks both.
    x = torch.randn(1, 16, 7, 7).expand(8, -1, -1, -1)
    torch.manual_seed(12)
    kernel_only = DynamicMaskConv(16, 16, m=0.5, channel_mask=False, conditional_mask=False).train()
    out = kernel_only(x)
    assert torch.equal(out, out[:1].expand_as(out))
    assert not torch.allclose(out, kernel_only.eval()(x))
    channel_only = DynamicMaskConv(16, 16, m=0.5, kernel_mask=False, conditional_mask=False).train()
    out = channel_only(x)
    assert not torch.allclose(out[0], out[1])


# ---- FGlo, MMCF (Eqs. 11-19) ----

def test_fglo_matches_direct_formula():
    torch.manual_seed(0)
    fglo = FGlo(32, reduction=4)
    f = torch.randn(3, 32, 5, 5)
    conv_a, conv_b = fglo.fc[1], fglo.fc[2]
    g = f.mean((2, 3))
    z = g @ conv_a.weight[:, :, 0, 0].T + conv_a.bias
    f_t = torch.sigmoid(z @ conv_b.weight[:, :, 0, 0].T + conv_b.bias)  # Eq. 18
    torch.testing.assert_close(fglo(f).flatten(1), f_t)


@pytest.mark.parametrize("c,sizes", [(9, (3, 3, 3)), (64, (22, 21, 21)), (10, (4, 3, 3))])
def test_split_sizes(c, sizes):
    assert split_sizes(c) == sizes


@pytest.mark.parametrize("inplanes,stride", [(12, 1), (6, 2)])
def test_mmcf_matches_direct_formula(inplanes, stride):
    # Every step of Eqs. 11-19 written out (eval mode: the random masks are off, M3 acts), against
    # the block's forward. The dilations 2 and 3 are the paper's, not read off the block; F_in of
    # the strided block is its Fig. 2(b) shortcut, which this test does not check.
    torch.manual_seed(0)
    shortcut = make_shortcut(inplanes, 12, stride, "avgpool")
    block = randomize_bn(MMCF(inplanes, 12, stride, shortcut))
    x = torch.randn(2, inplanes, 8, 8)
    with torch.no_grad():
        conv = dilated_conv_direct(x, block.f0[0].weight, 1)[:, :, ::stride, ::stride]  # strided 3x3
        f0 = bn_eval(conv, block.f0[1]).clamp(min=0)                                  # Eqs. 11-12
        f1, f2, f3 = f0[:, :4], f0[:, 4:8], f0[:, 8:]                                  # Eq. 13
        b1, b2, b3 = block.branch1, block.branch2, block.branch3
        out1 = bn_eval(dilated_conv_direct(f1, b1[0].weight, 1), b1[1])               # Eq. 14
        out2 = dilated_conv_direct(d_m_conv_direct(dilated_conv_direct(f2, b2[0].weight, 1), b2[1], 2)[0],
                                   b2[2].weight, 1)                                      # Eq. 15
        out3 = dilated_conv_direct(d_m_conv_direct(dilated_conv_direct(f3, b3[0].weight, 1), b3[1], 3)[0],
                                   b3[2].weight, 1)                                      # Eq. 16
        assert b2[2].weight.shape[-1] == 3 and b3[2].weight.shape[-1] == 5
        f_cat = torch.cat([out1, out2, out3], 1)                                         # Eq. 17
        a, b = block.fglo.fc[1], block.fglo.fc[2]
        hidden = f_cat.mean((2, 3)) @ a.weight[:, :, 0, 0].T + a.bias
        f_t = torch.sigmoid(hidden @ b.weight[:, :, 0, 0].T + b.bias)[:, :, None, None]  # Eq. 18
        f_in = x if shortcut is None else shortcut(x)
        parts = block.forward_parts(x)
        torch.testing.assert_close(parts["f0"], f0, atol=1e-5, rtol=1e-5)
        for ours, direct in zip(parts["branches"], (out1, out2, out3)):
            torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(block(x), 0.5 * f_cat * f_t + f_in, atol=1e-5, rtol=1e-5)  # Eq. 19


def test_mmcf_dilations_are_2_and_3():
    block = MMCF(12, 12)
    assert block.branch2[1].conv.dilation == (2, 2) and block.branch3[1].conv.dilation == (3, 3)
    assert block.branch2[2].kernel_size == (3, 3) and block.branch3[2].kernel_size == (5, 5)


# ---- AE (Eqs. 20-28) ----

def test_ae_matches_direct_formula():
    torch.manual_seed(0)
    c = 16
    ae = AE(c).eval()
    s = torch.randn(2, c, 6, 6)
    conv1, dw = ae.value
    s_v = torch.einsum("oc,nchw->nohw", conv1.weight[:, :, 0, 0], s) + conv1.bias.view(1, -1, 1, 1)
    s_v = torch.cat([dilated_conv_direct(s_v[:, i:i + 1], dw.weight[i:i + 1], 1) for i in range(c)], 1) \
        + dw.bias.view(1, -1, 1, 1)                                                      # Eq. 20
    pooled = s.mean((2, 3))                                                               # Eq. 21
    gate = ae.pixel_gate[1]
    w_p = torch.sigmoid(pooled @ gate.weight[:, :, 0, 0].T + gate.bias)                   # Eq. 22
    k = ae.channel_conv.kernel_size[0]
    padded = F.pad(pooled, (k // 2, k // 2))
    w_a = torch.sigmoid(sum(ae.channel_conv.weight[0, 0, i] * padded[:, i:i + c] for i in range(k)))  # Eq. 24
    s_cat = torch.cat([s_v * w_p[:, :, None, None], s * w_a[:, :, None, None]], 1)       # Eqs. 23, 25, 26
    l1, l2 = ae.mlp[0], ae.mlp[2]
    hidden = F.gelu(torch.einsum("oc,nchw->nohw", l1.weight[:, :, 0, 0], s_cat) + l1.bias.view(1, -1, 1, 1))
    s_mlp = torch.einsum("oc,nchw->nohw", l2.weight[:, :, 0, 0], hidden) + l2.bias.view(1, -1, 1, 1)  # Eq. 27
    parts = ae.forward_parts(s)
    torch.testing.assert_close(parts["w_p"].flatten(1), w_p)
    torch.testing.assert_close(parts["w_a"].flatten(1), w_a)
    torch.testing.assert_close(parts["out"], s + s_mlp, atol=1e-5, rtol=1e-5)            # Eq. 28


def test_ae_kernel_size_follows_eca():
    assert [AE(c).channel_conv.kernel_size[0] for c in (16, 64, 128, 256, 512)] == [3, 3, 5, 5, 5]


# ---- networks ----

def _aes(model):
    return [name for name, mod in model.named_modules() if isinstance(mod, AE)]


@pytest.mark.parametrize("placement", sorted(AE_PLACEMENTS))
def test_ae_placements(placement):
    model = create_model("dmcnet18", width=6, ae=placement)
    stages = sorted(int(name.split(".")[1]) + 1 for name in _aes(model))
    assert tuple(stages) == AE_PLACEMENTS[placement]
    assert all(".0.downsample." in name for name in _aes(model))


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_mask_combinations(mask):
    model = create_model("dmcnet18", width=6, mask=mask)
    dmcs = [mod for mod in model.modules() if isinstance(mod, DynamicMaskConv)]
    assert len(dmcs) == 2 * 8
    assert all((d.kernel_mask, d.channel_mask, d.conditional_mask) == MASKS[mask] for d in dmcs)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", ["dmcnet18", "dmcnet34", "dmcnet50", "dmcnet101"])
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("size", [32, 28, 224])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_shapes(name, stem, size, in_chans):
    model = create_model(name, num_classes=7, in_chans=in_chans, stem=stem, width=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_chans, size, size)).shape == (1, 7)


@pytest.mark.parametrize("options", [{"block": "a"}, {"block": "b"}, {"block": "c", "ae": "E"}, {"m": 0.5}]
                         + [dict(v) for v in ABLATIONS.values()])
@pytest.mark.parametrize("size,in_chans", [(32, 3), (28, 1)])
def test_variant_shapes(options, size, in_chans):
    model = create_model("dmcnet34", in_chans=in_chans, width=4, **options)
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name,options", [("dmcnet34", {}), ("dmcnet50", {}), ("dmcnet34", {"mmcf": False})])
def test_gradients_reach_every_parameter(name, options):
    torch.manual_seed(0)
    model = create_model(name, width=6, **options).train()
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


def test_eval_is_deterministic_and_training_is_not():
    torch.manual_seed(0)
    model = create_model("dmcnet18", width=6)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


# ---- analysis helpers ----

def test_mask_variants_switch_only_the_named_masks():
    torch.manual_seed(0)
    dmc = DynamicMaskConv(4, 4, m=0.5)
    x = torch.randn(1, 4, 7, 7)
    outs = mask_variants(dmc, x, seed=3)
    m1, m2 = dmc.draw_masks(x, generator=torch.Generator().manual_seed(3))
    plain = F.conv2d(x, dmc.conv.weight, padding=2, dilation=2)
    torch.testing.assert_close(outs["mask1"], plain)
    torch.testing.assert_close(outs["mask2"], F.conv2d(x, dmc.conv.weight * m2, padding=2, dilation=2))
    torch.testing.assert_close(outs["mask8"], dmc.forward_parts(x, m1, m2)["out"])
    torch.testing.assert_close(outs["mask3"], F.conv2d(x * m1, dmc.conv.weight, padding=2, dilation=2))
    torch.testing.assert_close(outs["mask4"], x * dmc.cond(x) + plain)


def test_param_breakdown_sums_to_the_total_and_names_the_modules():
    model = create_model("dmcnet34", width=8)
    parts = param_breakdown(model)
    assert sum(parts.values()) == n_params(model)
    assert parts["AE (Eqs. 20-28)"] == sum(n_params(m) for m in model.modules() if isinstance(m, AE))
    assert parts["FGlo (Eq. 18)"] == sum(n_params(m) for m in model.modules() if isinstance(m, FGlo))


def test_capture_inputs_and_receptive_fields():
    model = create_model("dmcnet18", width=6, in_chans=1)
    captured = capture_inputs(model, torch.randn(2, 1, 16, 16), AE)
    assert list(captured) == ["layers.1.0.downsample.1", "layers.2.0.downsample.1", "layers.3.0.downsample.1"]
    assert model.training  # the model's mode is restored
    sides = [int((m > 0).any(0).sum()) for m in branch_receptive_fields(MMCF(9, 9), size=15)]
    assert sides == [3, 7, 11]


# paper's Table 7 (M parameters, CIFAR-100 heads) and our counts stay within 5 %
PAPER_PARAMS = {"DMCNet": 20.59, "Net1": 18.86, "Net2": 23.07, "Net3": 21.33, "Net4": 21.34}


@pytest.mark.parametrize("variant", sorted(PAPER_PARAMS))
def test_paper_parameter_counts(variant):
    model = create_model("dmcnet34", num_classes=100, **ABLATIONS[variant])
    assert abs(n_params(model) / 1e6 / PAPER_PARAMS[variant] - 1) < 0.05


def test_net4_is_net3_with_the_imagenet_stem_and_resnet34s_count():
    # The paper: Net4 removes MMCF and AE "and changes the initial 3x3 conv to 7x7" (Net3 + 7x7 stem).
    net3, net4 = create_model("dmcnet34", **ABLATIONS["Net3"]), create_model("dmcnet34", **ABLATIONS["Net4"])
    assert {k: v.shape for k, v in net3.state_dict().items() if not k.startswith("stem.")} == \
        {k: v.shape for k, v in net4.state_dict().items() if not k.startswith("stem.")}
    assert [type(m) for m in net3.layers.modules()] == [type(m) for m in net4.layers.modules()]
    assert net4.stem[0].kernel_size == (7, 7) and isinstance(net4.stem[-1], torch.nn.MaxPool2d)
    # Table 7 gives it ResNet-34's 21.34 M: the average-pool shortcut costs what the strided one does
    assert n_params(net4) == n_params(create_model("resnet34", stem="imagenet"))


@pytest.mark.parametrize("call,match", [
    (lambda: MMCF(4, 2), "MMCF channels"),
    (lambda: DynamicMaskConv(4, 6), "in_chans == out_chans"),
    (lambda: DynamicMaskConv(4, 4, m=1.0), "drop probability"),
    (lambda: create_model("dmcnet34", mask="mask9"), "unknown mask"),
    (lambda: create_model("dmcnet34", ae="Z"), "unknown AE placement"),
    (lambda: create_model("dmcnet34", block="d"), "unknown block"),
    (lambda: create_model("dmcnet34", block="b", ae="H"), "needs block 'c'"),
    (lambda: create_model("dmcnet34", mmcf=False, mask="mask1"), "do not apply"),
    (lambda: create_model("dmcnet34", width=2), "MMCF channels"),
    (lambda: create_model("dmcnet34", colour="red"), "colour"),
])
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
