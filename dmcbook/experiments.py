"""Runs that a chapter quotes: train (or resume) a named model under the session's mode, keep
its history under ``results/``, and summarise seeds beside the paper's numbers."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import DataBundle, get_data
from .models.registry import create_model
from .train import Trainer, get_recipe


@dataclass
class Experiment:
    """A finished run: its history, the trained model (last epoch) and its data."""
    name: str
    history: dict
    model: nn.Module
    data: DataBundle
    out_dir: Path


def run_experiment(session, name: str, model: str, seed: int = 0, model_options: dict | None = None,
                   recipe_overrides: dict | None = None, data_options: dict | None = None,
                   dataset: str | None = None, stem: str = "cifar", init=None, progress: bool = True) -> Experiment:
    """Train ``model`` for the session's mode and write ``<results_dir>/<name>/history.json``.

    A run whose checkpoint is already complete is loaded, not retrained, and an interrupted one
    resumes. The recipe's ``width`` applies unless ``model_options`` sets its own. ``init`` is
    an optional function called with the new model before training (e.g. a transfer of weights).
    """
    recipe = get_recipe(session.recipe, **(recipe_overrides or {}))
    dataset = dataset or session.dataset
    data = get_data(dataset, image_size=recipe.image_size, batch_size=recipe.batch_size, augment=recipe.augment,
                    train_subset=recipe.train_subset, test_subset=recipe.test_subset, seed=seed,
                    **(data_options or {}))
    options = dict(model_options or {})
    if recipe.width is not None:
        options.setdefault("width", recipe.width)
    torch.manual_seed(seed)
    net = create_model(model, data.num_classes, data.in_chans, stem, **options)
    if init is not None:
        init(net)
    out_dir = Path(session.results_dir) / name
    run_config = dict(run=name, chapter=session.chapter, mode=session.mode, model_options=options, stem=stem,
                      in_chans=data.in_chans, num_classes=data.num_classes)
    trainer = Trainer(net, data, recipe, out_dir=out_dir, seed=seed, device=session.device, resume=True,
                      progress=progress, run_config=run_config)
    history = trainer.fit()
    return Experiment(name, history, net, data, out_dir)


def load_runs(results_dir, pattern: str = "*") -> dict[str, dict]:
    """Histories under ``results_dir`` whose run folder matches ``pattern``: run name -> history."""
    runs = {}
    for path in sorted(Path(results_dir).glob(f"{pattern}/history.json")):
        runs[path.parent.name] = json.loads(path.read_text())
    return runs


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def summarize(runs: dict[str, dict], group=lambda name: name.rsplit("-seed", 1)[0], paper: dict | None = None) -> list[dict]:
    """Mean ± standard deviation over seeds of the final and the best test accuracy (in %).

    ``group`` maps a run name to its variant (by default the name without its ``-seedN``
    suffix); ``paper`` maps a variant to the paper's accuracy in %, shown beside ours. Each row
    names its mode, data set, epochs, training images and seeds, so a number never loses its budget.
    """
    groups: dict[str, list[dict]] = {}
    for name, history in runs.items():
        groups.setdefault(group(name), []).append(history)
    rows = []
    for variant, histories in groups.items():
        done = [h for h in histories if h.get("status") == "finished"]
        if not done:
            continue
        config = done[0]["config"]
        rows.append({"variant": variant, "paper %": (paper or {}).get(variant),
                     "final acc %": _mean_std([h["final_test_acc"] for h in done]),
                     "best acc %": _mean_std([h["best_test_acc"] for h in done]),
                     "seeds": len(done), "mode": config.get("mode"), "data": config["data"],
                     "epochs": config["recipe"]["epochs"], "width": config.get("model_options", {}).get("width")})
    return rows
