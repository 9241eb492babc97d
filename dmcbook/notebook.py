"""The set-up every chapter's first cell makes.

The first code cell of a chapter is :func:`first_cell`'s text: on Colab it installs this
package from the repository (Colab already has torch, torchvision and matplotlib, so nothing
heavy is reinstalled), then calls :func:`setup`, which picks the mode, seeds everything,
picks the device, sets the plotting style and prints what it chose.

Modes, from the environment:

- ``DMCBOOK_MODE=smoke`` (or ``DMCBOOK_SMOKE=1``): CI, seconds, a few hundred images;
- ``DMCBOOK_MODE=budget``: a CPU, real Fashion-MNIST, reduced width and epochs, minutes;
- ``DMCBOOK_MODE=colab``: a GPU, the paper's data set and widths on a reduced schedule sized to
  finish in about 30 minutes on a Colab T4 (see :func:`gpu_minutes`);
- ``DMCBOOK_MODE=paper``: a GPU, the paper's full recipe; hours, so only when asked for.

Without a setting, the mode is ``colab`` where CUDA is available and ``budget`` elsewhere.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .links import REPO_URL, colab_url
from .checks import check_choice
from .train import get_recipe, pick_device, seed_everything

MODES = ("smoke", "budget", "colab", "paper")
GPU_MODES = ("colab", "paper")

# Training FLOP/s that a GPU sustains on these small-image ResNets under AMP, as planning figures
# (about 8-15 % of the tensor-core peak: small images keep the GPU far from its peak). The T4 figure
# is our assumption from its 65 TFLOP/s fp16 peak; `python -m dmcbook bench` measures the real one.
EFFECTIVE_TFLOPS = {"T4": 5.0, "L4": 9.0, "A100": 35.0, "H100": 70.0}
# The recipe whose runs all chapters share, filed in one folder (see dmcbook.campaign).
SHARED_RECIPE = "converge"


def first_cell(chapter: str, paper_recipe: str, paper_dataset: str, cpu_recipe: str | None = None) -> str:
    """The source of a chapter's first code cell."""
    call = f"session = setup(\"{chapter}\", paper_recipe=\"{paper_recipe}\", paper_dataset=\"{paper_dataset}\")"
    if cpu_recipe:
        call = (f"session = setup(\"{chapter}\", paper_recipe=\"{paper_recipe}\",\n"
                f"                paper_dataset=\"{paper_dataset}\", cpu_recipe=\"{cpu_recipe}\")")
    return (
        "# Set-up. On Colab this installs the book's package first (Colab already has torch).\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q \"dmcbook @ git+{REPO_URL}\"\n"
        "from dmcbook.notebook import setup\n"
        + call
    )


def colab_badge(notebook: str) -> str:
    """Markdown for an "Open in Colab" badge pointing at ``notebook`` (a path in the repository)."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook)})")


def current_mode() -> str:
    if os.environ.get("DMCBOOK_SMOKE", "") not in ("", "0"):
        return "smoke"
    mode = os.environ.get("DMCBOOK_MODE")
    if mode:
        check_choice("DMCBOOK_MODE", mode, MODES)
        return mode
    return "colab" if torch.cuda.is_available() else "budget"


def find_project_root(start: Path | None = None) -> Path:
    """The repository root (the folder with _config.yml) above ``start``; else the working folder."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_config.yml").exists() and (folder / "dmcbook").is_dir():
            return folder
    return Path.cwd()


@dataclass
class Session:
    """What a chapter runs with; experiments read it (see :mod:`dmcbook.experiments`)."""
    chapter: str
    mode: str
    seed: int
    device: torch.device
    recipe: str
    dataset: str
    results_root: Path
    scratch: Path

    @property
    def results_dir(self) -> Path:
        """Where this mode's runs live: a scratch folder in smoke mode, so CI never overwrites the
        committed results; ``results/campaign/converge`` for the runs every chapter shares
        (:mod:`dmcbook.campaign`); ``results/<chapter>/<mode>`` otherwise."""
        if self.mode == "smoke":
            return self.scratch
        if self.recipe == SHARED_RECIPE:
            return self.results_root / "campaign" / SHARED_RECIPE
        return self.results_root / self.chapter / self.mode

    def describe(self) -> str:
        recipe = get_recipe(self.recipe)
        if self.mode == "smoke":
            where = "a scratch folder (smoke runs are never kept)"
        else:
            where = self.results_dir.relative_to(self.results_root.parent).as_posix()
        return (f"chapter {self.chapter} | mode {self.mode} | device {self.device.type} | seed {self.seed}\n"
                f"data set {self.dataset} | recipe {self.recipe}: {recipe.note}\n"
                f"torch {torch.__version__} | results in {where}")


def setup(chapter: str, paper_recipe: str, paper_dataset: str = "cifar10", seed: int = 0,
          style: bool = True, cpu_recipe: str | None = None) -> Session:
    """Pick the mode, seed everything, pick the device and set the plotting style; print it all.
    ``cpu_recipe`` replaces the ``budget`` recipe in budget mode (the head-to-head chapter's
    shared ``converge`` runs)."""
    mode = current_mode()
    seed_everything(seed)
    device = pick_device()
    if mode == "smoke":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    recipe = paper_recipe if mode in GPU_MODES else cpu_recipe if mode == "budget" and cpu_recipe else mode
    get_recipe(recipe)  # fail early on an unknown recipe
    dataset = paper_dataset if mode in GPU_MODES else "fashion-mnist"
    if style:
        from .viz import use_page_style
        use_page_style()
    scratch = Path(tempfile.mkdtemp(prefix=f"dmcbook-{chapter}-"))
    session = Session(chapter, mode, seed, device, recipe, dataset, find_project_root() / "results", scratch)
    print(session.describe())
    return session


def gpu_minutes(model: str, input_size, images: int, epochs: float, gpu: str = "T4",
                test_images: int = 0, num_classes: int = 10, stem: str = "cifar", **model_options) -> float:
    """Estimated minutes of GPU time to train registered ``model`` on ``images`` images of
    ``input_size`` (C, H, W) for ``epochs`` epochs, evaluating ``test_images`` images each epoch.

    A training step costs about three forward passes (the backward pass is about two), so the
    estimate is ``(3 * images + test_images) * epochs * forward FLOPs / EFFECTIVE_TFLOPS[gpu]``.
    It is a planning figure: data loading and Python overhead come on top, so leave a margin.
    """
    from .models.registry import create_model
    from .profile import count_flops

    check_choice("gpu", gpu, tuple(EFFECTIVE_TFLOPS))
    if images < 1 or epochs <= 0 or test_images < 0:
        raise ValueError(f"images ({images}) and epochs ({epochs}) must be positive and test_images "
                         f"({test_images}) not negative")
    net = create_model(model, num_classes, input_size[0], stem, **model_options)
    flops = count_flops(net, tuple(input_size))["flops"]
    seconds = (3 * images + test_images) * epochs * flops / (EFFECTIVE_TFLOPS[gpu] * 1e12)
    return seconds / 60


def source_bundle(obj) -> dict:
    """The display of ``obj``'s source: a fenced Python block as Markdown (the book highlights
    it) and the bare source as plain text. No rendered HTML is stored, so a reader's newer
    highlighter cannot make a stored output differ from a fresh one."""
    source = inspect.getsource(obj).rstrip("\n")
    return {"text/markdown": f"```python\n{source}\n```", "text/plain": source}


def show_source(obj) -> None:
    """Display the package's source of ``obj`` (a class or function), so the chapter shows the
    code it runs rather than a copy that could drift from it."""
    from IPython.display import display
    display(source_bundle(obj), raw=True)
