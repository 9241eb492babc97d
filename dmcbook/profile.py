"""Costs: parameters, FLOPs and multiply-accumulates, and side-by-side speed benchmarks (models
in each precision, the engine against a bare loop, the augmentation paths).

The papers quote thop's counts as "FLOPs"; thop counts multiply-accumulates (MACs). We count
with ``torch.utils.flop_counter.FlopCounterMode`` (a FLOP is one multiply or one add, so
FLOPs = 2 x MACs for convolutions and matrix products) and report both, named as such.
"""
from __future__ import annotations

import os
import platform
import time
from types import SimpleNamespace

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
        row["Δ params %"] = percent_off(params, paper_params_m)
    if paper_gmacs:
        row["Δ MACs %"] = percent_off(gmacs, paper_gmacs)
    return row


def percent_off(ours: float, theirs: float) -> float:
    """How far ``ours`` lies from the paper's ``theirs``, in percent of theirs, to two decimals
    (the tables print two), from the unrounded counts; never -0.0."""
    return round(100 * (ours - theirs) / theirs, 2) + 0.0


def _timed(step, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after two warm-up calls (allocator, oneDNN/cuDNN autotuning)."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _bare_images_per_second(model, x, y, train: bool, steps: int, dtype) -> float:
    """A bare training (or inference) loop: autocast, forward, loss, backward, SGD step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4) if train else None
    model.train(train)

    def step():
        with torch.set_grad_enabled(train), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
            if train:
                loss = nn.functional.cross_entropy(out.float(), y)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return len(x) / _timed(step, steps, x.device)


def _engine_images_per_second(model, x, y, steps: int, precision: str) -> float:
    """The same steps through :class:`dmcbook.train.Trainer` (its loss and accuracy tracking,
    schedule, divergence check); its second epoch is timed, the first warms up."""
    from .train import Recipe, Trainer
    data = SimpleNamespace(name="random images", train_loader=[(x, y)] * steps, test_loader=[(x[:8], y[:8])],
                           describe=lambda: f"{steps} random batches of {tuple(x.shape)}")
    recipe = Recipe("bench", epochs=2, batch_size=len(x), lr=1e-3, schedule="constant")
    history = Trainer(model, data, recipe, device=x.device, progress=False, precision=precision).fit()
    return history["epochs"][-1]["images_per_sec"]


def machine() -> dict:
    """What ran a benchmark: CPU model and cores, GPU, library versions and the load average
    (this project's machine is shared: the load says how much of it the benchmark had)."""
    from .train import _cpuinfo, cpu_supports_bf16
    cpu = _cpuinfo()
    info = dict(cpu=cpu.get("model name", platform.processor() or platform.machine()), cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), native_bf16=cpu_supports_bf16(),
                load_average_1_5_15=[round(v, 2) for v in os.getloadavg()], torch=torch.__version__,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def benchmark(names, baseline: str = "resnet34", input_size=(3, 32, 32), batch_size: int = 128,
              steps: int = 10, num_classes: int = 10, stem: str = "cifar", device=None, rounds: int = 2,
              **options) -> list[dict]:
    """Training speed of each model and of ``baseline`` in fp32 and in the fast precision (bf16
    autocast on CPUs with native bf16, AMP on GPUs), inference speed, and the engine's speed
    against a bare loop, measured in alternating rounds in one process so that all see the same
    machine (the best round counts). ``options`` (such as ``width``) apply to every model, the
    baseline included. Each model's training time per image is given as a ratio to the
    baseline's beside the ratio of their MACs: a time ratio well above the MACs ratio means the
    model costs more than its FLOPs say. Activations are channels-last, as the engine runs them;
    a model that would meet :func:`dmcbook.train.cpu_bf16_fault` is timed in fp32 only, and one
    that would meet :func:`dmcbook.train.cpu_channels_last_fault` in NCHW, as the engine trains it."""
    from .train import cpu_bf16_fault, cpu_channels_last_fault, pick_device, precision_name, select_precision
    device = pick_device(device)
    fast = select_precision(device, "auto")
    precisions = {"fp32": None} if fast is None else {"fp32": None, precision_name(fast): fast}
    names = [baseline] + [n for n in names if n != baseline]
    images = torch.randn(batch_size, *input_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    models, inputs = {}, {}
    for name in names:
        model = create_model(name, num_classes, input_size[0], stem, **options)
        layout = torch.contiguous_format if cpu_channels_last_fault(model, device, None) else torch.channels_last
        models[name], inputs[name] = model.to(device, memory_format=layout), images.contiguous(memory_format=layout)
    usable = {name: {label: dtype for label, dtype in precisions.items()
                     if dtype is None or not cpu_bf16_fault(model, device, dtype)} for name, model in models.items()}
    speed = {name: {} for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            x = inputs[name]
            for label, dtype in usable[name].items():
                speed[name].setdefault(label, []).append(_bare_images_per_second(model, x, y, True, steps, dtype))
            infer = fast if fast in usable[name].values() else None
            speed[name].setdefault("infer", []).append(_bare_images_per_second(model, x, y, False, steps, infer))
            speed[name].setdefault("engine", []).append(_engine_images_per_second(model, x, y, steps, "auto"))
    best = {name: {k: max(v) for k, v in runs.items()} for name, runs in speed.items()}
    fast_label = list(precisions)[-1]
    # what the engine trains each model in: the fast precision where it is usable, else fp32
    trained = {name: fast_label if fast_label in best[name] else "fp32" for name in names}
    macs = {name: count_flops(model, input_size)["macs"] for name, model in models.items()}
    rows = []
    for name in names:
        b, own = best[name], best[name][trained[name]]
        row = {"model": name, "params (M)": round(count_params(models[name]) / 1e6, 3),
               "MMACs": round(macs[name] / 1e6, 1), "fp32 train img/s": round(b["fp32"], 1)}
        if fast is not None:
            row[f"{fast_label} train img/s"] = round(b[fast_label], 1) if fast_label in b else None
            row["speed-up"] = round(b[fast_label] / b["fp32"], 2) if fast_label in b else None
        timed = speed[name][trained[name]]  # the rounds of the bare loop the ratio is read from
        row.update({"engine precision": trained[name], "infer img/s": round(b["infer"], 1),
                    "engine img/s": round(b["engine"], 1), "engine / bare": round(b["engine"] / own, 3),
                    "round spread": round(max(timed) / min(timed) - 1, 3),
                    "train time ratio": round(best[baseline][trained[baseline]] / own, 3),
                    "MACs ratio": round(macs[name] / macs[baseline], 3)})
        rows.append(row)
    return rows


def timing_noise(rows: list[dict]) -> float:
    """How far two timings of one network differ on this machine, from a :func:`benchmark`
    table, as a fraction: the largest gap between a network's engine and bare-loop speeds (whose
    work is nearly the same) or between its fastest and slowest round. A time ratio between
    networks that differs from their MACs ratio by less than this is not resolved by the
    benchmark."""
    return max(max(abs(1 - row["engine / bare"]), row.get("round spread", 0.0)) for row in rows)


def time_beyond_macs(rows: list[dict], model: str) -> str:
    """Whether a :func:`benchmark` table resolves ``model`` costing more (or less) time than its
    MACs, in words for a page: the gap between its time and MACs ratios against
    :func:`timing_noise`."""
    row = next((r for r in rows if r["model"] == model), None)
    if row is None:
        raise ValueError(f"{model!r} is not in the benchmark; it has {[r['model'] for r in rows]}")
    excess, noise = row["train time ratio"] - row["MACs ratio"], timing_noise(rows)
    side = "above" if excess > 0 else "below"
    if abs(excess) <= noise:
        reading = (f"inside the {noise:.2f} by which one network's two timings differ here, so this "
                   "benchmark does not resolve a cost beyond its MACs")
    else:
        reading = (f"outside the {noise:.2f} by which one network's two timings differ here: it costs "
                   f"{'more' if excess > 0 else 'less'} time than its MACs say")
    return f"{model}'s time ratio lies {abs(excess):.2f} {side} its MACs ratio, {reading}"


def machine_line(info: dict | None = None) -> str:
    """:func:`machine` in one line, printed under a benchmark's table: its speeds are this
    machine's (a CPU without native bf16 trains in fp32 only, on another scale of time), at
    this load and, where recorded, on this date."""
    info = info or machine()
    bf16 = "native bf16" if info["native_bf16"] else "no native bf16, so fp32 only"
    where = f"{info['gpu']} (GPU)" if "gpu" in info else f"{info['cpu']}, {info['cores']} cores ({bf16})"
    loads = info["load_average_1_5_15"]
    load = ", ".join(str(v) for v in loads) + (" (1, 5, 15 min)" if len(loads) == 3 else "")
    when = f", {info['date']}" if "date" in info else ""
    threads = f"{info['torch_threads']} torch thread" + ("s" if info["torch_threads"] != 1 else "")
    return f"measured on {where}, {threads}, load average {load}{when}"


def augmentation_throughput(dataset: str = "cifar10", augment: str = "paper", batch_size: int = 256,
                            images: int = 2048, device=None) -> dict:
    """Images per second of a data set's training augmentation through PIL, one image at a time
    in one process (what one DataLoader worker does), and batched on ``device`` with
    :class:`dmcbook.augment.BatchAugment`, on random uint8 images of the data set's shape."""
    from torchvision.transforms import functional as TF

    from .augment import BatchAugment
    from .data import SPECS, build_transforms
    from .train import pick_device
    spec, device = SPECS[dataset], pick_device(device)
    shape = (spec.in_chans, spec.image_size, spec.image_size)
    batch = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8)
    pil_images = [TF.to_pil_image(im) for im in batch]
    transform = build_transforms(spec, spec.image_size, spec.in_chans, augment, True)
    pil_time = _timed(lambda: [transform(im) for im in pil_images], max(images // batch_size, 1), torch.device("cpu"))
    batched = BatchAugment(spec.image_size, spec.mean, spec.std, augment, spec.hflip, spec.autoaugment).to(device)
    on_device = batch.to(device)
    batch_time = _timed(lambda: batched(on_device), max(images // batch_size, 1), device)
    return {"data set": dataset, "augment": augment, "device": str(device),
            "PIL img/s (one process)": round(batch_size / pil_time), "batched img/s": round(batch_size / batch_time)}
