"""Where DMCNet-34's training time goes: torch.profiler over training steps at width 16,
1x28x28 images, batch 128, on this machine's CPU, beside ResNet-34 at the same width.

Run from the repository root: ``python results/performance/dmcnet_profile.py``. Writes
``dmcnet34_profile.json`` here: per model and precision the step time, the forward time by
module class (inclusive: a block's time contains its branches'), the top operators of a whole
step (forward, backward and SGD) by self time, and the convolutions by weight shape.
"""
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import dmcbook
from dmcbook.profile import machine
from dmcbook.train import seed_everything

BATCH, SHAPE, WIDTH, STEPS = 128, (1, 28, 28), 16, 3


def label_modules(model):
    """Wrap every module's forward in a profiler range named after its class."""
    def enter(module, inputs):
        module._range = record_function(f"module::{type(module).__name__}")
        module._range.__enter__()

    def leave(module, inputs, output):
        module._range.__exit__(None, None, None)
    for module in model.modules():
        if module is not model:
            module.register_forward_pre_hook(enter)
            module.register_forward_hook(leave)


def profile_model(name, dtype):
    seed_everything(0)
    model = dmcbook.create_model(name, 10, SHAPE[0], "cifar", width=WIDTH).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, *SHAPE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    step_ms = 1000 * (time.perf_counter() - start) / STEPS
    label_modules(model)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(STEPS):
            step()
    events = prof.key_averages()
    per_step = lambda us: round(us / 1000 / STEPS, 2)  # noqa: E731
    modules = sorted(({"module": e.key.removeprefix("module::"), "calls per step": e.count // STEPS,
                       "forward ms per step (inclusive)": per_step(e.cpu_time_total)}
                      for e in events if e.key.startswith("module::")),
                     key=lambda r: -r["forward ms per step (inclusive)"])
    ops = sorted(({"operator": e.key, "calls per step": e.count // STEPS,
                   "self ms per step": per_step(e.self_cpu_time_total)}
                  for e in events if not e.key.startswith("module::") and not e.key.startswith("ProfilerStep")),
                 key=lambda r: -r["self ms per step"])[:15]
    convolutions = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward"):
            image, weight = e.input_shapes[:2] if e.key == "aten::mkldnn_convolution" else e.input_shapes[1:3]
            row = convolutions.setdefault(str(weight), {"weight (out, in, k, k)": weight, "input": image,
                                                        "calls per step": 0, "forward + backward ms": 0.0})
            row["calls per step"] += e.count // STEPS if e.key == "aten::mkldnn_convolution" else 0
            row["forward + backward ms"] += e.self_cpu_time_total / 1000 / STEPS
    convolutions = sorted(convolutions.values(), key=lambda r: -r["forward + backward ms"])
    for row in convolutions:
        row["forward + backward ms"] = round(row["forward + backward ms"], 2)
    return {"model": name, "precision": "bf16-autocast" if dtype else "fp32", "step ms (unprofiled)": round(step_ms, 1),
            "images/s": round(BATCH / step_ms * 1000), "modules": modules, "operators": ops,
            "convolutions": convolutions[:15]}


if __name__ == "__main__":
    results = dict(machine=machine(), batch=BATCH, input=list(SHAPE), width=WIDTH, steps=STEPS, runs=[])
    for dtype in (None, torch.bfloat16):
        for name in ("dmcnet34", "resnet34"):
            results["runs"].append(profile_model(name, dtype))
            print(name, results["runs"][-1]["precision"], results["runs"][-1]["step ms (unprofiled)"], "ms/step",
                  flush=True)
    results["machine_after"] = machine()
    Path(__file__).with_name("dmcnet34_profile.json").write_text(json.dumps(results, indent=1))
