"""The converged comparisons: every chapter's ablations and the head-to-head chapter, trained
under one recipe (``converge``: all of Fashion-MNIST, width 16, 20 epochs) on a CPU.

The runs take hours, so they are produced in the background, not by the chapters::

    OMP_NUM_THREADS=1 python -m dmcbook campaign run --chapter 04_drstn &   # one per core

Each process trains the first run of the plan that is neither finished nor held by another
process (a run folder's lock says which), resumes an interrupted run where its checkpoint
left it, and goes on until the plan is done. Histories land in ``results/campaign/converge/``
and are committed as they finish; a chapter reads them with :func:`collect` and retrains
nothing, listing what is still pending and what it will cost (:func:`pending_costs`). All
chapters share one folder, so a baseline that several chapters compare with (ResNet-34) is
trained once.

A run can take longer than one working session. Give the workers a deadline (``--minutes``):
a run it stops keeps its ``checkpoint.pt`` in its folder and resumes from it where it stopped.
Git carries only the histories (checkpoints are build output, megabytes each, and stay out of
the repository), so a run stopped in one checkout and resumed in a fresh clone, which has its
history but not its checkpoint, starts again from its first epoch; :func:`run` says so. Where
the checkout ends with the session, ``--whole-runs`` starts only the runs that will finish
before the deadline.

Every run trains in one precision (:data:`PRECISION`), so that the seeds of two configurations
pair as runs of one recipe: a machine that would train in another (a CPU without native bf16
trains in fp32, and emulates bf16 about ten times slower) is refused before any work starts.
"""
from __future__ import annotations

import functools
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .notebook import SHARED_RECIPE, Session, find_project_root
from .runs import RunFolderError, remove_run, run_lock
from .train import get_recipe, pick_device

RECIPE = SHARED_RECIPE
DATASET = "fashion-mnist"
SEEDS = (0, 1, 2)
# What every run so far trained in: CPUs with native bf16 and GPUs both give it.
PRECISION = "bf16-autocast"


@dataclass(frozen=True)
class Spec:
    """One configuration: ``variant`` names its runs (``<variant>-seed<N>``), ``model`` and
    ``options`` build it, ``chapters`` are the chapters that read it. ``init_from`` makes it a
    parameter transfer (:func:`dmcbook.transfer.init_from_checkpoint`) from the best weights of
    that variant's run of the same seed, which must have finished on this machine first."""
    variant: str
    model: str
    options: dict = field(default_factory=dict)
    chapters: tuple = ()
    dataset: str | None = None    # None: the campaign's DATASET
    init_from: str | None = None  # parameter transfer from this variant's best weights, same seed
    recipe: dict = field(default_factory=dict)  # changes to the converge recipe
    seeds: tuple | None = None    # None: the campaign's seeds (and extra ones for close calls)


H2H = "05_head_to_head"
# In the order the runs are made: the cheapest questions first, so each session closes some
# (a ResNet-18 run takes about 35 CPU-minutes here, DMCNet-34 and GDFRNet several hours).
PLAN = (
    # The first budget tried, 10 epochs: ResNet-18 was still gaining over its last two epochs and
    # 20 epochs added a point, so the recipe became 20 epochs; these runs show why.
    Spec("resnet18-10ep", "resnet18", chapters=(H2H,), recipe={"epochs": 10}, seeds=(0, 1, 2, 3, 4)),
    Spec("drstn_v5-10ep", "drstn_v5", chapters=(H2H,), recipe={"epochs": 10}, seeds=(0, 1, 2)),
    Spec("resnet18", "resnet18", chapters=("04_drstn", H2H)),
    Spec("drstn_v5", "drstn_v5", chapters=("04_drstn", H2H)),
    Spec("drstn_v1", "drstn_v1", chapters=("04_drstn",)),
    # DRSTN Sec. 4.3 offline: V5 from all of Fashion-MNIST to scikit-learn's digits, against scratch.
    Spec("digits-scratch", "drstn_v5", chapters=("04_drstn",), dataset="digits"),
    Spec("digits-transfer", "drstn_v5", chapters=("04_drstn",), dataset="digits", init_from="drstn_v5"),
    Spec("drstn_v2", "drstn_v2", chapters=("04_drstn",)),
    Spec("drstn_v3", "drstn_v3", chapters=("04_drstn",)),
    Spec("drstn_v4", "drstn_v4", chapters=("04_drstn",)),
    # The book's question, not the paper's: do the thresholds' factors leave one half when weight
    # decay does not pull their gate's weights to zero? (Chapter 04, looking inside.)
    Spec("drstn_v4-no-gate-decay", "drstn_v4", chapters=("04_drstn",), recipe={"no_decay": ("soft_threshold",)}),
    Spec("resnet34", "resnet34", chapters=("01_dmcnet", "02_gdfrnet", H2H)),
    Spec("dmcnet34", "dmcnet34", chapters=("01_dmcnet", H2H)),
    # FRM's r divides the stage width: at width 16 the paper's r = 32 (at width 64) becomes r = 8,
    # which keeps the paper's C/r attention channels (2, 4, 8, 16 over the stages); r = 4 becomes 1.
    Spec("gdfrnet", "gdfrnet", {"r": 8}, chapters=("02_gdfrnet", H2H)),
    Spec("resnet50", "resnet50", chapters=("03_resneskt", H2H)),
    Spec("resnest50", "resneskt50", {"spatial": False}, chapters=("03_resneskt",)),
    # GeM's p is spared weight decay, as the GeM authors train it: the shared recipe's decay alone
    # would pull it from the paper's 3 to about 0.3 over 20 epochs (below average pooling).
    Spec("resneskt50", "resneskt50", chapters=("03_resneskt", H2H), recipe={"no_decay": ("gem",)}),
    # The ablations, cheapest first by their step times (results/performance/campaign_costs.json),
    # so that each session of CPU time settles as many of the chapters' questions as it can.
    Spec("dmcnet34-net3", "dmcnet34", {"mmcf": False, "ae": "A"}, chapters=("01_dmcnet",)),
    Spec("dmcnet34-net2", "dmcnet34", {"mmcf": False}, chapters=("01_dmcnet",)),
    Spec("gdfrnet-net4", "gdfrnet", {"variant": "net4", "r": 8}, chapters=("02_gdfrnet",)),
    Spec("dmcnet34-mask1", "dmcnet34", {"mask": "mask1"}, chapters=("01_dmcnet",)),
    Spec("gdfrnet-net3", "gdfrnet", {"variant": "net3", "r": 8}, chapters=("02_gdfrnet",)),
    Spec("dmcnet34-aeA", "dmcnet34", {"ae": "A"}, chapters=("01_dmcnet",)),
    Spec("dmcnet34-mask4", "dmcnet34", {"mask": "mask4"}, chapters=("01_dmcnet",)),
    Spec("gdfrnet-bilinear", "gdfrnet", {"upsample": "bilinear", "r": 8}, chapters=("02_gdfrnet",)),
    Spec("gdfrnet-frmA", "gdfrnet", {"frm_position": "A", "r": 8}, chapters=("02_gdfrnet",)),
    Spec("gdfrnet-r1", "gdfrnet", {"r": 1}, chapters=("02_gdfrnet",)),
)
CHAPTERS = tuple(sorted({c for spec in PLAN for c in spec.chapters}))


def specs(chapter: str | None = None) -> list[Spec]:
    """The plan, or the part of it that ``chapter`` reads."""
    if chapter is not None and chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; expected one of {list(CHAPTERS)}")
    return [s for s in PLAN if chapter is None or chapter in s.chapters]


def session(root: Path | None = None, device=None) -> Session:
    """The session the campaign's runs are made in: recipe ``converge`` on Fashion-MNIST,
    filed under ``results/campaign/converge/``."""
    root = Path(root) if root is not None else find_project_root() / "results"
    return Session("campaign", RECIPE, 0, pick_device(device), RECIPE, DATASET, root,
                   Path(tempfile.gettempdir()))


def _trains_on(spec: Spec, dataset: str | None) -> bool:
    """Whether ``spec`` trains on ``dataset`` (None: the campaign's)."""
    return (spec.dataset or DATASET) == (dataset or DATASET)


def compared(chapter: str | None = None) -> list[Spec]:
    """The specs of ``chapter`` that are set side by side: all but the calibration runs, which
    change the shared schedule (their ``recipe`` sets ``epochs``). A configuration that changes
    something else (V4 with its gates spared weight decay) is one of the chapter's questions."""
    return [spec for spec in specs(chapter) if "epochs" not in spec.recipe]


def run_name(spec: Spec, seed: int) -> str:
    return f"{spec.variant}-seed{seed}"


def _status(folder: Path) -> str | None:
    path = folder / "history.json"
    return json.loads(path.read_text()).get("status") if path.exists() else None


def _finished(folder: Path, variant: str) -> dict:
    """Every finished run of ``variant`` in ``folder``, whatever its seed: name -> history."""
    runs = {}
    for path in sorted(folder.glob(f"{variant}-seed*/history.json")):
        history = json.loads(path.read_text())
        if history.get("status") == "finished" and path.parent.name.rpartition("-seed")[0] == variant:
            runs[path.parent.name] = history
    return runs


def wanted_seeds(spec: Spec, done: dict, seeds=SEEDS) -> tuple[int, ...]:
    """``seeds``, plus two more when a claim ``spec`` takes part in is a close call after them,
    or when a run that starts from ``spec``'s weights (``init_from``) needs those seeds; a spec
    with seeds of its own keeps those."""
    if spec.seeds is not None:
        return tuple(spec.seeds)
    claims = [claim_seeds(done, c, seeds) for c in CLAIMS if spec.variant in (c.variant, c.baseline)]
    transfers = [wanted_seeds(d, done, seeds) for d in PLAN if d.init_from == spec.variant]
    return max(claims + transfers, key=len, default=tuple(seeds))


def collect(chapter: str | None = None, seeds=SEEDS, root: Path | None = None) -> tuple[dict, list[str]]:
    """The finished runs' histories (run name -> history) of the plan's part that ``chapter``
    reads, and the names still pending (:func:`wanted_seeds`). Reads only; trains nothing."""
    folder = session(root, "cpu").results_dir
    done = {}
    for spec in PLAN:  # every claim's runs, so a close call is seen from either side
        done.update(_finished(folder, spec.variant))
    chosen = specs(chapter)
    pending = [run_name(spec, seed) for spec in chosen for seed in wanted_seeds(spec, done, seeds)
               if run_name(spec, seed) not in done]
    variants = {spec.variant for spec in chosen}
    return {n: h for n, h in done.items() if n.rpartition("-seed")[0] in variants}, pending


def by_dataset(done: dict) -> dict[str, dict]:
    """Finished runs (as :func:`collect` returns them) grouped by the data set they trained on,
    in the data sets' alphabetical order: one learning-curve plot each, since accuracies on
    different data do not share an axis."""
    datasets = sorted({h["config"]["dataset"] for h in done.values()})
    return {d: {n: h for n, h in done.items() if h["config"]["dataset"] == d} for d in datasets}


def plot_curves(done: dict) -> None:
    """The learning curves of finished runs, one figure per data set (:func:`by_dataset`), one
    band per configuration over its seeds, titled with the shared recipe's width and epochs."""
    import matplotlib.pyplot as plt

    from . import viz
    recipe = get_recipe(RECIPE)
    for dataset, runs in by_dataset(done).items():
        viz.plot_history(runs, title=f"{dataset}, width {recipe.width}, {recipe.epochs} epochs", legend_cols=3)
        plt.show()


def describe_curves(done: dict, chapter: str | None = None, dataset: str | None = None) -> str:
    """What the learning curves of ``chapter``'s finished configurations on ``dataset`` show, in
    words for a page: the largest test-accuracy gain over the last two epochs (how flat the
    curves end), and, for several configurations, how far apart their means lie after the first
    epoch and after the last, with the one ahead and the one behind (``dataset`` None: the
    campaign's)."""
    import statistics
    variants = [spec.variant for spec in compared(chapter) if _trains_on(spec, dataset)]
    rows = convergence(done, variants)
    if not rows:
        return "no run has finished yet"
    steepest = max(rows, key=lambda row: row["last-2 gain"])
    gain = steepest["last-2 gain"]
    if gain < 0.005:  # nothing a two-decimal number would show as a gain
        text = f"no curve's test accuracy rises over its last two epochs (the most: {gain:+.2f} points)"
    else:
        text = (f"over their last two epochs the curves gain at most {gain:.2f} points of test accuracy "
                f"({steepest['network']}'s steepest seed)")
    if len(rows) == 1:
        return text

    def apart(accuracy):
        ranked = sorted(rows, key=accuracy)
        return (f"{accuracy(ranked[-1]) - accuracy(ranked[0]):.2f} points apart ({ranked[-1]['network']} "
                f"ahead, {ranked[0]['network']} behind)")

    def first_epoch(row):
        return statistics.mean(100 * h["epochs"][0]["test_acc"] for n, h in done.items()
                               if n.rpartition("-seed")[0] == row["network"])

    return (f"{text}; the configurations' means lie {apart(first_epoch)} after the first epoch and "
            f"{apart(lambda row: row['final %'])} after the last")


def progress(pending: list[str], root: Path | None = None) -> dict[str, tuple[int, int]]:
    """For each pending run that has begun: (epochs done, epochs), from its history."""
    folder = session(root, "cpu").results_dir
    started = {}
    for name in pending:
        path = folder / name / "history.json"
        if path.exists():
            history = json.loads(path.read_text())
            started[name] = (len(history["epochs"]), history["config"]["recipe"]["epochs"])
    return started


def step_costs(root: Path | None = None) -> dict:
    """The controlled measurement of the campaign's training steps: each configuration's step
    against ResNet-18's, and the augmentation of a batch against the same step, timed in alternating
    rounds in processor time on this machine with nothing else running
    (``results/performance/campaign_costs.json``, written by ``campaign_costs.py`` there); empty
    until that has been measured."""
    costs_file = session(root, "cpu").results_dir.parents[1] / "performance" / "campaign_costs.json"
    return json.loads(costs_file.read_text()) if costs_file.exists() else {}


def step_time_ratios(root: Path | None = None) -> dict[str, float]:
    """Each configuration's training step time as a ratio to ResNet-18's (:func:`step_costs`);
    empty until measured. Unlike the runs' own throughput, these ratios do not depend on what else
    the machine was doing while the runs trained."""
    costs = step_costs(root)
    if not costs:
        return {}
    return {costs["reference"]: 1.0} | {row["configuration"]: row["step time ratio"] for row in costs["configurations"]}


def device_type(history: dict) -> str:
    """Where a run trained: ``"cpu"`` or ``"cuda"`` (its history's device, without the index)."""
    return history["environment"]["device"].partition(":")[0]


def training_minutes(histories) -> dict[str, float]:
    """Minutes of training in ``histories`` (an iterable of histories) by device type: a GPU's
    minutes are not CPU-minutes, so the two are never summed. Epochs that record their own
    device (a run resumed on another machine) count on it; older histories count whole."""
    minutes = {}
    for history in histories:
        epochs = history["epochs"]
        if not epochs or "device" not in epochs[0]:
            minutes[device_type(history)] = minutes.get(device_type(history), 0.0) + history["train_time"] / 60
            continue
        for epoch in epochs:
            device = epoch["device"].partition(":")[0]
            minutes[device] = minutes.get(device, 0.0) + epoch["train_time"] / 60
    return minutes


def estimate_minutes(done: dict, ratios: dict[str, float]) -> dict[str, tuple[float, str]]:
    """CPU-minutes one run of each configuration takes (one thread, beside another run), and
    what the figure rests on: the mean of its finished runs on a CPU, else its training step's
    time as a ratio to ResNet-18's (``ratios``: :func:`step_time_ratios`) times the minutes per
    unit of that ratio that the finished configurations took, on average. A configuration that
    changes only the recipe (not the network) takes its network's ratio, scaled by its epochs.
    Runs made on a GPU say nothing about CPU time and are left out."""
    import statistics
    minutes = {}
    for name, history in done.items():
        if device_type(history) == "cpu":
            minutes.setdefault(name.rpartition("-seed")[0], []).append(history["train_time"] / 60)
    measured = {variant: statistics.mean(m) for variant, m in minutes.items()}
    per_unit = [measured[v] / ratio for v, ratio in ratios.items() if v in measured]
    estimates = {}
    for spec in PLAN:
        if spec.variant in measured:
            estimates[spec.variant] = (measured[spec.variant], "its finished runs")
        elif per_unit and (measured_as := _same_network(spec, ratios)):
            epochs = get_recipe(RECIPE, **spec.recipe).epochs / get_recipe(RECIPE).epochs
            whose = "its" if measured_as == spec.variant else f"{measured_as}'s"
            estimates[spec.variant] = (ratios[measured_as] * epochs * statistics.mean(per_unit),
                                       f"{whose} step: {ratios[measured_as]:.2f} x ResNet-18's")
    return estimates


def _same_network(spec: Spec, ratios: dict[str, float]) -> str | None:
    """The configuration whose step-time ratio costs ``spec``: itself, else the plan's
    configuration of the same network (model and options) under the shared recipe."""
    if spec.variant in ratios:
        return spec.variant
    return next((other.variant for other in PLAN if other.variant in ratios and not other.recipe
                 and (other.model, other.options) == (spec.model, spec.options)), None)


def _estimates(root: Path | None = None) -> dict[str, tuple[float, str]]:
    """:func:`estimate_minutes` from the finished runs and the committed step-time ratios."""
    return estimate_minutes(collect(root=root)[0], step_time_ratios(root))


def pending_costs(pending: list[str], root: Path | None = None) -> list[dict]:
    """One row per configuration with pending runs: how many, and the CPU-hours they still need
    (:func:`estimate_minutes`, less the epochs a started run has done)."""
    estimates = _estimates(root)
    started = progress(pending, root)
    rows = {}
    for name in pending:
        variant = name.rpartition("-seed")[0]
        minutes, basis = estimates.get(variant, (None, "not measured"))
        row = rows.setdefault(variant, {"configuration": variant, "runs": 0, "CPU-hours": 0.0, "estimated from": basis})
        row["runs"] += 1
        if minutes is None:
            row["CPU-hours"] = None
        elif row["CPU-hours"] is not None:
            epochs_done, epochs = started.get(name, (0, 1))
            row["CPU-hours"] += minutes * (1 - epochs_done / epochs) / 60
    for row in rows.values():
        if row["CPU-hours"] is not None:
            row["CPU-hours"] = round(row["CPU-hours"], 1)
    return list(rows.values())


def status_line(done: dict, pending: list[str]) -> str:
    """How far a chapter's runs have come, in one line (what :func:`show_status` prints)."""
    from .report import count
    finished = f"{count(len(done), 'run')} finished"
    if not pending:
        return f"{finished}, none pending"
    return (f"{finished}, {len(pending)} pending; what the pending ones still need "
            "(CPU-hours at one thread per run, estimated; campaign.pending_costs):")


def show_status(chapter: str) -> tuple[dict, list[str]]:
    """For a chapter's page: the shared recipe, how many of the chapter's runs have finished, what
    the pending ones still need and the command that trains them. Returns :func:`collect`'s
    finished runs and pending names."""
    from . import report
    done, pending = collect(chapter)
    report.show_table([describe_recipe()])
    print(status_line(done, pending))
    if pending:
        report.show_table(pending_costs(pending))
        print(f"to train them: python -m dmcbook campaign run --chapter {chapter} (on a GPU with "
              "bf16 or a CPU with native bf16; one process per core, --minutes N to stop at the last epoch that fits)")
    return done, pending


def _transfer(net, source: Path) -> None:
    from .transfer import init_from_checkpoint
    init_from_checkpoint(net, source)


def ship_best_weights(name: str, root: Path | None = None) -> dict:
    """Ship the best epoch's weights of finished run ``name`` (its ``best.pt``, which git never
    carries) with its history, as checksummed fp16 safetensors, so that a chapter can look inside
    the converged network in any clone; returns the history's ``weights`` record, which names the
    epoch. Run it in the checkout that trained the run."""
    from .experiments import build_network, save_shipped_weights
    from .train import CheckpointError, load_checkpoint, save_json
    folder = session(root, "cpu").results_dir / name
    history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else {}
    if history.get("status") != "finished":
        raise ValueError(f"campaign run {name!r} has not finished in {folder.parent}; ship its weights once it has")
    if not (folder / "best.pt").exists():
        raise CheckpointError(f"{folder / 'best.pt'} is not in this checkout (git never carries it); "
                              f"ship {name}'s weights from the checkout that trained it")
    net = build_network(history)
    best = load_checkpoint(folder / "best.pt", net)
    # a checkpoint counts epochs from 0, a history from 1
    history["weights"] = save_shipped_weights(net, folder) | {"epoch": best["epoch"] + 1}
    save_json(history, folder / "history.json")
    return history["weights"]


def trained_network(name: str, root: Path | None = None):
    """The network of finished run ``name`` holding its shipped weights (:func:`ship_best_weights`),
    in evaluation mode, and its history."""
    from .experiments import build_network, load_shipped_weights
    from .train import CheckpointError
    folder = session(root, "cpu").results_dir / name
    history = json.loads((folder / "history.json").read_text())
    if not history.get("weights"):
        raise CheckpointError(f"campaign run {name!r} ships no weights (only its history); "
                              "campaign.ship_best_weights ships them from the checkout that trained it")
    net = build_network(history)
    load_shipped_weights(net, folder, history["weights"])
    return net.eval(), history


def _restart_without_checkpoint(folder: Path) -> bool:
    """Clear an unfinished run that has epochs but no ``checkpoint.pt`` in this checkout (a fresh
    clone carries its history only): there is nothing to resume from, and the Trainer would refuse
    epochs it cannot account for. Returns whether it cleared the folder; raises
    :class:`RunFolderError` while another process trains there."""
    history = folder / "history.json"
    if (folder / "checkpoint.pt").exists() or not history.exists() or not json.loads(history.read_text())["epochs"]:
        return False  # resumable, or nothing trained yet
    with run_lock(folder):
        if (folder / "checkpoint.pt").exists():  # its trainer wrote one meanwhile
            return False
        remove_run(folder)
    return True


def precision_refusal(device) -> str | None:
    """Why :func:`run` refuses ``device``: its engine would train in another precision than
    :data:`PRECISION` (a CPU without native bf16, a GPU without bf16 such as Colab's T4);
    None where it trains in the campaign's precision."""
    import torch
    from .train import precision_name, select_precision
    precision = precision_name(select_precision(device, "auto"))
    if precision == PRECISION:
        return None
    machine = "CPU" if torch.device(device).type == "cpu" else torch.cuda.get_device_name(device)
    return (f"the campaign's runs train in {PRECISION}, and this {machine} would train them in "
            f"{precision}: its seeds would not pair with the runs made so far. Run it on a GPU "
            "with bf16 (Ampere or later) or on a CPU with native bf16 (flags amx_bf16 or avx512_bf16)")


def check_precision(device) -> None:
    """Raise :func:`precision_refusal`'s reason, if any, before any work starts."""
    if refusal := precision_refusal(device):
        raise ValueError(refusal)


# Runs of one configuration stray by up to ~10 % in length (the performance page's round spread),
# so a run that must finish before a deadline is costed 10 % above its estimate.
ESTIMATE_MARGIN = 1.1


def run(chapter: str | None = None, seeds=SEEDS, root: Path | None = None, device=None,
        limit: int | None = None, deadline: float | None = None, whole_runs: bool = False,
        say=print) -> list[str]:
    """Train the plan's pending runs in order, skipping runs that another process holds or that
    diverged; return the names trained here. The plan is read again after every run, so a
    close call found meanwhile gets its extra seeds. ``deadline`` (a ``time.time()``) stops the
    run in hand, resumable, before an epoch that would end after it, and then the whole loop; a
    new run starts only if its first epoch, as :func:`estimate_minutes` costs it, ends in time:
    a working session that ends at a known time keeps every finished epoch and does not overrun
    it by more than an estimate's error. ``whole_runs`` is for a checkout that ends with the
    session (its checkpoints, which git does not carry, go with it): a run starts only if all
    its remaining epochs, as estimated with :data:`ESTIMATE_MARGIN`, end in time, and a run that
    does not fit is passed over for a later, shorter one."""
    from .experiments import run_experiment
    campaign = session(root, device)
    check_precision(campaign.device)
    by_variant = {spec.variant: spec for spec in PLAN}
    trained, passed = [], set()
    while (limit is None or len(trained) < limit) and (deadline is None or time.time() < deadline):
        _, pending = collect(chapter, seeds, root)
        todo = [n for n in pending if n not in passed]
        if not todo:
            return trained
        name = todo[0]
        passed.add(name)
        if (_status(campaign.results_dir / name) or "").startswith("diverged"):
            say(f"[campaign] {name}: diverged earlier; delete its folder to train it again")
            continue
        variant, _, seed = name.rpartition("-seed")
        spec = by_variant[variant]
        init = None
        if spec.init_from:
            source = campaign.results_dir / run_name(by_variant[spec.init_from], int(seed)) / "best.pt"
            if not source.exists():
                say(f"[campaign] {name}: waits for {source.parent.name} to finish on this machine")
                continue
            init = functools.partial(_transfer, source=source)
        try:
            if _restart_without_checkpoint(campaign.results_dir / name):
                say(f"[campaign] {name}: its checkpoint is not in this checkout (git carries only its history); "
                    "it starts again from the first epoch")
            if deadline is not None and (whole_runs or name not in progress([name], root)):
                minutes, _ = _estimates(root).get(variant, (0.0, None))
                epochs = get_recipe(RECIPE, **spec.recipe).epochs
                if whole_runs:
                    done, _ = progress([name], root).get(name, (0, epochs))
                    needed = ESTIMATE_MARGIN * minutes * (epochs - done) / epochs
                    what = f"its {epochs - done} remaining epochs"
                else:
                    needed, what = minutes / epochs, "its first epoch"
                if time.time() + 60 * needed > deadline:
                    say(f"[campaign] {name}: {what} (about {needed:.0f} min) would end after the deadline")
                    continue
            say(f"[campaign] {name}: {spec.model} {spec.options or ''}")
            history = run_experiment(campaign, name, spec.model, seed=int(seed), model_options=dict(spec.options),
                                     dataset=spec.dataset, init=init, recipe_overrides=dict(spec.recipe),
                                     deadline=deadline)
        except RunFolderError as err:  # another process holds it, or it is another configuration
            say(f"[campaign] {name}: skipped ({err})")
            continue
        epochs = len(history.history["epochs"])
        # the deadline can pass while the data loads, before a first epoch gives an accuracy
        accuracy = f", test accuracy {100 * history.history['final_test_acc']:.2f} %" if epochs else ""
        say(f"[campaign] {name}: {history.history['status']} after {epochs} epochs{accuracy}")
        trained.append(name)
        if history.history["status"] != "finished":  # the deadline stopped it: no epoch fits any more
            return trained
    return trained


@dataclass(frozen=True)
class Claim:
    """A paper's claim that ``variant`` beats (``better``) or trails ``baseline``; ``paper``
    quotes the paper's own numbers and where they stand."""
    chapter: str
    variant: str
    baseline: str
    paper: str
    better: bool = True
    measure: str = "final"  # "final": last epoch's test accuracy; "first": after the first epoch


CLAIMS = (
    Claim("01_dmcnet", "dmcnet34", "resnet34",
          "Table 7, CIFAR-10: DMCNet 96.85 vs Net3 95.65 (our ResNet-34: Net3 with ResNet's shortcut)"),
    Claim("01_dmcnet", "dmcnet34", "dmcnet34-mask1", "Table 3, CIFAR-10: mask8 96.85 vs mask1 95.67"),
    Claim("01_dmcnet", "dmcnet34-mask4", "dmcnet34-mask1", "Table 3, CIFAR-10: mask4 96.38 vs mask1 95.67"),
    Claim("01_dmcnet", "dmcnet34", "dmcnet34-aeA", "Table 4, CIFAR-10: H 96.85 vs A (no AE) 96.56"),
    Claim("01_dmcnet", "dmcnet34", "dmcnet34-net2", "Table 7, CIFAR-10: DMCNet 96.85 vs Net2 (no MMCF) 96.32"),
    Claim("01_dmcnet", "dmcnet34-net2", "dmcnet34-net3", "Table 7, CIFAR-10: Net2 96.32 vs Net3 (neither) 95.65"),
    Claim("02_gdfrnet", "gdfrnet", "resnet34", "Table 9, CIFAR-10: net5 96.88 vs net2 = ResNet-34 96.46"),
    Claim("02_gdfrnet", "gdfrnet", "gdfrnet-net3", "Table 9, CIFAR-10: net5 96.88 vs net3 (no branch) 96.58"),
    Claim("02_gdfrnet", "gdfrnet", "gdfrnet-net4", "Table 9, CIFAR-10: net5 96.88 vs net4 (no FRRB) 96.56"),
    Claim("02_gdfrnet", "gdfrnet", "gdfrnet-r1", "Fig. 8: r = 32 above r = 4 (here r = 8 and 1: same C/r)"),
    Claim("02_gdfrnet", "gdfrnet", "gdfrnet-bilinear", "Fig. 10: transposed above bilinear (curves only)"),
    Claim("02_gdfrnet", "gdfrnet", "gdfrnet-frmA", "Table 4: FRM position C best"),
    Claim("03_resneskt", "resneskt50", "resnest50", "Table 2, ImageNet-10: 81.39 vs ResNeSt-50 80.06"),
    Claim("03_resneskt", "resneskt50", "resnet50", "Table 2, ImageNet-10: 81.39 vs ResNet-50 75.06"),
    Claim("03_resneskt", "resnest50", "resnet50", "Table 2, ImageNet-10: ResNeSt-50 80.06 vs ResNet-50 75.06"),
    Claim("04_drstn", "drstn_v1", "resnet18", "Table 4, CIFAR-10: V1 89.62 vs ResNet-18 84.84 (both with a 7x7 "
          "Conv_1 there; here ResNet-18's is 3x3, so V1 also differs by its kernel: V2 is the like pair)"),
    Claim("04_drstn", "drstn_v2", "resnet18", "Table 4, CIFAR-10: V2 89.44 vs ResNet-18 84.84"),
    Claim("04_drstn", "drstn_v3", "resnet18", "Table 4, CIFAR-10: V3 91.72 vs ResNet-18 84.84"),
    Claim("04_drstn", "drstn_v4", "resnet18", "Table 4, CIFAR-10: V4 91.19 vs ResNet-18 84.84"),
    Claim("04_drstn", "drstn_v5", "resnet18", "Table 4, CIFAR-10: V5 92.29 vs ResNet-18 84.84"),
    Claim("04_drstn", "drstn_v5", "drstn_v1", "Table 4, CIFAR-10: V5 92.29 vs V1 89.62"),
    Claim("04_drstn", "drstn_v1", "drstn_v2", "Table 4, CIFAR-10: V1 (7x7 Conv_1) 89.62 vs V2 (3x3) 89.44; the "
          "kernel alone, which V1 against ResNet-18 also changes here"),
    Claim("04_drstn", "digits-transfer", "digits-scratch", "Sec. 4.3: a transferred start is ahead early",
          measure="first"),
    Claim("04_drstn", "digits-transfer", "digits-scratch",
          "not the paper's: Sec. 4.3 trains nothing from scratch; this book asks whether the transferred start "
          "also ends ahead"),
    Claim("04_drstn", "drstn_v4-no-gate-decay", "drstn_v4",
          "not the paper's: this book asks whether gates spared weight decay train a better V4"),
)


# Each paper's main network against the plain ResNet it is built on (the head-to-head chapter).
MAIN_CLAIMS = tuple(c for c in CLAIMS if (c.variant, c.baseline) in {
    ("dmcnet34", "resnet34"), ("gdfrnet", "resnet34"), ("resneskt50", "resnet50"), ("drstn_v5", "resnet18")})


# The papers' accuracy (%) for the configurations they report, with the data set they used.
PAPER_ACC = {
    "dmcnet34": "96.85 (CIFAR-10)", "dmcnet34-mask1": "95.67 (CIFAR-10)", "dmcnet34-mask4": "96.38 (CIFAR-10)",
    "dmcnet34-aeA": "96.56 (CIFAR-10)", "dmcnet34-net2": "96.32 (CIFAR-10)", "dmcnet34-net3": "95.65 (CIFAR-10)",
    "resnet34": "95.65 (CIFAR-10, DMCNet's Net3); 96.46 (CIFAR-10, GDFRNet's net2)",
    "gdfrnet": "96.88 (CIFAR-10)", "gdfrnet-net3": "96.58 (CIFAR-10)", "gdfrnet-net4": "96.56 (CIFAR-10)",
    "resneskt50": "81.39 (ImageNet-10)", "resnest50": "80.06 (ImageNet-10)", "resnet50": "75.06 (ImageNet-10)",
    "resnet18": "84.84 (CIFAR-10)", "drstn_v1": "89.62 (CIFAR-10)", "drstn_v2": "89.44 (CIFAR-10)",
    "drstn_v3": "91.72 (CIFAR-10)", "drstn_v4": "91.19 (CIFAR-10)",
    "drstn_v5": "92.29 (CIFAR-10); 93.15 (Fashion-MNIST, after transfer)",
}
# A configuration two chapters share, which each chapter's paper reports under its own name.
PAPER_ACC_IN_CHAPTER = {
    ("01_dmcnet", "resnet34"): "95.65 (CIFAR-10, Net3 of Table 7)",
    ("02_gdfrnet", "resnet34"): "96.46 (CIFAR-10, net2 of Table 9)",
}


def _finals(done: dict, variant: str, measure: str = "final") -> dict[int, float]:
    """Test accuracy (%) by seed of ``variant``'s finished runs: after the last epoch
    (``final``) or the first (``first``)."""
    from .stats import seed_of
    return {seed_of(n): 100 * (h["final_test_acc"] if measure == "final" else h["epochs"][0]["test_acc"])
            for n, h in done.items() if n.rpartition("-seed")[0] == variant}


def close_call(done: dict, claim: Claim, seeds=SEEDS) -> bool:
    """Whether the two configurations of ``claim`` lie within one standard deviation of each
    other after ``seeds``: then the claim gets five seeds instead of three."""
    import statistics
    a, b = _finals(done, claim.variant, claim.measure), _finals(done, claim.baseline, claim.measure)
    if not all(s in a and s in b for s in seeds):
        return False
    a, b = [a[s] for s in seeds], [b[s] for s in seeds]
    spread = max(statistics.stdev(a), statistics.stdev(b))
    return abs(statistics.mean(a) - statistics.mean(b)) < spread


def claim_seeds(done: dict, claim: Claim, seeds=SEEDS) -> tuple[int, ...]:
    """The seeds ``claim`` needs on both sides: ``seeds``, and two more for a close call."""
    return (*seeds, max(seeds) + 1, max(seeds) + 2) if close_call(done, claim, seeds) else tuple(seeds)


def _claim_label(claim: Claim) -> str:
    when = "" if claim.measure == "final" else f" ({claim.measure} epoch)"
    return f"{claim.variant} {'>' if claim.better else '<'} {claim.baseline}{when}"


def _paired(done: dict, claim: Claim) -> tuple[dict | None, tuple[int, int, int]]:
    """The paired difference of ``claim`` (:func:`dmcbook.stats.paired_difference`, in points)
    once both configurations have every seed it needs, else None; and the seeds each side has
    and the seeds it needs."""
    from .stats import paired_difference
    a, b = _finals(done, claim.variant, claim.measure), _finals(done, claim.baseline, claim.measure)
    needed = claim_seeds(done, claim)
    counts = (len(a), len(b), len(needed))
    if all(s in a and s in b for s in needed):
        return paired_difference(a, b), counts
    return None, counts


def _claims_of(chapter: str | None, claims) -> list[Claim]:
    return [c for c in (CLAIMS if claims is None else claims) if chapter is None or c.chapter == chapter]


def comparisons(done: dict, chapter: str | None = None, claims=None) -> list[dict]:
    """One row per claim of ``chapter`` (of ``claims``): the paper's claim, the paired difference
    over the seeds both configurations have, its 95 % interval and the verdict, once both have
    all the seeds the claim needs (:data:`SEEDS`, and two more for a close call); until then it
    says how many seeds each has."""
    from .stats import interval_text, verdict
    rows = []
    for claim in _claims_of(chapter, claims):
        diff, (variant_seeds, baseline_seeds, needed) = _paired(done, claim)
        row = {"claim": _claim_label(claim), "paper": claim.paper}
        if diff is not None:
            row.update({"seeds": len(diff["seeds"]), "difference (points)": round(diff["mean"], 2),
                        "95 % interval": interval_text(diff),
                        "verdict": verdict(diff, claim.better)})
        else:
            row.update({"seeds": f"{variant_seeds} / {baseline_seeds} of {needed}",
                        "difference (points)": None, "95 % interval": None,
                        "verdict": "pending (runs not finished)"})
        rows.append(row)
    return rows


def intervals(done: dict, chapter: str | None = None, claims=None, measure: str | None = None) -> list[dict]:
    """The claims of ``chapter`` that have a verdict, as numbers for
    :func:`dmcbook.viz.plot_intervals`: the claim, the mean paired difference and its 95 %
    interval (points, configuration minus baseline) and the verdict.
    ``measure`` keeps only the claims on that measure (``"final"`` or ``"first"``), so that one
    plot's scale suits all its claims."""
    from .stats import verdict
    rows = []
    for claim in _claims_of(chapter, claims):
        if measure is not None and claim.measure != measure:
            continue
        diff, _ = _paired(done, claim)
        if diff is not None:
            rows.append({"claim": _claim_label(claim), "difference": diff["mean"], "low": diff["low"],
                         "high": diff["high"], "verdict": verdict(diff, claim.better)})
    return rows


def results_table(done: dict, chapter: str | None = None) -> list[dict]:
    """One row per configuration of ``chapter`` with finished runs: parameters, final and best
    test accuracy (mean ± std over seeds, %), seeds, the paper's accuracy where it reports one
    (on its own data), CPU-minutes per run (of the runs made on a CPU; GPU-minutes apart, where a
    run was made on a GPU) and precision."""
    import statistics
    from .experiments import mean_std
    rows = []
    for spec in specs(chapter):
        runs = [h for n, h in done.items() if n.rpartition("-seed")[0] == spec.variant]
        if not runs:
            continue
        row = {"configuration": spec.variant, "data": runs[0]["config"]["dataset"],
               "params (M)": round(runs[0]["config"]["parameters"] / 1e6, 3),
               "final acc % (converge)": mean_std([h["final_test_acc"] for h in runs]),
               "best acc %": mean_std([h["best_test_acc"] for h in runs]), "seeds": len(runs),
               "paper %": PAPER_ACC_IN_CHAPTER.get((chapter, spec.variant), PAPER_ACC.get(spec.variant))}
        cpu = [h["train_time"] / 60 for h in runs if device_type(h) == "cpu"]
        gpu = [h["train_time"] / 60 for h in runs if device_type(h) != "cpu"]
        row["CPU-min / run"] = round(statistics.mean(cpu), 1) if cpu else None
        if gpu:
            row["GPU-min / run"] = round(statistics.mean(gpu), 1)
        rows.append(row | {"precision": runs[0]["engine"]["precision"]})
    return rows


def final_accuracies(done: dict, chapter: str | None = None, dataset: str | None = None, *,
                     planned: bool = False) -> dict[str, list[float]]:
    """Each configuration of ``chapter`` trained under the shared recipe (:func:`compared`) with
    finished runs on ``dataset``, in plan order: the final test accuracy (%) of each seed, for
    :func:`dmcbook.viz.plot_results`. With ``planned``, a configuration without a finished run
    is kept with no values (the plot shows it as pending). ``dataset`` None: the campaign's."""
    dataset = dataset or DATASET
    finals = {}
    for spec in compared(chapter):
        runs = {n: h for n, h in done.items() if n.rpartition("-seed")[0] == spec.variant
                and h["config"]["dataset"] == dataset}
        if runs or (planned and _trains_on(spec, dataset)):
            finals[spec.variant] = list(_finals(runs, spec.variant).values())
    return finals


def costs(spec: Spec, input_size=(1, 28, 28)) -> dict:
    """Parameters and multiply-accumulates of ``spec`` as the campaign trains it."""
    from .models.registry import create_model
    from .profile import count_flops, count_params
    net = create_model(spec.model, 10, input_size[0], "cifar", width=get_recipe(RECIPE).width, **spec.options)
    return {"params (M)": round(count_params(net) / 1e6, 3),
            "MMACs": round(count_flops(net, tuple(input_size))["macs"] / 1e6, 1)}


def head_to_head(done: dict, chapter: str | None = H2H, step_ratios: dict | None = None, *,
                 planned: bool = False) -> list[dict]:
    """One row per configuration of ``chapter`` with finished runs: its costs, its training
    speed and its final test accuracy over seeds (``acc`` and ``std`` in %, for plotting). With
    ``planned``, a configuration without a finished run has a row too, its costs known and its
    ``acc``, ``std`` and speed None (0 seeds).

    Speed comes twice. ``step time ×`` is the controlled measurement (``step_ratios``, from
    :func:`step_time_ratios`; None where not measured), the one to compare networks by. ``train
    img/s`` is what the runs made on a CPU recorded: the fastest epoch of any of its seeds (whatever
    else ran on the machine only slows an epoch, and one seed's whole run can share the machine
    with heavier work than another's), which still depends on what shared the machine."""
    import statistics
    rows = []
    for spec in compared(chapter):
        finals = list(_finals(done, spec.variant).values())
        if not finals and not planned:
            continue
        speeds = [e["images_per_sec"] for n, h in done.items() if n.rpartition("-seed")[0] == spec.variant
                  and device_type(h) == "cpu" for e in h["epochs"]]
        rows.append({"model": spec.variant, **costs(spec), "step time ×": (step_ratios or {}).get(spec.variant),
                     "train img/s": round(max(speeds)) if speeds else None,
                     "acc": statistics.mean(finals) if finals else None,
                     "std": (statistics.stdev(finals) if len(finals) > 1 else 0.0) if finals else None,
                     "seeds": len(finals)})
    return rows


def pareto(rows: list[dict], cost: str, higher_is_better: bool = False, acc: str = "acc") -> list[str]:
    """The models no other model beats on both ``cost`` and accuracy (the Pareto front), cheapest
    first. ``higher_is_better`` for a cost that is a speed (images per second). Rows whose cost
    or accuracy is unknown (None: not measured, or no run finished) are left out."""
    sign = -1 if higher_is_better else 1
    rows = [r for r in rows if r[cost] is not None and r[acc] is not None]

    def dominated(row):
        return any(sign * o[cost] <= sign * row[cost] and o[acc] >= row[acc]
                   and (sign * o[cost] < sign * row[cost] or o[acc] > row[acc]) for o in rows)
    front = sorted((r for r in rows if not dominated(r)), key=lambda r: sign * r[cost])
    return [r["model"] for r in front]


def verdict_summary(rows: list[dict]) -> str:
    """One sentence on a table of :func:`comparisons`: how many claims are decided, and how."""
    from .stats import VERDICTS
    decided = [r["verdict"] for r in rows if r["verdict"] in VERDICTS]
    counts = ", ".join(f"{decided.count(v)} {v}" for v in VERDICTS)
    waiting = len(rows) - len(decided)
    return (f"{len(decided)} of {len(rows)} claims have all their seeds ({counts})"
            + (f"; {waiting} wait for runs still to be trained" if waiting else ""))


def describe_claim(done: dict, claim: Claim) -> str:
    """``claim`` in words, for prose: the paired difference, its seeds, its 95 % interval and
    the verdict, or how many seeds each side has while it waits for the rest."""
    from .stats import interval_text, verdict
    diff, (variant_seeds, baseline_seeds, needed) = _paired(done, claim)
    if diff is None:
        return f"pending until both sides have all {needed} seeds (now {variant_seeds} and {baseline_seeds})"
    return (f"{diff['mean']:+.2f} points over {len(diff['seeds'])} seeds "
            f"(95 % interval {interval_text(diff)}): {verdict(diff, claim.better)}")


def earns_its_cost(done: dict, step_ratios: dict | None = None) -> list[dict]:
    """For each paper's main network against its plain ResNet: the accuracy gained (paired, with
    its interval), what it costs (MACs and training time per image, as ratios to the ResNet; the
    time from the controlled step times ``step_ratios``, :func:`step_time_ratios`) and the
    verdict of the gain."""
    by_model = {row["model"]: row for row in head_to_head(done, chapter=None, step_ratios=step_ratios)}
    rows = []
    for claim, compared in zip(MAIN_CLAIMS, comparisons(done, claims=MAIN_CLAIMS)):
        a, b = by_model.get(claim.variant), by_model.get(claim.baseline)
        rows.append({"network": claim.variant, "against": claim.baseline,
                     "gain (points)": compared.get("difference (points)"), "95 % interval": compared.get("95 % interval"),
                     "MACs ×": round(a["MMACs"] / b["MMACs"], 2) if a and b else None,
                     "time / image ×": round(a["step time ×"] / b["step time ×"], 2)
                     if a and b and a["step time ×"] and b["step time ×"] else None,
                     "verdict": compared["verdict"]})
    return rows


def convergence(done: dict, variants) -> list[dict]:
    """Per variant with finished runs: epochs, seeds, mean and lowest final test accuracy (%), and
    the largest gain over seeds in the last epoch and in the last two (points)."""
    import statistics
    rows = []
    for variant in variants:
        runs = [h for n, h in done.items() if n.rpartition("-seed")[0] == variant]
        if runs:
            finals = [100 * h["final_test_acc"] for h in runs]
            rows.append({"network": variant, "epochs": len(runs[0]["epochs"]), "seeds": len(runs),
                         "final %": statistics.mean(finals), "lowest %": min(finals),
                         "last-epoch gain": max(plateau(h, 1) for h in runs),
                         "last-2 gain": max(plateau(h, 2) for h in runs)})
    return rows


def plateau(history: dict, last: int = 2) -> float:
    """Test-accuracy points gained over the last ``last`` epochs (convergence: under 0.2)."""
    accs = [100 * e["test_acc"] for e in history["epochs"]]
    return accs[-1] - accs[-1 - last]


def describe_recipe() -> dict:
    """The budget as one table row: what a chapter states once (CPU-minutes come from the runs)."""
    recipe = get_recipe(RECIPE)
    return {"data": "Fashion-MNIST, 60 000 train / 10 000 test", "width": recipe.width, "epochs": recipe.epochs,
            "batch": recipe.batch_size, "lr": f"{recipe.lr} (warm-up {recipe.warmup_epochs}, cosine)",
            "label smoothing": recipe.label_smoothing, "augment": "3-px crop + flip"}
