"""Channels-last on the CPU in fp32 with narrow strided 1x1 convolutions (a ResNet's first
shortcut at width 4): with torch 2.14's oneDNN on an AVX2 CPU, their weight gradient crashes the
process. The engine trains a model holding one in NCHW, and says so in the history."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import dmcbook
from dmcbook.models.common import Float32Conv2d
from dmcbook.train import Trainer, cpu_channels_last_fault, get_recipe

# One training step of a lone convolution (in channels, stride) in channels-last fp32.
STEP = """
import sys, torch
channels, stride = int(sys.argv[1]), int(sys.argv[2])
conv = torch.nn.Conv2d(channels, 8, 1, stride=stride, bias=False).to(memory_format=torch.channels_last)
x = torch.randn(32, channels, 32, 32).contiguous(memory_format=torch.channels_last)
for _ in range(3):
    conv(x).sum().backward()
"""
SHAPES = [(1, 2), (2, 2), (4, 2), (7, 2), (8, 2), (4, 1)]


def test_every_convolution_that_crashes_here_is_one_the_rule_keeps_in_nchw():
    runs = {shape: subprocess.Popen([sys.executable, "-c", STEP, *map(str, shape)], env={"OMP_NUM_THREADS": "1"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for shape in SHAPES}
    crashed = {shape for shape, run in runs.items() if run.wait(timeout=300) != 0}
    if not crashed:
        pytest.skip("this CPU and torch train every shape in channels-last fp32")
    for shape in crashed:
        channels, stride = shape
        conv = nn.Conv2d(channels, 8, 1, stride=stride, bias=False)
        assert cpu_channels_last_fault(conv, torch.device("cpu"), None), f"{shape} crashed outside the rule"


def test_a_narrow_resnet_trains_in_nchw_under_cpu_fp32():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    data = SimpleNamespace(name="random images", train_loader=[(x, y)] * 2, test_loader=[(x, y)],
                           describe=lambda: "2 random batches")
    model = dmcbook.create_model("resnet18", 10, 3, "cifar", width=4)
    history = Trainer(model, data, get_recipe("smoke", batch_size=16, lr=0.01), device="cpu",
                      precision="fp32", progress=False).fit()
    assert history["status"] == "finished"
    engine = history["engine"]
    assert not engine["channels_last"] and "strided 1x1" in engine["layout_note"]
    assert all(p.is_contiguous() for p in model.parameters())


def test_channels_last_stays_on_where_the_fault_cannot_arise():
    cpu = torch.device("cpu")
    narrow = dmcbook.create_model("resnet18", 10, 3, "cifar", width=4)
    assert cpu_channels_last_fault(narrow, cpu, None)
    assert not cpu_channels_last_fault(dmcbook.create_model("resnet18", 10, 3, "cifar", width=8), cpu, None)
    assert not cpu_channels_last_fault(narrow, cpu, torch.bfloat16)                 # computes in bf16
    assert not cpu_channels_last_fault(narrow, torch.device("cuda"), None)          # cuDNN, not oneDNN
    assert not cpu_channels_last_fault(nn.Conv2d(4, 8, 3, stride=2), cpu, None)      # 3x3
    assert not cpu_channels_last_fault(nn.Conv2d(4, 8, 1), cpu, None)                # stride 1
    assert not cpu_channels_last_fault(nn.Conv2d(16, 16, 1, stride=2, groups=2), cpu, None)  # 8 per group
    assert cpu_channels_last_fault(nn.Conv2d(16, 16, 1, stride=2, groups=4), cpu, None)      # 4 per group
    assert cpu_channels_last_fault(Float32Conv2d(4, 8, 1, stride=2), cpu, torch.bfloat16)  # fp32 inside bf16
