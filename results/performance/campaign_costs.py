"""What one run of each configuration of the converged campaign costs, as a ratio to ResNet-18.

For every configuration of ``dmcbook.campaign.PLAN`` trained on Fashion-MNIST, the time of a
training step (forward, backward, SGD; batch 128, 1x28x28, width 16, channels-last, in the
precision the engine gives that model on this CPU) over ResNet-18's, measured in alternating
rounds in one process with one torch thread, as the campaign's workers run, in processor time
and with nothing else running: beside other trainings the ratios would also count their
competition for caches and memory. The campaign multiplies a ratio by the CPU time of the
finished ResNet-18 runs to say what a configuration that has not run yet will cost
(``dmcbook.campaign.estimate_minutes``), and chapter 05 draws its speed axis from these ratios
(``dmcbook.campaign.step_time_ratios``). Each configuration keeps its rounds' ratios, so a reader
sees how far one measurement strays. The augmentation of a training batch (the converge recipe's,
as the engine runs it: on the uint8 images, one batch at a time) is timed against the same step,
because every run pays it whatever its network, which narrows the ratios of whole epochs.

Run from the repository root: ``python results/performance/campaign_costs.py``. Writes
``campaign_costs.json`` here. Name configurations (``... campaign_costs.py resneskt50``) to
re-measure only those after their network's code changed: the file keeps the other rows and the
augmentation from the last full measurement, and stamps each re-measured row with its date.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import dmcbook
from dmcbook import campaign
from dmcbook.augment import BatchAugment
from dmcbook.data import SPECS
from dmcbook.profile import machine
from dmcbook.train import cpu_bf16_fault, get_recipe, precision_name, seed_everything, select_precision

BATCH, SHAPE, STEPS, ROUNDS, REFERENCE = 128, (1, 28, 28), 3, 5, "resnet18"


def training_step(spec, compiled=False):
    """A function that runs one training step of ``spec``'s network (through ``torch.compile``
    if ``compiled``), and the precision it uses."""
    seed_everything(0)
    model = dmcbook.create_model(spec.model, 10, SHAPE[0], "cifar", width=get_recipe(campaign.RECIPE).width,
                                 **spec.options).to(memory_format=torch.channels_last)
    dtype = select_precision(torch.device("cpu"))
    if cpu_bf16_fault(model, torch.device("cpu"), dtype):
        dtype = None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    net = torch.compile(model) if compiled else model
    x = torch.randn(BATCH, *SHAPE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step()  # warm-up: oneDNN picks its kernels at the first call (and torch.compile compiles)
    return step, precision_name(dtype)


def augmentation_step():
    """A function that augments one training batch of Fashion-MNIST as the campaign's runs do."""
    spec = SPECS[campaign.DATASET]
    augment = BatchAugment(spec.image_size, spec.mean, spec.std, get_recipe(campaign.RECIPE).augment, spec.hflip,
                           spec.autoaugment)
    images = torch.randint(0, 256, (BATCH, *SHAPE), dtype=torch.uint8)
    return lambda: augment(images)


def ratio_rounds(step, reference):
    """``step``'s time over ``reference``'s in ROUNDS alternating rounds (both see the same load)."""
    return [round(seconds(step) / seconds(reference), 3) for _ in range(ROUNDS)]


def seconds(step):
    """Processor seconds per step: what the step costs, not how long it waited for a core on a
    machine that other processes share (wall-clock time moved by up to half with the load)."""
    start = time.process_time()
    for _ in range(STEPS):
        step()
    return (time.process_time() - start) / STEPS


def chosen(argv, known) -> set[str]:
    """The configurations named on the command line (all when none), each checked to be one of
    ``known`` before anything is measured."""
    unknown = sorted(set(argv) - set(known))
    if unknown:
        sys.exit(f"unknown configuration(s) {', '.join(unknown)}; expected some of: {', '.join(known)}")
    return set(argv or known)


def keep_others(path: Path, results: dict, names: set[str], known) -> dict:
    """``results`` if it measured every configuration of ``known``; else the last measurement in
    ``path`` with the rows of ``names`` replaced by the new ones, each stamped with its date."""
    if names == set(known):
        return results
    previous = json.loads(path.read_text())
    fresh = {row["configuration"]: row | {"measured": results["machine"]["date"]}
             for row in results["configurations"]}
    previous["configurations"] = [fresh.pop(row["configuration"], row) for row in previous["configurations"]]
    previous["configurations"] += fresh.values()  # a configuration the last measurement did not have
    return previous


if __name__ == "__main__":
    # calibration and digits runs are measured by their own runs
    measured = [spec for spec in campaign.PLAN if not (spec.recipe or spec.dataset or spec.variant == REFERENCE)]
    known = [spec.variant for spec in measured]
    names = chosen(sys.argv[1:], known)
    torch.set_num_threads(1)
    reference, _ = training_step(campaign.Spec(REFERENCE, REFERENCE))
    results = dict(machine=machine(), batch=BATCH, input=list(SHAPE), steps=STEPS, rounds=ROUNDS,
                   reference=REFERENCE, configurations=[])
    for spec in measured:
        if spec.variant not in names:
            continue
        step, precision = training_step(spec)
        ratios = ratio_rounds(step, reference)
        results["configurations"].append({"configuration": spec.variant, "precision": precision,
                                          "step time ratio": round(statistics.mean(ratios), 2), "rounds": ratios})
        print(results["configurations"][-1], flush=True)
    if names == set(known):
        ratios = ratio_rounds(augmentation_step(), reference)
        results["augmentation"] = {"what": f"one training batch of {BATCH}, {campaign.DATASET}, the converge "
                                           "recipe's augmentation, against the reference's training step",
                                   "ratio": round(statistics.mean(ratios), 3), "rounds": ratios}
        print(results["augmentation"], flush=True)
    results["machine_after"] = machine()
    path = Path(__file__).with_name("campaign_costs.json")
    path.write_text(json.dumps(keep_others(path, results, names, known), indent=1))
