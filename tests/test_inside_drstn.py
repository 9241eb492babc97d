"""The chapter-4 helpers in dmcbook.inside.drstn: the before/after picture, the per-module
transfer table and the offline check for Table 1's weights."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dmcbook import create_model, viz  # noqa: E402
from dmcbook.inside.drstn import gate_weight_size, plot_shrinkage, table1_weights_cached, threshold_statistics, transfer_table  # noqa: E402
from dmcbook.transfer import drstn_from_resnet18  # noqa: E402


def test_shrinkage_plot_fits_the_page_shares_one_centred_scale_and_masks_the_zeros():
    torch.manual_seed(0)
    stats = threshold_statistics(create_model("drstn_v5", in_chans=1, width=8), torch.randn(1, 1, 28, 28),
                                 keep_maps=True)
    before, after = stats[0]["before"][0], stats[0]["after"][0]
    fig = plot_shrinkage(before, after, range(4))
    assert viz.fits_page(fig)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 8 and len({im.get_clim() for im in images}) == 1
    low, high = images[0].get_clim()
    assert low == -high == -float(before[:4].abs().max())
    masked = np.ma.getmaskarray(images[4].get_array())  # the lower row, first channel
    assert masked.sum() == int((after[0] == 0).sum()) > 0
    assert len(fig.axes) == 9  # eight panels and one colour bar


def test_transfer_table_groups_tensors_by_module_and_leaves_out_the_copied():
    _, moved = drstn_from_resnet18("drstn_v5", create_model("resnet18", width=8), width=8, stem="cifar")
    rows = transfer_table(moved)
    assert all(row["action"] != "copied" for row in rows)
    assert sum(row["tensors"] for row in rows) == len(moved.rows()) - len(moved.copied)
    thresholds = [r for r in rows if r["module"] == "layers.*.*.soft_threshold.fc1" and r["action"] == "new"]
    assert thresholds == [{"action": "new", "module": "layers.*.*.soft_threshold.fc1", "tensors": 6,
                           "why": "not in the source"}]


def test_table1_weights_are_looked_up_in_the_cache_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not table1_weights_cached()
    from torchvision.models import get_model_weights
    (tmp_path / "checkpoints").mkdir()
    for name in ("squeezenet1_1", "alexnet", "vgg16", "resnet18"):
        url = get_model_weights(name).IMAGENET1K_V1.url
        (tmp_path / "checkpoints" / url.rsplit("/", 1)[1]).write_bytes(b"")
    assert table1_weights_cached()


def test_gate_weight_size_reads_only_the_threshold_networks():
    net = create_model("drstn_v3", in_chans=1, width=8)
    before = gate_weight_size(net)
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.mul_(10 if ".soft_threshold.fc" in name and name.endswith("weight") else 3)
    assert gate_weight_size(net) == pytest.approx(10 * before, rel=1e-5)
    with pytest.raises(ValueError, match="no SoftThreshold"):
        gate_weight_size(create_model("resnet18", width=8))
