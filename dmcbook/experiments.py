"""Runs that a chapter quotes: train (or resume) a named model under the session's mode, keep
its history under ``results/``, and summarise seeds beside the paper's numbers."""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import torch
from torch import nn

from .data import DataBundle, get_data
from .models.registry import create_model
from .runs import CorruptFile, RunFolderError, atomic_write, config_differences, run_lock, sha256_of, verify
from .train import (RECIPE_DEFAULTS, CheckpointError, Trainer, get_recipe, load_checkpoint, save_json,
                    state_dict_mismatch)


WEIGHTS_FILE = "weights.safetensors"


class Experiment:
    """A run: its name, history, data and folder, and the trained model (last epoch) when its
    weights are at hand (trained now, a local checkpoint, or shipped ``weights.safetensors``);
    otherwise ``model`` raises :class:`CheckpointError` saying how to get them."""

    def __init__(self, name: str, history: dict, model: nn.Module | None, data: DataBundle, out_dir: Path):
        self.name, self.history, self.data, self.out_dir = name, history, data, Path(out_dir)
        self._model = model

    @property
    def has_model(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            raise CheckpointError(
                f"run {self.name!r} finished without shipped weights, so its model is not available (only its "
                f"history); to get them, delete {self.out_dir} and call run_experiment(..., ship_weights=True) "
                "to retrain it, or train it from the CLI (python -m dmcbook train)")
        return self._model

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, status={self.history.get('status')!r}, has_model={self.has_model})"


def build_network(history: dict) -> nn.Module:
    """A freshly initialised network built as the run of ``history`` built it (its seed, model,
    options, stem, channels and classes), before any training or parameter transfer."""
    config = history["config"]
    torch.manual_seed(config["seed"])
    return create_model(config["model"], config["num_classes"], config["in_chans"], config["stem"],
                        **config["model_options"])


def save_shipped_weights(model: nn.Module, out_dir: Path) -> dict:
    """Write the model's weights as fp16 safetensors (half the bytes; the book inspects, never
    resumes from them) and return what the history records: file, dtype and SHA-256."""
    from safetensors.torch import save_file
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    overflow = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:  # beyond fp16's 65504: shipping would silently change the model
        raise ValueError(f"{len(overflow)} weight tensors do not fit fp16 (first {overflow[0]}); not shipped")
    path = Path(out_dir) / WEIGHTS_FILE
    atomic_write(path, lambda p: save_file(state, str(p), metadata={"model": getattr(model, "model_name", "")}))
    return dict(file=WEIGHTS_FILE, dtype="float16", sha256=sha256_of(path))


def load_shipped_weights(model: nn.Module, out_dir: Path, record: dict) -> None:
    """Load ``weights.safetensors`` into ``model`` after checking its SHA-256 against ``record``."""
    from safetensors.torch import load_file
    path = Path(out_dir) / record["file"]
    try:
        verify(path, record["sha256"])
    except CorruptFile as err:
        raise CheckpointError(str(err)) from None
    state = load_file(str(path))
    own = model.state_dict()
    try:
        model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()})
    except RuntimeError:
        raise CheckpointError(f"{path} does not fit this {getattr(model, 'model_name', 'model')}: "
                              f"{state_dict_mismatch(model, state)}") from None


def _finished_run(out_dir: Path, net: nn.Module, expected: dict, ship: bool) -> tuple[dict, nn.Module | None]:
    """A finished run's history and, when its weights are here, the model holding them."""
    history = json.loads((out_dir / "history.json").read_text())
    diffs = config_differences(history["config"], expected, RECIPE_DEFAULTS)
    if diffs:
        raise RunFolderError(f"{out_dir} holds a finished run of another configuration ({'; '.join(diffs)}); "
                             "delete the folder to train this one")
    if history.get("weights"):
        load_shipped_weights(net, out_dir, history["weights"])
        return history, net
    if (out_dir / "checkpoint.pt").exists():  # trained on this machine: ship from it, no retraining
        load_checkpoint(out_dir / "checkpoint.pt", net)
        if ship:
            history["weights"] = save_shipped_weights(net, out_dir)
            save_json(history, out_dir / "history.json")
        return history, net
    return history, None


def run_experiment(session, name: str, model: str, seed: int = 0, model_options: dict | None = None,
                   recipe_overrides: dict | None = None, data_options: dict | None = None,
                   dataset: str | None = None, stem: str = "cifar", init=None, progress="epochs",
                   ship_weights: bool = False, deadline: float | None = None) -> Experiment:
    """Train ``model`` for the session's mode and write ``<results_dir>/<name>/history.json``.

    A finished run is never retrained: its model comes from its shipped ``weights.safetensors``
    or a local checkpoint, else the Experiment has only its history (``has_model`` is False). A
    finished run of another configuration is refused. An interrupted run resumes. With
    ``ship_weights`` the last epoch's weights are kept as checksummed fp16 safetensors beside
    the history (committed with it; ship only what a chapter inspects). In smoke mode the
    results folder is a scratch one, and a stale run there is replaced. The recipe's ``width``
    applies unless ``model_options`` sets its own. ``init`` is an optional function called with
    the new model before training (e.g. a transfer of weights). ``deadline`` (a ``time.time()``)
    may stop the run unfinished and resumable (:meth:`dmcbook.train.Trainer.fit`).
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
    expected = dict(model=getattr(net, "model_name", model), dataset=data.name, data=data.describe(), seed=seed,
                    recipe=dataclasses.asdict(recipe), **run_config)
    scratch = session.mode == "smoke"
    stored = out_dir / "history.json"
    status = json.loads(stored.read_text()).get("status") if stored.exists() else None
    if status == "diverged" and not scratch:  # resuming would diverge again
        raise RunFolderError(f"{out_dir} holds a run that diverged; delete the folder and run it again with a lower "
                             "learning rate (recipe_overrides=dict(lr=...))")
    if status == "finished":
        try:
            history, trained = _finished_run(out_dir, net, expected, ship_weights)
            return Experiment(name, history, trained, data, out_dir)
        except RunFolderError:
            if not scratch:
                raise
    trainer = Trainer(net, data, recipe, out_dir=out_dir, seed=seed, device=session.device,
                      resume=not scratch, overwrite=scratch, progress=progress, run_config=run_config)
    history = trainer.fit(deadline=deadline)
    with run_lock(out_dir):
        finished = history["status"] == "finished"
        history["weights"] = save_shipped_weights(net, out_dir) if ship_weights and finished else None
        save_json(history, out_dir / "history.json")
    return Experiment(name, history, net, data, out_dir)


def load_runs(results_dir, pattern: str = "*") -> dict[str, dict]:
    """Histories under ``results_dir`` whose run folder matches ``pattern``: run name -> history."""
    runs = {}
    for path in sorted(Path(results_dir).glob(f"{pattern}/history.json")):
        runs[path.parent.name] = json.loads(path.read_text())
    return runs


def mean_std(values: list[float]) -> str:
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
                     "final acc %": mean_std([h["final_test_acc"] for h in done]),
                     "best acc %": mean_std([h["best_test_acc"] for h in done]),
                     "seeds": len(done), "mode": config.get("mode"), "data": config["data"],
                     "epochs": config["recipe"]["epochs"], "width": config.get("model_options", {}).get("width")})
    return rows
