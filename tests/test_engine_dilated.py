"""bf16 on the CPU with dilated convolutions (DMCNet's D_M_Conv): on torch 2.15 with oneDNN, a
dilated convolution in channels-last format gets a non-finite weight gradient under bf16
autocast, so a full-width DMCNet-34 diverged at its second step. The engine trains such models
in contiguous format where this torch shows the fault."""
import torch
from torch import nn

from dmcbook.data import get_data
from dmcbook.train import Trainer, channels_last_is_safe, get_recipe


class DilatedNet(nn.Module):
    """21 channels and dilation 2: the smallest shape in which the fault showed."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 21, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(21, 21, 3, padding=2, dilation=2, bias=False), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(21, 10))

    def forward(self, x):
        return self.body(x)


def test_a_dilated_model_trains_to_finite_weights_under_cpu_bf16():
    torch.manual_seed(0)
    data = get_data("digits", batch_size=16, augment="none", train_subset=64, test_subset=32)
    model = DilatedNet()
    history = Trainer(model, data, get_recipe("smoke", batch_size=16, train_subset=64, test_subset=32),
                      device="cpu", precision="bf16", progress=False).fit()
    assert history["status"] == "finished"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history["engine"]["precision"] == "bf16-autocast"


def test_channels_last_stays_on_where_the_fault_cannot_arise():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3))
    dilated = nn.Sequential(nn.Conv2d(3, 8, 3, dilation=2))
    assert channels_last_is_safe(plain, torch.device("cpu"), torch.bfloat16)
    assert channels_last_is_safe(dilated, torch.device("cpu"), None)            # fp32
    assert channels_last_is_safe(dilated, torch.device("cuda"), torch.bfloat16)  # cuDNN, not oneDNN
