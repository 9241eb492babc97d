"""The DMCNet chapter's helpers in dmcbook.inside.dmcnet: the alternative readings' counts and
the mask figure's size."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dmcbook import create_model, viz  # noqa: E402
from dmcbook.inside.dmcnet import alternative_counts, plot_dynamic_masks  # noqa: E402
from dmcbook.models.dmcnet import AE, ABLATIONS, DynamicMaskConv  # noqa: E402
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


def test_the_mask_figure_fits_the_page():
    torch.manual_seed(0)
    fig = plot_dynamic_masks(DynamicMaskConv(3, 3, m=0.3), torch.rand(1, 3, 24, 24), mask="mask8")
    try:
        assert viz.fits_page(fig)
        assert len(fig.axes) >= 6 + 3  # six panels, colour bars for the input, M3 and X_ke/X_out
    finally:
        plt.close(fig)
