"""bf16 on the CPU with dilated convolutions (DMCNet's D_M_Conv): on torch 2.14-2.15 with oneDNN,
a dilated convolution in channels-last format gets a non-finite weight gradient under bf16
autocast, so a full-width DMCNet-34 diverged at its second step. The engine trains a model
holding such a convolution in fp32 under CPU bf16, and says so in the history; the package's
own dilated convolutions are Float32Conv2d, which compute in fp32 inside a bf16 model."""
from types import SimpleNamespace

import torch
from torch import nn

from dmcbook.train import Trainer, cpu_bf16_fault, get_recipe


class DilatedNet(nn.Module):
    """21 channels and dilation 2: the smallest shape in which the fault showed."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(21, 21, 3, padding=2, dilation=2, bias=False), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(21, 10))

    def forward(self, x):
        return self.body(x)


def test_a_dilated_model_trains_to_finite_weights_under_cpu_bf16():
    torch.manual_seed(0)
    x, y = torch.randn(16, 21, 32, 32), torch.randint(0, 10, (16,))  # the shape the fault showed at
    data = SimpleNamespace(name="random images", train_loader=[(x, y)] * 3, test_loader=[(x, y)],
                           describe=lambda: "3 random batches")
    model = DilatedNet()
    history = Trainer(model, data, get_recipe("smoke", batch_size=16, lr=0.01), device="cpu",
                      precision="bf16", progress=False).fit()
    assert history["status"] == "finished"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history["engine"]["precision"] == "fp32" and "dilated" in history["engine"]["precision_note"]


def test_bf16_stays_on_where_the_fault_cannot_arise():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3))
    dilated = nn.Sequential(nn.Conv2d(3, 8, 3, dilation=2))
    assert not cpu_bf16_fault(plain, torch.device("cpu"), torch.bfloat16)
    assert not cpu_bf16_fault(dilated, torch.device("cpu"), None)            # fp32
    assert not cpu_bf16_fault(dilated, torch.device("cuda"), torch.bfloat16)  # cuDNN, not oneDNN


def test_the_benchmark_trains_full_width_dmcnet_in_the_engines_layout():
    # Its bare loop used to train DMCNet-18 at width 64 in channels-last bf16 first, leaving NaN
    # weights that the engine's timing then refused as a divergence.
    from dmcbook.profile import benchmark
    rows = benchmark(["dmcnet18"], baseline="resnet18", input_size=(3, 32, 32), batch_size=4, steps=1,
                     rounds=1, device="cpu", width=64)
    assert [r["model"] for r in rows] == ["resnet18", "dmcnet18"]
    assert all(r["fp32 train img/s"] > 0 and r["engine img/s"] > 0 for r in rows)


def test_a_float32_conv_keeps_the_dilated_gradient_finite_and_the_model_in_bf16():
    from dmcbook.models.common import Float32Conv2d

    def train(conv):
        torch.manual_seed(0)
        net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(21, 10))
        net = net.to(memory_format=torch.channels_last)
        x = torch.randn(16, 21, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,))
        with torch.autocast("cpu", torch.bfloat16):
            nn.functional.cross_entropy(net(x), y).backward()
        return net, conv.weight.grad
    plain_net, plain = train(nn.Conv2d(21, 21, 3, padding=2, dilation=2, bias=False))
    guarded_net, guarded = train(Float32Conv2d(21, 21, 3, padding=2, dilation=2, bias=False))
    assert torch.isfinite(guarded).all()
    assert cpu_bf16_fault(plain_net, torch.device("cpu"), torch.bfloat16)
    assert not cpu_bf16_fault(guarded_net, torch.device("cpu"), torch.bfloat16)


def test_dmcnet_trains_in_bf16_with_its_dilated_convs_in_fp32():
    import dmcbook
    from dmcbook.models.dmcnet import DynamicMaskConv
    net = dmcbook.create_model("dmcnet34", 10, 1, "cifar", width=16)
    assert not cpu_bf16_fault(net, torch.device("cpu"), torch.bfloat16)
    block = next(m for m in net.modules() if isinstance(m, DynamicMaskConv)).train()
    x = torch.randn(2, block.conv.in_channels, 8, 8)
    masks = block.draw_masks(x)
    with torch.autocast("cpu", torch.bfloat16):
        under_autocast = block.forward_parts(x, *masks)["x_ke"]
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, block.forward_parts(x, *masks)["x_ke"])
