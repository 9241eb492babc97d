"""The training engine every chapter and the CLI drive.

A :class:`Recipe` holds a paper's optimisation settings; :class:`Trainer` runs it with mixed
precision and channels-last (bf16 on GPUs and on CPUs that compute bf16 natively, fp16 with a
gradient scaler on older GPUs, fp32 elsewhere), every CPU core, a progress bar or one line per
epoch, an atomic checkpoint every epoch, exact resumption, DistributedDataParallel under
torchrun (:mod:`dmcbook.distributed`), and a JSON history that names its run and its engine.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pickle
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .checks import check_choice, is_integer
from .data import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .models.common import Float32Conv2d
from .runs import (CorruptFile, RunFolderError, atomic_write, check_writable, config_differences, has_run,
                   remove_run, run_lock, verify, write_checked)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROGRESS_STYLES = ("bar", "epochs", False)
# How a history's engine precision is asked for.
PRECISION_OPTIONS = {"fp32": "fp32", "bf16-autocast": "bf16", "fp16-autocast": "fp16"}
# CPU flags of native bf16 arithmetic (Intel AMX, AVX512-BF16 on Intel and AMD Zen 4+): there
# oneDNN runs bf16 convolutions about twice as fast as fp32; elsewhere bf16 is emulated and slower.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def _is_number(value) -> bool:
    """A finite int or float (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings. ``width``, ``train_subset`` and ``test_subset`` reduce a budget;
    ``note`` says what a preset cut or chose where its paper is silent."""
    name: str
    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0
    min_lr: float = 0.0
    milestones: tuple = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: str = "basic"
    image_size: int | None = None
    width: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    grad_clip: float | None = None
    # Modules, by their attribute name in a parameter's path (e.g. "soft_threshold"), whose
    # parameters train without weight decay: decay pulls a gate's weights to zero, and a
    # sigmoid of zero is a fixed one half.
    no_decay: tuple = ()
    note: str = ""

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        # Every field is checked here, before a Trainer touches a run folder: torch accepts a
        # negative gamma, decay or momentum, or a negative grad_clip (which flips the gradients),
        # and trains on without a word.
        below_one = "a number from 0 to below 1"
        checks = [
            ("epochs", is_integer(self.epochs) and self.epochs >= 1, "a positive integer"),
            ("batch_size", is_integer(self.batch_size) and self.batch_size >= 1, "a positive integer"),
            ("lr", _is_number(self.lr) and self.lr > 0, "a positive finite number"),
            ("momentum", _is_number(self.momentum) and 0 <= self.momentum < 1, below_one),
            ("weight_decay", _is_number(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("warmup_epochs", _is_number(self.warmup_epochs) and self.warmup_epochs >= 0, "a finite number >= 0"),
            # above lr, the cosine schedule would rise from lr to min_lr
            ("min_lr", _is_number(self.min_lr) and 0 <= self.min_lr <= (self.lr if _is_number(self.lr) else math.inf),
             f"a number from 0 to lr ({self.lr!r})"),
            ("milestones", isinstance(self.milestones, tuple)
             and all(is_integer(m) and m >= 1 for m in self.milestones)
             and list(self.milestones) == sorted(set(self.milestones)),
             "a tuple of increasing positive epochs (e.g. (60, 120, 160))"),
            ("gamma", _is_number(self.gamma) and self.gamma > 0, "a positive finite number"),
            ("label_smoothing", _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1, below_one),
            ("image_size", self.image_size is None or is_integer(self.image_size)
             and MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE,
             f"None or an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels"),
            ("grad_clip", self.grad_clip is None or _is_number(self.grad_clip) and self.grad_clip > 0,
             "None or a positive finite number"),
        ] + [(name, getattr(self, name) is None or is_integer(getattr(self, name)) and getattr(self, name) >= 1,
              "None or a positive integer") for name in ("width", "train_subset", "test_subset")]
        for field_name, valid, expected in checks:
            if not valid:
                raise ValueError(f"recipe {self.name!r}: {field_name} must be {expected}; "
                                 f"got {getattr(self, field_name)!r}")
        if isinstance(self.no_decay, str) or not all(isinstance(n, str) and n for n in self.no_decay):
            raise ValueError(f"recipe {self.name!r}: no_decay must be a tuple of module names "
                             f"(e.g. ('soft_threshold',)); got {self.no_decay!r}")

    def lr_at(self, epoch: float) -> float:
        """The learning rate at a fractional epoch: linear warm-up, then the schedule."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1e-3) / self.warmup_epochs
        if self.schedule == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-8)
            progress = min((epoch - self.warmup_epochs) / span, 1.0)
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        return self.lr


RECIPES = {r.name: r for r in [
    Recipe("dmcnet", epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
           schedule="cosine", warmup_epochs=5, min_lr=1e-6, augment="paper",
           note="DMCNet Sec. 2.1.2 and 2.4.3: SGD 0.1, 5 warm-up epochs, cosine to 1e-6, AutoAugment + RandomErasing"),
    Recipe("gdfrnet", epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
           schedule="multistep", milestones=(60, 120, 160), gamma=0.2, label_smoothing=0.1,
           note="GDFRNet Table 2: SGD 0.1, decay 0.2, label smoothing 0.1, batch 128 (64 for large images); "
                "the decay epochs are not stated: we use 60/120/160"),
    Recipe("resneskt", epochs=100, batch_size=8, lr=1e-3, momentum=0.9, weight_decay=0.0,
           schedule="multistep", milestones=(50,), gamma=0.1, image_size=224,
           note="ResNeSkt Sec. 2.1: SGD, 1e-3 for epochs 1-50, 1e-4 to 100, batch 8, 224x224; "
                "momentum 0.9 is our assumption (the paper states none)"),
    Recipe("drstn", epochs=30, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4,
           schedule="cosine",
           note="DRSTN states no optimiser, schedule or epoch count: SGD 0.01 with cosine over 30 epochs is our choice"),
    Recipe("budget", epochs=4, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
           schedule="cosine", warmup_epochs=0.5, width=16, train_subset=10000,
           note="CPU budget: reduced stage widths, a subset of the training images and few epochs (the fields say how many)"),
    Recipe("converge", epochs=20, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
           schedule="cosine", warmup_epochs=1, label_smoothing=0.1, width=16,
           note="the converged comparisons' shared CPU budget: all 60 000 Fashion-MNIST training images, "
                "stage width 16, 20 epochs, SGD 0.1 with a one-epoch warm-up and cosine decay, label smoothing 0.1, "
                "3-pixel crops and flips; one recipe for every model (dmcbook.campaign)"),
    Recipe("smoke", epochs=1, batch_size=32, lr=0.05, schedule="cosine", width=8, train_subset=128,
           test_subset=128, note="CI smoke test: seconds, not a result"),
]}


# What a recipe field missing from an older history meant.
RECIPE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str, **overrides) -> Recipe:
    """A named preset, with any field replaced by ``overrides``."""
    check_choice("recipe", name, list_recipes())
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown recipe fields {unknown}; expected some of {sorted(fields)}")
    return dataclasses.replace(RECIPES[name], **overrides)


def decay_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """The optimiser's parameter groups: the trainable parameters with the recipe's weight decay,
    and apart, without any, those under a module named in ``recipe.no_decay``. Raises
    ``ValueError`` for a name no parameter lies under (a typo would silently decay everything)."""
    exempt_names = set(recipe.no_decay)
    decayed, exempt, found = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        under = exempt_names.intersection(name.split(".")[:-1])
        found |= under
        (exempt if under else decayed).append(param)
    missing = sorted(exempt_names - found)
    if missing:
        raise ValueError(f"recipe {recipe.name!r}: no_decay names {missing}, but no trainable parameter of "
                         f"{getattr(model, 'model_name', type(model).__name__)} lies under a module of that name")
    groups = [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _diverged(what: str, epoch: int) -> str:
    kept = f"the last good checkpoint (epoch {epoch}) is kept" if epoch else "no checkpoint was written"
    return (f"{what}; the run stopped as diverged and {kept}. Start afresh with a lower learning rate "
            "(--overwrite --lr ..., or overwrite=True with a lower recipe lr) or check the data")


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is left as it was."""


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, or belongs to another model."""


def pick_device(device=None) -> torch.device:
    """``device``, else CUDA when available, else the CPU. A CUDA device without an index is the
    current one (each torchrun process has set its own, see :mod:`dmcbook.distributed`)."""
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _cpuinfo() -> dict:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (see BF16_CPU_FLAGS) and torch has oneDNN."""
    flags = set(_cpuinfo().get("flags", "").split())
    return bool(flags & set(BF16_CPU_FLAGS)) and torch.backends.mkldnn.is_available()


def select_precision(device: torch.device, precision: str = "auto"):
    """The autocast dtype for ``precision`` on ``device`` (None: fp32). ``auto`` picks bf16 on
    GPUs that support it, fp16 on older GPUs, bf16 on CPUs with native bf16, fp32 elsewhere."""
    check_choice("precision", precision, PRECISIONS)
    device = torch.device(device)
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16:
            raise ValueError(f"{torch.cuda.get_device_name(device)} has no bf16; use precision fp16, fp32 or auto")
        return torch.bfloat16 if precision == "bf16" or (precision == "auto" and bf16) else torch.float16
    if precision == "fp16":
        raise ValueError("fp16 autocast is for GPUs; on a CPU use precision bf16, fp32 or auto")
    return torch.bfloat16 if precision == "bf16" or cpu_supports_bf16() else None


def cpu_bf16_fault(model: nn.Module, device, amp_dtype) -> bool:
    """Whether ``model`` must train in fp32 instead of bf16 autocast on a CPU: it holds a dilated
    convolution that would run in bf16. With torch 2.14-2.15's oneDNN kernels on an
    AVX512-BF16/AMX CPU, a dilated convolution's weight gradient comes out non-finite under bf16
    at some shapes and thread counts (a full-width DMCNet-34 turned its weights to NaN at its
    second step; keeping tensors contiguous does not help, since an optimizer step leaves weights
    channels-last). The fault depends on shape and threads, so no small probe predicts it: the
    rule is by construction, and tests/test_engine_dilated.py shows the fault it avoids. A
    :class:`dmcbook.models.common.Float32Conv2d` computes in fp32 under autocast and is safe, so
    the package's own networks (DMCNet's D_M_Conv) keep bf16 everywhere else."""
    if torch.device(device).type != "cpu" or amp_dtype != torch.bfloat16:
        return False
    return any(isinstance(m, nn.Conv2d) and max(m.dilation) > 1 and not isinstance(m, Float32Conv2d)
               for m in model.modules())


def cpu_channels_last_fault(model: nn.Module, device, amp_dtype) -> bool:
    """Whether ``model`` must train with contiguous (NCHW) tensors instead of channels-last on a
    CPU: it holds a strided 1x1 convolution with 2 to 7 input channels per group that computes
    in fp32 (no autocast, or a :class:`Float32Conv2d`). With torch 2.14's oneDNN (3.12) on an
    AVX2 CPU without AVX-512, the weight gradient of such a convolution in channels-last fp32
    crashes the process (a segmentation fault or an abort) for batches of 8 images and more;
    one or eight and more input channels, stride 1, bf16 or NCHW are all safe. Only the narrow
    networks of the tests and of smoke mode (width 4: a ResNet's first shortcut sees 4 channels)
    hold one, and at that width channels-last buys nothing, so the rule is by construction on
    every CPU rather than a probe of this one; tests/test_engine_layout.py shows the crash."""
    if torch.device(device).type != "cpu":
        return False
    return any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
               and 1 < m.in_channels // m.groups < 8
               and (amp_dtype is None or isinstance(m, Float32Conv2d)) for m in model.modules())


def precision_name(dtype) -> str:
    return {torch.bfloat16: "bf16-autocast", torch.float16: "fp16-autocast"}.get(dtype, "fp32")


def use_all_cores() -> int:
    """Give torch every core this process may run on, unless the user chose a thread count
    (OMP_NUM_THREADS, or torchrun's share per process); returns the thread count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "OMP_NUM_THREADS" not in os.environ and not distributed.current().active:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def environment(device: torch.device) -> dict:
    """Library versions and hardware, stored with every result."""
    import torchvision
    env = dict(python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__,
               numpy=np.__version__, platform=platform.platform(),
               cpu=_cpuinfo().get("model name") or platform.processor() or platform.machine(),
               cpu_threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _as_written(obj):
    """A copy of ``obj`` as JSON reads it back (tuples become lists), sharing nothing with it."""
    return json.loads(json.dumps(obj))


def save_json(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1)))


def state_dict_mismatch(model: nn.Module, state: dict, shown: int = 3) -> str:
    """What keeps ``state`` out of ``model``, in one line: the first few missing and unexpected
    keys and the shape mismatches (torch's own message spans many lines of every key)."""
    own = model.state_dict()
    def some(keys):
        return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    parts = [f"{len(missing)} missing keys ({some(missing)})" if missing else "",
             f"{len(unexpected)} unexpected keys ({some(unexpected)})" if unexpected else "",
             f"{len(shapes)} shape mismatches (checkpoint vs model: {some(shapes)})" if shapes else ""]
    return "; ".join(p for p in parts if p) or "the state dict does not load"


def load_checkpoint(path, model: nn.Module | None = None, model_name: str | None = None) -> dict:
    """Read a checkpoint safely (``weights_only=True``: no code in it can run) and, given a model,
    load its weights. Corrupt files and checkpoints of another architecture raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        verify(path)
    except CorruptFile as err:
        raise CheckpointError(str(err)) from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, which would run any code in the file.
        raise CheckpointError(f"{path} is not a readable dmcbook checkpoint: it holds Python objects that a safe "
                              "load refuses, and dmcbook never loads such files") from None
    except Exception as err:
        reason = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable dmcbook checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} holds no 'model' state dict; is it a dmcbook checkpoint?")
    expected = model_name or getattr(model, "model_name", None)
    stored = ckpt.get("model_name")
    if expected and stored and stored != expected:
        raise CheckpointError(f"{path} was written by model {stored!r}, not {expected!r}")
    if model is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:
            raise CheckpointError(f"{path} does not fit this {expected or 'model'}: "
                                  f"{state_dict_mismatch(model, ckpt['model'])}") from None
    return ckpt


def _rng_state() -> dict:
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=torch.from_numpy(np.random.get_state()[1].astype(np.int64)))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _autocast_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def evaluation_dtype(device: torch.device, amp_dtype):
    """The autocast dtype a Trainer's test pass uses (None: fp32): on a GPU its training precision
    (an fp32 run is scored in fp32, not in fp16, where a large logit could overflow); on a CPU
    always fp32, as every CPU run so far was scored (their test numbers are fp32's)."""
    return amp_dtype if torch.device(device).type == "cuda" else None


@torch.no_grad()
def predict(model: nn.Module, loader, device=None, amp_dtype="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole loader, in eval mode (the model's mode is restored).
    ``amp_dtype`` is the autocast dtype (None: fp32); ``"auto"`` is bf16 on GPUs that have it,
    fp16 on older GPUs and fp32 on a CPU."""
    device = pick_device(device)
    was_training = model.training
    model.eval().to(device)
    dtype = _autocast_dtype(device) if amp_dtype == "auto" else amp_dtype
    logits, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits.append(model(x).float().cpu())
        labels.append(y.cpu())  # on the GPU when the data set lives there
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader, device=None) -> dict:
    logits, labels = predict(model, loader, device)
    return dict(loss=F.cross_entropy(logits, labels).item(),
                acc=(logits.argmax(1) == labels).float().mean().item())


def check_model_fits_data(model: nn.Module, data) -> None:
    """Refuse, in one line, a model whose input channels or number of outputs differ from the
    data's, before a Trainer touches its run folder (``overwrite`` deletes the old run first).
    One zero image goes through the model in eval mode without gradients (no BN statistic
    moves; the mode is restored). Data without ``in_chans``, ``num_classes`` and
    ``image_size`` (the benchmark's random batches) is not checked."""
    in_chans, classes, size = (getattr(data, key, None) for key in ("in_chans", "num_classes", "image_size"))
    if None in (in_chans, classes, size):
        return
    name = getattr(model, "model_name", type(model).__name__)
    expected = getattr(model, "in_chans", None)  # dmcbook.models.create_model records it
    if expected is not None and expected != in_chans:
        raise ValueError(f"{name} takes {expected}-channel images and those of {data.name} have {in_chans}; "
                         f"build the model with in_chans={in_chans}")
    param = next(model.parameters(), None)
    image = torch.zeros(1, in_chans, size, size, device=param.device if param is not None else "cpu")
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(image)
    except (RuntimeError, ValueError) as err:
        reason = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(f"{name} does not take {data.name}'s {in_chans}x{size}x{size} images ({reason})") from None
    finally:
        model.train(was_training)
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} gives outputs of shape {shape} for one image and {data.name} has {classes} "
                         f"classes, so (1, {classes}) was expected; build the model with num_classes={classes}")


class Trainer:
    """Train ``model`` on ``data`` (a :class:`dmcbook.data.DataBundle`) with ``recipe``.

    With ``out_dir`` set, every epoch writes ``checkpoint.pt`` (model, optimizer, scheduler,
    scaler, RNG states, best accuracy, history) and ``history.json`` atomically, and the best
    epoch's weights to ``best.pt``. ``resume=True`` continues from ``checkpoint.pt``; each epoch
    reseeds from (seed, epoch), so on the CPU a resumed run reproduces an uninterrupted one. The
    checkpoint is the authority: a history.json that an interruption left behind it is rewritten
    from it, and a resume in another precision than the run's is refused.

    An ``out_dir`` belongs to one configuration (see :mod:`dmcbook.runs`): one already holding a
    run is refused unless ``resume=True`` (same configuration only) or ``overwrite=True`` (its run
    files are deleted first), and it is locked while this Trainer writes.

    The engine: ``precision`` is ``auto`` (see :func:`select_precision`), ``fp32``, ``bf16`` or
    ``fp16``; ``channels_last`` (default on) stores activations as NHWC, which oneDNN and cuDNN
    run faster; ``compile=True`` trains through ``torch.compile``: on this project's CPU it made
    DMCNet's and ResNeSkt's steps about a third faster after minutes of compiling, gained nothing
    for plain ResNets and failed for GDFRNet (``results/performance/compile_gain.json``).
    ``progress`` is ``"bar"`` (a tqdm bar, a widget in notebooks), ``"epochs"`` (one printed line
    per epoch, nothing else) or False. Under torchrun (:mod:`dmcbook.distributed`) the model trains with
    DistributedDataParallel: ``recipe.batch_size`` is the global batch, split over the processes;
    metrics are summed over them and only rank 0 writes, checkpoints without DDP's ``module.``.
    The history's ``engine`` entry records what ran.
    """

    def __init__(self, model: nn.Module, data, recipe: Recipe, out_dir=None, seed: int = 0,
                 device=None, resume: bool = False, progress: bool | str = "bar", run_config: dict | None = None,
                 overwrite: bool = False, precision: str = "auto", channels_last: bool = True,
                 compile: bool = False):
        if isinstance(model, DistributedDataParallel):  # save and load the plain module's weights
            model = model.module
        check_model_fits_data(model, data)
        self.model, self.data, self.recipe, self.seed = model, data, recipe, seed
        self.dist = distributed.current()
        self.device = pick_device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.progress = "bar" if progress is True else progress
        check_choice("progress", self.progress, PROGRESS_STYLES)
        self.amp_dtype = select_precision(self.device, precision)
        precision_note = None
        if cpu_bf16_fault(model, self.device, self.amp_dtype):
            self.amp_dtype = None
            precision_note = ("fp32 instead of bf16: this torch's CPU bf16 kernels give dilated "
                              "convolutions non-finite weight gradients (dmcbook.train.cpu_bf16_fault)")
        self.eval_dtype = evaluation_dtype(self.device, self.amp_dtype)
        layout_note, memory_format = None, torch.channels_last if channels_last else torch.preserve_format
        if channels_last and cpu_channels_last_fault(model, self.device, self.amp_dtype):
            channels_last, memory_format = False, torch.contiguous_format
            layout_note = ("NCHW instead of channels-last: this torch's oneDNN crashes on the weight gradient "
                           "of a strided 1x1 convolution with 2-7 input channels (dmcbook.train.cpu_channels_last_fault)")
        self.channels_last = channels_last
        threads = use_all_cores() if self.device.type == "cpu" else torch.get_num_threads()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        self.model.to(self.device, memory_format=memory_format)
        self.net = self.model  # what the training step calls: DDP and torch.compile wrap the model
        if self.dist.active:
            self.net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if compile:
            self.net = torch.compile(self.net)
        for loader in (data.train_loader, data.test_loader):
            if hasattr(loader, "to"):  # dmcbook.augment.DeviceLoader: the data set moves to the device once
                loader.to(self.device)
        self.train_loader = distributed.shard_loader(data.train_loader, self.dist)
        self.test_loader = distributed.shard_loader(data.test_loader, self.dist)
        params = decay_groups(model, recipe)
        if recipe.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                             weight_decay=recipe.weight_decay)
        else:
            opt = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
            self.optimizer = opt(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.steps_per_epoch = max(len(self.train_loader), 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: recipe.lr_at(step / self.steps_per_epoch) / recipe.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        n_params = sum(p.numel() for p in model.parameters())
        self.history = dict(
            config=dict(model=getattr(model, "model_name", type(model).__name__), parameters=n_params,
                        dataset=data.name, data=data.describe(), seed=seed, recipe=dataclasses.asdict(recipe),
                        **(run_config or {})),
            environment=environment(self.device), epochs=[], status="running",
            engine=dict(precision=precision_name(self.amp_dtype), precision_note=precision_note,
                        channels_last=channels_last, layout_note=layout_note, threads=threads,
                        compile=compile, processes=self.dist.world,
                        data_on_device=hasattr(data.train_loader, "to")))
        self.best_acc, self.start_epoch = 0.0, 0
        if self.out_dir is not None:
            if self.dist.is_main:
                self._claim_folder(resume, overwrite)
            distributed.barrier()  # rank 0 has claimed (or cleared) the folder
            if not self.dist.is_main:
                if resume and (self.out_dir / "checkpoint.pt").exists():
                    self._restore(self.out_dir / "checkpoint.pt")
                self.out_dir = None  # only rank 0 writes

    # -- the run folder --------------------------------------------------------------------
    def _stored_history(self) -> dict | None:
        path = self.out_dir / "history.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise RunFolderError(f"{path} is unreadable ({err}); start afresh with --overwrite "
                                 "(overwrite=True) or choose another folder") from None

    def _differences(self, stored_config: dict) -> list[str]:
        return config_differences(stored_config, self.history["config"], RECIPE_DEFAULTS)

    def _claim_folder(self, resume: bool, overwrite: bool) -> None:
        """Make ``out_dir`` this run's: start afresh, resume the same run, or refuse another one."""
        if resume and overwrite:
            raise ValueError("resume continues the run in the folder and overwrite deletes it: choose one")
        check_writable(self.out_dir)
        with run_lock(self.out_dir):
            stored = None
            if overwrite:
                remove_run(self.out_dir)
            elif has_run(self.out_dir):
                if not resume:
                    raise RunFolderError(f"{self.out_dir} already holds a run; continue it with --resume (resume=True), "
                                         "start afresh with --overwrite (overwrite=True), or choose another folder")
                stored = self._stored_history()
                if stored is not None:
                    self._refuse_other_run(stored, self.out_dir / "history.json")
                if (self.out_dir / "checkpoint.pt").exists():
                    stored = self._history_from_checkpoint(self._restore(self.out_dir / "checkpoint.pt"), stored)
                elif stored is not None and stored["epochs"]:
                    raise RunFolderError(f"{self.out_dir / 'history.json'} records {len(stored['epochs'])} epochs, but "
                                         "there is no checkpoint.pt to continue them from; start afresh with "
                                         "--overwrite (overwrite=True) or choose another folder")
            # The epochs history.json holds as this Trainer left it: fit refuses the folder if
            # another process has written other epochs there meanwhile.
            self._folder_epochs = _as_written(stored["epochs"]) if stored else []

    def _history_from_checkpoint(self, saved: dict, stored: dict | None) -> dict:
        """The run's history, with the checkpoint as the authority. An epoch's history.json is
        written after its checkpoint, so an interruption between them leaves history.json one
        epoch behind (or absent after a first epoch): it is rewritten from the checkpoint's copy.
        Any other disagreement is no interruption of this engine's, and is refused."""
        if stored is not None and stored["epochs"] == saved["epochs"]:
            return stored
        if stored is None or stored["epochs"] == saved["epochs"][:-1]:
            save_json(saved, self.out_dir / "history.json")
            return saved
        raise RunFolderError(f"{self.out_dir}: history.json records {len(stored['epochs'])} epochs and checkpoint.pt "
                             f"{len(saved['epochs'])}, which no interrupted write leaves; start afresh with "
                             "--overwrite (overwrite=True) or choose another folder")

    def _refuse_other_run(self, stored: dict, path: Path) -> None:
        diffs = self._differences(stored["config"])
        if diffs:
            raise RunFolderError(f"{path} belongs to another run ({'; '.join(diffs)}); start afresh with "
                                 "--overwrite (overwrite=True) or choose another folder")
        if str(stored.get("status", "")).startswith("diverged"):
            raise RunFolderError(f"{path}: this run diverged ({stored.get('error', stored['status'])}), and resuming "
                                 "would repeat it; start afresh with --overwrite (overwrite=True) and a lower lr")
        # The engine is no part of a run's identity (dmcbook.runs), but the history records one
        # precision for all its epochs: a resume in another would misreport them.
        trained, now = stored.get("engine", {}).get("precision"), self.history["engine"]["precision"]
        if trained is not None and trained != now:
            option = PRECISION_OPTIONS.get(trained, trained)
            raise RunFolderError(f"{path} was trained in {trained} and this Trainer would continue in {now}; resume it "
                                 f"where it trains in {trained} (precision={option!r}), or start afresh with "
                                 "--overwrite (overwrite=True)")

    def _check_unchanged(self) -> None:
        """No other process may have written the folder since this Trainer read or wrote it."""
        stored = self._stored_history()
        if (stored["epochs"] if stored else []) != self._folder_epochs or (
                stored and self._differences(stored["config"])):
            raise RunFolderError(f"{self.out_dir} was written by another process after this Trainer was created; "
                                 "create a new Trainer (resume=True) or choose another folder")

    # -- checkpoints ---------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return dict(model=self.model.state_dict(), model_name=getattr(self.model, "model_name", None),
                    optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                    scaler=self.scaler.state_dict(), rng=_rng_state(), epoch=epoch,
                    best_acc=self.best_acc, history=json.dumps(self.history))

    def _restore(self, path: Path) -> dict:
        """Continue from checkpoint ``path``; returns the history it holds."""
        ckpt = load_checkpoint(path, self.model)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        saved = json.loads(ckpt["history"])
        self._refuse_other_run(saved, path)
        self.history["epochs"] = saved["epochs"]
        self.best_acc, self.start_epoch = ckpt["best_acc"], ckpt["epoch"] + 1
        self._summarise(finished=self.start_epoch >= self.recipe.epochs)
        return saved

    def _save(self, epoch: int, is_best: bool) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = self._state(epoch)
        # best.pt, checkpoint.pt, history.json: an interruption between two leaves the
        # checkpoint's best_acc never ahead of best.pt, and history.json at most one epoch behind
        # the checkpoint, which the next resume repairs (_history_from_checkpoint).
        if is_best:
            best = dict(model=state["model"], model_name=state["model_name"], epoch=epoch, best_acc=self.best_acc,
                        config=json.dumps(self.history["config"]))
            write_checked(self.out_dir / "best.pt", lambda p: torch.save(best, p))
        write_checked(self.out_dir / "checkpoint.pt", lambda p: torch.save(state, p))
        save_json(self.history, self.out_dir / "history.json")
        self._folder_epochs = _as_written(self.history["epochs"])

    # -- the loop --------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict:
        self.model.train()
        # Reseed from (seed, epoch): the shuffle and augmentations of an epoch are the same
        # whether or not the run was interrupted before it. Every rank shuffles alike (each takes
        # its part of the same global batches) but augments with its own seed.
        seed_everything(self.seed * 100_003 + epoch + 1_000_003 * self.dist.rank)
        generator = getattr(self.train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.seed * 100_003 + epoch)
        # The running sums stay on the device and are read once, at the epoch's end: a read per
        # step (.item(), or an `if` on a tensor) would make the host wait for every step's kernels.
        # The loss sum is float64, as the Python float it replaced: the same sums in the same order.
        # (Apple's MPS has no float64.)
        sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        total_loss = torch.zeros((), dtype=sum_dtype, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        nonfinite_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        seen, start = 0, time.perf_counter()
        show_bar = self.progress == "bar" and self.dist.is_main
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.recipe.epochs}", leave=False,
                   disable=not show_bar, mininterval=1.0)
        for step, (x, y) in enumerate(bar):
            # pinned host memory (the GPU loaders pin it) lets these copies overlap the compute
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.net(x)
                loss = self.criterion(logits.float(), y)
            if self.dist.active:  # every rank sees the global loss, so all stop together on a NaN
                loss_value = distributed.all_sum(loss.detach().reshape(1), self.device) / self.dist.world
                loss = loss + (loss_value.to(loss.device) - loss.detach()).squeeze()  # value global, gradient local
            nonfinite_steps += ~torch.isfinite(loss.detach())  # checked at the epoch's end
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.recipe.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total_loss += loss.detach().to(sum_dtype) * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if show_bar and step % 50 == 0:  # the bar's running figures wait for the device
                bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2g}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}")
        sums = torch.stack([total_loss, correct.to(sum_dtype), torch.tensor(seen, dtype=sum_dtype, device=self.device),
                            nonfinite_steps.to(sum_dtype)])
        total_loss, correct, seen, nonfinite = distributed.all_sum(sums, self.device).tolist()
        elapsed = time.perf_counter() - start
        if nonfinite:  # every rank saw the global loss, so all stop together
            bad_steps = round(nonfinite / self.dist.world)
            raise TrainingDiverged(_diverged(f"the training loss was NaN or infinite at {bad_steps} of the "
                                             f"{len(self.train_loader)} steps of epoch {epoch + 1}", epoch))
        return dict(train_loss=total_loss / max(seen, 1), train_acc=correct / max(seen, 1),
                    train_time=elapsed, images_per_sec=seen / max(elapsed, 1e-9))

    def _evaluate(self) -> dict:
        """Test loss and accuracy; under DDP each rank scores its part and the sums are reduced."""
        distributed.broadcast_buffers(self.model)  # every rank scores with rank 0's BN statistics
        logits, labels = predict(self.model, self.test_loader, self.device, amp_dtype=self.eval_dtype)
        sums = torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                             (logits.argmax(1) == labels).sum().item(), len(labels)], dtype=torch.float64)
        loss, correct, count = distributed.all_sum(sums, self.device).tolist()
        return dict(loss=loss / count, acc=correct / count)

    def fit(self, stop_after: int | None = None, deadline: float | None = None) -> dict:
        """Train to the recipe's last epoch (or only up to epoch ``stop_after``, to simulate an
        interruption) and return the history. The run folder is locked meanwhile. ``deadline``
        (a ``time.time()``) stops the run, resumable, before an epoch that the last epoch's
        duration says would end after it; a fresh run trains its first epoch whenever it starts
        before the deadline."""
        if deadline is not None and self.dist.active:
            raise ValueError("deadline is not supported under torchrun: each process would judge it by its own clock")
        if self.out_dir is None:
            return self._fit(stop_after, deadline)
        with run_lock(self.out_dir):
            self._check_unchanged()
            return self._fit(stop_after, deadline)

    def _check_finite(self, epoch: int, test_loss: float) -> None:
        """A spike at an epoch's last step shows only here: in the test loss or the weights."""
        state = self.model.state_dict()
        bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise TrainingDiverged(_diverged(f"after epoch {epoch + 1} {len(bad)} weight tensors are not finite "
                                             f"(first {bad[0]})", epoch))
        if not math.isfinite(test_loss):
            raise TrainingDiverged(_diverged(f"after epoch {epoch + 1} the test loss is {test_loss}", epoch))

    def _fit(self, stop_after: int | None, deadline: float | None) -> dict:
        last = self.recipe.epochs if stop_after is None else min(stop_after, self.recipe.epochs)
        # An epoch's length: the last one timed here, else what a resumed history records: its
        # wall time (training, test pass, checks), or in histories before that field its training time.
        previous = self.history["epochs"][-1] if self.history["epochs"] else {}
        epoch_seconds = previous.get("epoch_time", previous.get("train_time", 0.0))
        for epoch in range(self.start_epoch, last):
            if deadline is not None and time.time() + epoch_seconds > deadline:
                break
            started = time.time()
            try:
                record = self._train_epoch(epoch)
                test = self._evaluate()
                self._check_finite(epoch, test["loss"])
            except TrainingDiverged as err:
                self.history.update(status="diverged", error=str(err))
                if self.out_dir is not None:  # the history says why; the checkpoint stays as it was
                    save_json(self.history, self.out_dir / "history.json")
                raise
            lr = self.optimizer.param_groups[0]["lr"]  # where the schedule stands at the epoch's end
            # epoch_time: from the epoch's start until its files are written (training, test pass,
            # checks); device: where it ran (a resumed run may have moved, and the environment
            # names only the last device)
            record = dict(epoch=epoch + 1, lr=lr, **record, test_loss=test["loss"], test_acc=test["acc"],
                          epoch_time=time.time() - started, device=str(self.device))
            self.history["epochs"].append(record)
            is_best = test["acc"] > self.best_acc
            self.best_acc = max(self.best_acc, test["acc"])
            finished = epoch + 1 == self.recipe.epochs
            self._summarise(finished)
            # the epoch is this Trainer's before its files are: a fit called again after an
            # interrupted save goes on from here, never trains the epoch twice
            self.start_epoch = epoch + 1
            self._save(epoch, is_best)
            epoch_seconds = time.time() - started
            if self.progress and self.dist.is_main:
                # tqdm.write keeps a running bar intact; "epochs" prints plain lines (no widget, no \r)
                (tqdm.write if self.progress == "bar" else functools.partial(print, flush=True))(
                    f"epoch {epoch + 1:>3}/{self.recipe.epochs}  train loss {record['train_loss']:.4f} "
                    f"acc {record['train_acc']:.4f}  test loss {test['loss']:.4f} acc {test['acc']:.4f}  "
                    f"lr {lr:.3g}  {record['images_per_sec']:.0f} img/s")
        return self.history

    def _summarise(self, finished: bool) -> None:
        epochs = self.history["epochs"]
        best = max(epochs, key=lambda e: e["test_acc"])
        self.history.update(status="finished" if finished else "running",
                            final_test_acc=epochs[-1]["test_acc"], best_test_acc=best["test_acc"],
                            best_epoch=best["epoch"], train_time=sum(e["train_time"] for e in epochs))
