"""The DMCNet chapter's helpers in dmcbook.inside.dmcnet: the alternative readings' counts and
the mask figure's size."""
import copy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dmcbook import create_model, viz  # noqa: E402
import pytest  # noqa: E402
from dmcbook.inside.dmcnet import (ae_offset, ae_weights, alternative_counts,  # noqa: E402
                                   conditional_mask_statistics, m3_weight_size, mask_summary, plot_dynamic_masks,
                                   stage_conditional_masks)
from dmcbook.models.dmcnet import AE, ABLATIONS, MMCF, DynamicMaskConv, FGlo  # noqa: E402
from dmcbook.profile import count_params  # noqa: E402


def test_alternative_counts_start_from_the_model_and_change_only_what_they_name():
    net = create_model("dmcnet34", num_classes=100, width=16)
    net1 = create_model("dmcnet34", num_classes=100, width=16, **ABLATIONS["Net1"])
    counts, counts1 = alternative_counts(net), alternative_counts(net1)
    assert counts["ours"] == count_params(net)
    # Net1 has no AE, so the AE readings cost it nothing; DMCNet pays for them
    assert counts1["AE: full 3x3 for S_v"] == counts1["ours"] < counts["AE: full 3x3 for S_v"]
    assert counts1["AE: MLP hidden width 4c"] == counts1["ours"]
    assert counts["branches 2-3 halve their channels"] < counts["ours"] < counts["M3: full-width 3x3"]


def test_alternative_counts_match_a_model_built_that_way():
    """The AE readings against AE modules built with those choices, module by module."""
    net = create_model("dmcnet34", num_classes=10, width=8)
    aes = [m for m in net.modules() if isinstance(m, AE)]
    wider = sum(count_params(AE(m.value[1].out_channels, mlp_ratio=4.0)) - count_params(m) for m in aes)
    full = sum(count_params(nn.Conv2d(m.value[1].out_channels, m.value[1].out_channels, 3))
               - count_params(m.value[1]) for m in aes)
    counts = alternative_counts(net)
    assert counts["AE: MLP hidden width 4c"] - counts["ours"] == wider
    assert counts["AE: full 3x3 for S_v"] - counts["ours"] == full


def test_the_narrow_m3_fglo_and_5x5_readings_match_a_model_rebuilt_that_way():
    """The readings that swap M3's convs, FGlo or D_M_Conv's kernel, against the network with those
    modules replaced: M3 by one 3x3 to a single channel (then a 1x1 on it), FGlo reducing by 32, a
    5x5 dilated kernel."""
    net = create_model("dmcnet34", num_classes=100, width=16)
    counts = alternative_counts(net)
    narrow, wide = copy.deepcopy(net), copy.deepcopy(net)
    for module in narrow.modules():
        if isinstance(module, MMCF):
            module.fglo = FGlo(module.fglo.fc[1].in_channels, reduction=32)
        elif isinstance(module, DynamicMaskConv):
            c = module.conv.in_channels
            module.cond = nn.Sequential(nn.Conv2d(c, 1, 3, padding=1), nn.Conv2d(1, 1, 1), nn.Sigmoid())
    for module in wide.modules():
        if isinstance(module, DynamicMaskConv):
            module.conv = nn.Conv2d(module.conv.in_channels, module.conv.out_channels, 5, bias=False)
    assert counts["M3: one 3x3 to 1 channel, FGlo /32"] == count_params(narrow) < counts["ours"]
    assert counts["D_M_Conv: 5x5 kernel"] == count_params(wide) > counts["ours"]


def test_the_mask_figure_fits_the_page():
    torch.manual_seed(0)
    fig = plot_dynamic_masks(DynamicMaskConv(3, 3, m=0.3), torch.rand(1, 3, 24, 24), mask="mask8")
    try:
        assert viz.fits_page(fig)
        assert len(fig.axes) >= 6 + 3  # six panels, colour bars for the input, M3 and X_ke/X_out
    finally:
        plt.close(fig)


def test_the_mask_summary_counts_what_the_masks_keep_and_reads_m3_off_the_module():
    torch.manual_seed(0)
    dmc, x = DynamicMaskConv(4, 4, dilation=2, m=0.5), torch.rand(1, 4, 12, 12)
    summary = mask_summary(dmc, x, mask="mask8", seed=2)
    m1, m2 = dmc.draw_masks(x, None, torch.Generator().manual_seed(2))  # the same draw
    assert summary["channels kept"] == int((m1[0] > 0).sum()) and summary["channels"] == 4
    assert summary["taps kept %"] == pytest.approx(100 * (m2 > 0).float().mean().item())
    with torch.no_grad():
        m3 = dmc.cond(x * m1)
    assert (summary["M3 low"], summary["M3 high"]) == pytest.approx((m3.min().item(), m3.max().item()))
    # a combination without a mask keeps everything and has no M3
    plain = mask_summary(dmc, x, mask="mask1", seed=2)
    assert (plain["channels kept"], plain["taps kept %"], "M3 low" in plain) == (4, 100.0, False)


def test_stage_masks_and_their_statistics_follow_m3_and_see_a_constant_mask_as_flat():
    torch.manual_seed(0)
    net = create_model("dmcnet34", num_classes=10, in_chans=1, width=8).eval()
    images = torch.zeros(2, 1, 28, 28)
    images[:, :, 4:24, 8:20] = 0.9  # a garment in the middle, background around it
    masks = stage_conditional_masks(net, images)
    assert list(masks) == [f"layers.{i}.0.branch2.1" for i in range(4)]
    seen = []  # the M3 that the module itself computes in the network's forward pass
    hook = net.get_submodule("layers.1.0.branch2.1.cond").register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        net(images)
    hook.remove()
    assert torch.equal(masks["layers.1.0.branch2.1"], seen[0]) and seen[0].std() > 0
    # a mask that is 1 on the garment and 0 around it, then a constant one
    garment = (images > 0.5).float()
    sharp = {"stage": garment, "coarse": torch.nn.functional.avg_pool2d(garment, 2).round()}
    rows = conditional_mask_statistics(sharp, images)
    assert [(r["M3 on garment"], r["M3 on background"]) for r in rows] == [(1.0, 0.0), (1.0, 0.0)]
    assert all(r["M3 spread within an image"] > 0.4 for r in rows)
    [flat] = conditional_mask_statistics({"stage": torch.full_like(garment, 0.7)}, images)
    assert flat["M3 spread within an image"] == 0.0 and flat["M3 on garment"] == pytest.approx(flat["M3 on background"])


def test_ae_offset_is_how_far_the_weights_stray_from_one_half():
    net = create_model("dmcnet34", num_classes=10, in_chans=1, width=8).eval()
    weights = ae_weights(net, torch.randn(3, 1, 28, 28))
    assert len(weights) == sum(isinstance(m, AE) for m in net.modules())
    assert all(w.shape[0] == 3 and ((w > 0) & (w < 1)).all() for parts in weights.values() for w in parts.values())
    assert ae_offset({"ae": {"w_p": torch.full((2, 4), 0.5), "w_a": torch.tensor([[0.9, 0.1]])}}) == pytest.approx(0.4)
    assert ae_offset({"ae": {"w_p": torch.full((2, 4), 0.5), "w_a": torch.full((2, 4), 0.5)}}) == 0.0


def test_m3_weight_size_reads_only_the_conditional_mask_convolutions():
    net = create_model("dmcnet34", num_classes=10, in_chans=1, width=8)
    before = m3_weight_size(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DynamicMaskConv):
                m.conv.weight.mul_(100)  # the dilated convolution is not M3's
                for p in m.cond.parameters():
                    p.mul_(0.1)
    assert m3_weight_size(net) == pytest.approx(before / 10, rel=1e-5)
    with pytest.raises(ValueError, match="no D_M_Conv"):
        m3_weight_size(create_model("dmcnet34", num_classes=10, width=8, mask="mask1"))


def test_conditional_masks_are_drawn_opaque_with_the_garments_outline():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dmcbook.inside.dmcnet import plot_conditional_masks
    images = torch.zeros(2, 1, 8, 8)
    images[:, :, 2:6, 2:6] = 0.8
    fig = plot_conditional_masks({"stage": torch.rand(2, 1, 8, 8)}, images)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    # opaque, so that a panel's colours are its colour bar's; the outline is a contour set
    assert all(ax.images[0].get_alpha() is None and ax.collections for ax in panels)
    plt.close(fig)
