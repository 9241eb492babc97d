"""Costs: parameters, FLOPs and multiply-accumulates, and a side-by-side speed benchmark.

The papers quote thop's counts as "FLOPs"; thop counts multiply-accumulates (MACs). We count
with ``torch.utils.flop_counter.FlopCounterMode`` (a FLOP is one multiply or one add, so
FLOPs = 2 x MACs for convolutions and matrix products) and report both, named as such.
"""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models.registry import create_model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, input_size=(3, 224, 224)) -> dict:
    """FLOPs and MACs of one forward pass of a single image in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    flops = counter.get_total_flops()
    return dict(flops=flops, macs=flops // 2)


def cost_row(label: str, model: nn.Module, input_size, paper_params_m=None, paper_gmacs=None) -> dict:
    """One row of a costs table: ours beside the paper's, with the difference in percent."""
    params = count_params(model) / 1e6
    gmacs = count_flops(model, input_size)["macs"] / 1e9
    row = {"model": label, "params (M)": round(params, 2), "paper params (M)": paper_params_m,
           "Δ params %": None, "GMACs": round(gmacs, 2), "paper G\"FLOPs\" (MACs)": paper_gmacs, "Δ MACs %": None}
    if paper_params_m:
        row["Δ params %"] = round(100 * (params - paper_params_m) / paper_params_m, 1)
    if paper_gmacs:
        row["Δ MACs %"] = round(100 * (gmacs - paper_gmacs) / paper_gmacs, 1)
    return row


def _images_per_second(model, x, y, train: bool, steps: int) -> float:
    device = x.device
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if train else None
    model.train(train)

    def step():
        with torch.set_grad_enabled(train), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
            if train:
                loss = nn.functional.cross_entropy(out.float(), y)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    for _ in range(2):  # warm-up: allocator, cuDNN autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - start)


def benchmark(names, baseline: str = "resnet34", input_size=(3, 32, 32), batch_size: int = 32,
              steps: int = 5, num_classes: int = 10, stem: str = "cifar", device=None, rounds: int = 2,
              **options) -> list[dict]:
    """Training and inference images per second of each model and of ``baseline``, measured in
    alternating rounds in one process so that both see the same machine. ``options`` (such as
    ``width``) apply to every model, the baseline included, so the comparison stays like for like. Each model's time per
    image is given as a ratio to the baseline's, beside the ratio of their MACs: a time ratio
    well above the MACs ratio means the model costs more than its FLOPs say."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [baseline] + [n for n in names if n != baseline]
    x = torch.randn(batch_size, *input_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    models = {}
    for name in names:
        model = create_model(name, num_classes, input_size[0], stem, **options)
        models[name] = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    speed = {n: {"train": [], "infer": []} for n in names}
    for _ in range(rounds):
        for name, model in models.items():
            speed[name]["train"].append(_images_per_second(model, x, y, True, steps))
            speed[name]["infer"].append(_images_per_second(model, x, y, False, steps))
    base = {k: max(v) for k, v in speed[baseline].items()}
    base_macs = count_flops(models[baseline], input_size)["macs"]
    rows = []
    for name in names:
        train, infer = max(speed[name]["train"]), max(speed[name]["infer"])
        macs = count_flops(models[name], input_size)["macs"]
        rows.append({"model": name, "train img/s": round(train, 1), "infer img/s": round(infer, 1),
                     "train time ratio": round(base["train"] / train, 3),
                     "infer time ratio": round(base["infer"] / infer, 3),
                     "MACs ratio": round(macs / base_macs, 3)})
    return rows
