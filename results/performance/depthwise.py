"""Why ``dmcbook.models.common.DepthwiseConv2d`` computes in fp32 under a CPU bf16 autocast.

Two measurements on this machine's CPU, one torch thread, channels-last tensors, batch 128:
1. every depthwise convolution shape of GDFRNet at width 16 on 1x28x28 images (the FRM's
   stride-2 3x3 and the branch's hand-back), one forward and backward (input and weight
   gradients), in bf16 autocast and in fp32;
2. a whole training step (forward, backward, SGD) of GDFRNet (r = 8) as the package builds it
   (depthwise convs in fp32) and with those convs turned back into plain ``nn.Conv2d`` (so
   autocast runs them in bf16), beside ResNet-34, with the MACs of both networks.

Run from the repository root: ``python results/performance/depthwise.py``. Writes
``depthwise.json`` here.
"""
import json
import time
from pathlib import Path

import torch
from torch import nn

import dmcbook
from dmcbook.models.common import DepthwiseConv2d
from dmcbook.profile import count_flops, machine
from dmcbook.train import seed_everything

BATCH, SHAPE, WIDTH, STEPS = 128, (1, 28, 28), 16, 4


def seconds(step, repeats=STEPS):
    step()  # warm-up: oneDNN picks its kernels at the first call
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def conv_ms(channels, size, stride, bf16):
    seed_everything(0)
    conv = nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False).to(
        memory_format=torch.channels_last)
    x = torch.randn(BATCH, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = conv(x)
        out.float().sum().backward()
    return round(1000 * seconds(step), 2)


def step_ms(name, plain_depthwise=False, **options):
    seed_everything(0)
    model = dmcbook.create_model(name, 10, SHAPE[0], "cifar", width=WIDTH, **options)
    if plain_depthwise:  # the same weights in plain convolutions: autocast then runs them in bf16
        for module in model.modules():
            if isinstance(module, DepthwiseConv2d):
                module.__class__ = nn.Conv2d
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, *SHAPE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return round(1000 * seconds(step), 1)


def depthwise_shapes():
    """(channels, input size, stride) of every depthwise conv in GDFRNet at WIDTH, with counts."""
    model = dmcbook.create_model("gdfrnet", 10, SHAPE[0], "cifar", width=WIDTH, r=8)
    seen = {}

    def record(module, inputs, output):
        key = (module.in_channels, inputs[0].shape[-1], module.stride[0])
        seen[key] = seen.get(key, 0) + 1
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    model.eval()(torch.zeros(1, *SHAPE))
    for hook in hooks:
        hook.remove()
    return seen


if __name__ == "__main__":
    torch.set_num_threads(1)
    results = dict(machine=machine(), batch=BATCH, input=list(SHAPE), width=WIDTH, steps=STEPS, convolutions=[])
    for (channels, size, stride), count in sorted(depthwise_shapes().items()):
        bf16, fp32 = conv_ms(channels, size, stride, True), conv_ms(channels, size, stride, False)
        results["convolutions"].append({"channels": channels, "input": f"{size}x{size}", "stride": stride,
                                        "in GDFRNet": count, "bf16 ms": bf16, "fp32 ms": fp32,
                                        "bf16 / fp32": round(bf16 / fp32, 1)})
        print(results["convolutions"][-1], flush=True)
    results["steps ms"] = {
        "gdfrnet (depthwise in fp32)": step_ms("gdfrnet", r=8),
        "gdfrnet (depthwise in bf16)": step_ms("gdfrnet", plain_depthwise=True, r=8),
        "resnet34": step_ms("resnet34"),
    }
    results["MMACs"] = {name: round(count_flops(dmcbook.create_model(name, 10, SHAPE[0], "cifar", width=WIDTH, **options),
                                                 SHAPE)["macs"] / 1e6, 1)
                        for name, options in (("gdfrnet", dict(r=8)), ("resnet34", {}))}
    print(results["steps ms"], results["MMACs"])
    results["machine_after"] = machine()
    Path(__file__).with_name("depthwise.json").write_text(json.dumps(results, indent=1))
