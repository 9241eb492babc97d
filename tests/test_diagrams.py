import matplotlib
import pytest

import dmcbook
from dmcbook import diagrams
from dmcbook.models.dmcnet import MMCF, DynamicMaskConv
from dmcbook.models.gdfrnet import FRM, FRRB
from dmcbook.models.resneskt import ResNeSktBottleneck
from dmcbook.viz import PAGE_WIDTH

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt
    yield
    plt.close("all")


def _text(fig) -> str:
    assert fig.get_size_inches()[0] <= PAGE_WIDTH
    return "\n".join(diagrams.labels(fig))


def test_mmcf_labels_come_from_the_block():
    text = _text(diagrams.draw(MMCF(16, 16)))
    assert "split into 6 | 5 | 5 channels" in text  # Eq. 13's remainder goes to branch 1
    assert "D_M_Conv 3x3, d=2, 5→5" in text and "D_M_Conv 3x3, d=3, 5→5" in text
    assert "Conv 5x5, 5→5" in text and "identity" in text
    other = _text(diagrams.draw(MMCF(16, 30, stride=2, s=0.25, dilations=(3, 5), conditional_mask=False)))
    assert "split into 10 | 10 | 10 channels" in other and "× s = 0.25" in other
    assert "D_M_Conv 3x3, d=5, 10→10" in other and "Conv 3x3/2, 16→30" in other
    assert "masks M1 M2, m=0.1" in other and "M3" not in other.split("masks")[1].split("\n")[0]


def test_dmcnet_block_draws_its_average_pool_shortcut_with_ae():
    model = dmcbook.create_model("dmcnet34", 10, 3, width=8)
    text = _text(diagrams.draw(model.layers[1][0]))
    assert "AvgPool 2x2/2" in text and "AE (Eqs. 20-28), 16 ch" in text
    text = _text(diagrams.draw(model.layers[1][0].downsample[1]))
    assert "Conv1d k=3" in text  # ECA's kernel for 16 channels
    bare = _text(diagrams.draw(DynamicMaskConv(4, 8, kernel_mask=False, channel_mask=False,
                                               conditional_mask=False)))
    assert "M1 off" in bare and "M2 off" in bare and "no M3" in bare and "Conv 3x3, d=2, 4→8" in bare


def test_frrb_and_frm_labels_follow_position_kernel_and_reduction():
    text = _text(diagrams.draw(FRRB(32, 32, r=4, k=6, position="B")))
    assert "FRM at position B" in text and "r=4, ConvT 6x6/2" in text
    text = _text(diagrams.draw(FRM(32, r=8, upsample="bilinear")))
    assert "Up x2 (bilinear)" in text and "Conv 1x1, 32→4" in text  # C/r in the attention squeeze


def test_gdfrnet_network_draws_the_branch_levels_it_has():
    two = _text(diagrams.draw(dmcbook.create_model("gdfrnet", 10, 1, width=8, r=4)))
    assert two.count("FOM (Eqs. 24-29)") == 2 and "LoG 5x5, σ=1" in two and "layer4: 3 × FRRB" in two
    one = _text(diagrams.draw(dmcbook.create_model("gdfrnet", 10, 1, width=8, r=4, branch_depth="B")))
    assert one.count("FOM (Eqs. 24-29)") == 1 and "→ 64×4×4" in one
    plain = _text(diagrams.draw(dmcbook.create_model("gdfrnet", 10, 1, width=8, r=4, variant="net3")))
    assert "FOM" not in plain


def test_resneskt_block_labels_follow_kernels_gem_and_the_spatial_switch():
    block = ResNeSktBottleneck(64, 16, radix=2, gem_p=4.0)
    text = _text(diagrams.draw(block))
    assert "GeM p=4" in text and "V_3x3" in text and "V_5x5" in text and "R=2 splits of 16 ch" in text
    block.ska.branches[1][0].kernel_size = (7, 7)  # a changed kernel shows in the drawing
    assert "V_7x7" in _text(diagrams.draw(block))
    assert "GeM" not in _text(diagrams.draw(ResNeSktBottleneck(64, 16, spatial=False)))


def test_strb_and_networks():
    model = dmcbook.create_model("drstn_v5", 10, 1, width=8, reduction=2)
    text = _text(diagrams.draw(model.layers[1][0]))
    assert "FC 16→8" in text and "y = sign(x) · max(|x| − τ, 0)" in text
    network = _text(diagrams.draw(model))
    assert "layer3" in network and "layer4" not in network and "FC 32→10" in network
    assert "drstn_v5: the whole network" in network  # the registry's name, not the skeleton class


def test_unknown_modules_are_refused():
    with pytest.raises(TypeError, match="no diagram for Linear"):
        diagrams.draw(__import__("torch").nn.Linear(2, 2))
