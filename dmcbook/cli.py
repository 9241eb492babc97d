"""``python -m dmcbook list | train | eval | profile | bench | campaign``."""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time

from . import distributed
from .data import SPECS, DatasetUnavailable, get_data, list_datasets
from .models.registry import create_model, list_models
from .report import count
from .runs import check_writable, has_run
from .train import (PRECISIONS, CheckpointError, Trainer, TrainingDiverged, evaluate, get_recipe, list_recipes,
                    load_checkpoint, pick_device)


def _model_option(text: str):
    """``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true, lists), else as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --option keys that are not model options, each with what sets it, per command (passed on,
# they would collide with create_model's or benchmark's own arguments).
_MODEL_ARGUMENTS = dict(name="the positional model names", num_classes="--num-classes",
                        in_chans="the C of --input-size", stem="--stem")
RESERVED_OPTIONS = dict(
    train=dict(_MODEL_ARGUMENTS, name="--model", num_classes="the data set (--dataset)", in_chans="--in-chans"),
    profile=_MODEL_ARGUMENTS,
    bench=dict(_MODEL_ARGUMENTS, names="the positional model names", baseline="--baseline",
               input_size="--input-size", batch_size="--batch-size", steps="--steps", device="--device",
               rounds="bench itself (no flag)"),
)


def _model_options(args) -> dict:
    """The --option pairs as a dict, after refusing the keys that another flag sets."""
    options = dict(args.option or [])
    for key in options:
        if key in RESERVED_OPTIONS[args.command]:
            raise ValueError(f"--option {key}=...: {key} is not a model option here; it is set by "
                             f"{RESERVED_OPTIONS[args.command][key]}")
    return options


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def _float(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not (math.isfinite(value) and (value > 0 or allow_zero and value == 0)):
        kind = "non-negative" if allow_zero else "positive"
        raise argparse.ArgumentTypeError(f"must be a {kind} finite number; got {text}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, allow_zero=False)


def _non_negative_float(text: str) -> float:
    return _float(text, allow_zero=True)


def _device(text: str) -> str:
    """cpu, cuda, cuda:N or mps, refused here when this machine lacks it (torch itself fails late)."""
    import torch
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return text
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA GPU (torch sees none); use cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return text
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("'mps': this machine has no Apple GPU; use cpu")
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected cpu, cuda, cuda:N or mps")



def cmd_list(args) -> None:
    print("models:   " + ", ".join(list_models()))
    print("datasets: " + ", ".join(list_datasets()))
    print("recipes:  " + ", ".join(list_recipes()))


def cmd_train(args) -> None:
    # Under torchrun every process runs this command: join them, and let rank 0 alone speak.
    context = distributed.init_from_env()
    say = print if context.is_main else (lambda *_: None)
    out = check_writable(args.out or f"runs/{args.model}-{args.dataset}-{args.preset}-seed{args.seed}")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: choose one")
    if args.resume and not has_run(out):
        raise ValueError(f"--resume: {out} holds no run to continue; drop --resume to start one there")
    options = _model_options(args)
    overrides = {k: v for k, v in dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                       width=args.width, train_subset=args.train_subset,
                                       weight_decay=args.weight_decay).items() if v is not None}
    if args.no_decay:
        overrides["no_decay"] = tuple(args.no_decay)
    recipe = get_recipe(args.preset, **overrides)
    data = get_data(args.dataset, root=args.data_root, image_size=recipe.image_size, in_chans=args.in_chans,
                    batch_size=recipe.batch_size, augment=recipe.augment, train_subset=recipe.train_subset,
                    test_subset=recipe.test_subset, seed=args.seed)
    if recipe.width is not None:
        options.setdefault("width", recipe.width)
    import torch
    torch.manual_seed(args.seed)
    model = create_model(args.model, data.num_classes, data.in_chans, args.stem, **options)
    say(f"{args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) on {data.describe()}")
    say(f"recipe {recipe.name}: {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}. {recipe.note}")
    run_config = dict(run=out.name, mode=args.preset, model_options=options, stem=args.stem,
                      in_chans=data.in_chans, num_classes=data.num_classes)
    trainer = Trainer(model, data, recipe, out_dir=out, seed=args.seed, device=args.device, resume=args.resume,
                      overwrite=args.overwrite, run_config=run_config, precision=args.precision,
                      compile=args.compile)
    if context.active:
        say(f"{context.world} processes (DistributedDataParallel), {recipe.batch_size // context.world} images each per step")
    say(f"engine: {trainer.history['engine']}")
    try:
        history = trainer.fit()
    except TrainingDiverged as err:
        raise TrainingDiverged(f"{err}. To start afresh: {_rerun_command(args.argv, recipe.lr / 10)}") from None
    distributed.finish()
    say(f"final test accuracy {100 * history['final_test_acc']:.2f} % "
          f"(best {100 * history['best_test_acc']:.2f} % at epoch {history['best_epoch']}); "
          f"training time {history['train_time']:.0f} s; history in {out / 'history.json'}")


def _rerun_command(argv: list[str], lr: float) -> str:
    """The same train command with --overwrite and a lower --lr instead of --resume and --lr."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--lr":
            skip = True
        elif not (arg.startswith("--lr=") or arg in ("--resume", "--overwrite")):
            kept.append(arg)
    return shlex.join(["python", "-m", "dmcbook", *kept, "--overwrite", "--lr", f"{lr:.3g}"])


# What the CLI's train command adds to a run's config (run_config) and eval needs to rebuild the model.
RUN_CONFIG_KEYS = ("in_chans", "num_classes", "stem", "model_options")


def cmd_eval(args) -> None:
    ckpt = load_checkpoint(args.checkpoint)
    if "config" in ckpt:
        config = json.loads(ckpt["config"])
    elif "history" in ckpt:
        config = json.loads(ckpt["history"])["config"]
    else:
        raise CheckpointError(f"{args.checkpoint} does not say which model wrote it")
    missing = [key for key in RUN_CONFIG_KEYS if key not in config]
    if missing:  # a Trainer created in Python without run_config records no model arguments
        raise CheckpointError(
            f"{args.checkpoint} does not record {', '.join(missing)} (it was written by a Trainer without "
            "run_config), so eval cannot rebuild its model; evaluate it in Python: build the model as it was "
            "trained, then dmcbook.train.load_checkpoint(path, model) and dmcbook.train.evaluate(model, loader)")
    dataset = args.dataset or config["dataset"]
    if dataset in SPECS and SPECS[dataset].num_classes != config["num_classes"]:
        raise ValueError(f"{dataset} has {SPECS[dataset].num_classes} classes, but the model in {args.checkpoint} "
                         f"predicts {config['num_classes']} (it was trained on {config['dataset']})")
    data = get_data(dataset, root=args.data_root, image_size=config["recipe"].get("image_size"),
                    in_chans=config["in_chans"], batch_size=256)
    model = create_model(config["model"], config["num_classes"], config["in_chans"], config["stem"],
                         **config["model_options"])
    load_checkpoint(args.checkpoint, model)
    result = evaluate(model, data.test_loader, args.device)
    print(f"{config['model']} on {data.describe()}: test loss {result['loss']:.4f}, accuracy {100 * result['acc']:.2f} %")


def cmd_profile(args) -> None:
    from .profile import count_flops, count_params
    from .report import markdown_table
    options = _model_options(args)
    rows = []
    for name in args.models:
        model = create_model(name, args.num_classes, args.input_size[0], args.stem, **options)
        flops = count_flops(model, args.input_size)
        rows.append({"model": name, "params (M)": round(count_params(model) / 1e6, 2),
                     "GMACs": round(flops["macs"] / 1e9, 3), "GFLOPs": round(flops["flops"] / 1e9, 3)})
    print(f"input {tuple(args.input_size)}, {args.num_classes} classes, stem {args.stem}; "
          "MACs = multiply-accumulates (what thop and the papers call FLOPs)")
    print(markdown_table(rows))


def cmd_bench(args) -> None:
    from .profile import augmentation_throughput, benchmark, machine
    from .report import markdown_table
    from .train import save_json
    options = _model_options(args)
    before = machine()
    rows = benchmark(args.models, baseline=args.baseline, input_size=args.input_size, batch_size=args.batch_size,
                     steps=args.steps, num_classes=args.num_classes, stem=args.stem, device=args.device,
                     **options)
    augmentation = [augmentation_throughput(name, "paper", device=args.device) for name in ("cifar10", "fashion-mnist")]
    after = machine()
    print(f"{before['cpu']}, {before['cores']} cores, {before.get('gpu', 'no GPU')}; load average "
          f"{before['load_average_1_5_15'][0]} before, {after['load_average_1_5_15'][0]} after (a loaded machine "
          "runs slower: compare the ratios, not the absolute numbers, across machines)")
    print(f"input {tuple(args.input_size)}, batch {args.batch_size}; train time ratio = time per image / "
          f"{args.baseline}'s; engine / bare = the Trainer's step against a bare loop on the same model")
    print(markdown_table(rows, digits=3))
    print("augmentation (paper level) against the models above:")
    print(markdown_table(augmentation))
    if args.json:
        save_json(dict(machine=before, machine_after=after, input_size=list(args.input_size),
                       batch_size=args.batch_size, steps=args.steps, options=options,
                       models=rows, augmentation=augmentation), args.json)
        print(f"results in {args.json}")


def cmd_campaign(args) -> None:
    from . import campaign
    if args.runs and args.action != "ship":
        raise ValueError(f"campaign {args.action} takes no run names (only ship does); got {' '.join(args.runs)}")
    if args.action == "run":
        deadline = None if args.minutes is None else time.time() + 60 * args.minutes
        if args.whole_runs and deadline is None:
            raise ValueError("--whole-runs needs --minutes: it starts only the runs that finish within them")
        trained = campaign.run(args.chapter, seeds=args.seeds, device=args.device, limit=args.limit,
                               deadline=deadline, whole_runs=args.whole_runs)
        print(f"[campaign] trained {len(trained)} runs here; status: python -m dmcbook campaign status")
        return
    if args.action == "ship":
        if not args.runs:
            raise ValueError("ship needs the names of finished runs, e.g. campaign ship dmcnet34-seed0")
        for name in args.runs:
            weights = campaign.ship_best_weights(name)
            print(f"[campaign] {name}: best weights (epoch {weights['epoch']}) shipped as {weights['file']}, "
                  f"sha256 {weights['sha256'][:12]}...; commit them with its history")
        return
    done, pending = campaign.collect(args.chapter, seeds=args.seeds)
    minutes = campaign.training_minutes(done.values())
    spent = " and ".join(f"{m:.0f} {'CPU' if device == 'cpu' else 'GPU'}-minutes" for device, m in sorted(minutes.items()))
    print(f"{count(len(done), 'run')} finished ({spent or '0 CPU-minutes'} of training), "
          f"{len(pending)} pending")
    started = campaign.progress(pending)
    for name in pending:
        print(f"  pending {name}" + (" ({}/{} epochs done)".format(*started[name]) if name in started else ""))
    rows = campaign.pending_costs(pending)
    known = [row["CPU-hours"] for row in rows if row["CPU-hours"] is not None]
    unknown = [row["configuration"] for row in rows if row["CPU-hours"] is None]
    if known:
        print(f"about {sum(known):.0f} CPU-hours still to train at one thread per run"
              + (f"; not yet measured: {', '.join(unknown)}" if unknown else ""))
    refusal = campaign.precision_refusal(pick_device(args.device))
    print(f"campaign run would refuse this machine: {refusal}" if refusal
          else f"this machine trains in {campaign.PRECISION}: campaign run can train here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dmcbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the registered models, data sets and recipes").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a model; prints progress and the final test accuracy")
    train.add_argument("--model", default="resnet18", help="a name from `list` (default: resnet18)")
    train.add_argument("--dataset", default="digits", help="a name from `list` (default: digits, always offline)")
    train.add_argument("--preset", default="budget", help="a recipe from `list` (default: budget)")
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--lr", type=_positive_float)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--weight-decay", type=_non_negative_float)
    train.add_argument("--no-decay", nargs="+", metavar="MODULE",
                       help="train the parameters under modules of these names without weight decay "
                            "(e.g. soft_threshold: DRSTN's threshold networks)")
    train.add_argument("--width", type=_positive_int, help="base stage width (64 = the paper's size)")
    train.add_argument("--train-subset", type=_positive_int, help="train on this many images")
    train.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar")
    train.add_argument("--in-chans", type=int, choices=(1, 3), help="convert images to this many channels")
    train.add_argument("--option", type=_model_option, action="append", metavar="KEY=VALUE",
                       help="a model option, e.g. --option mask=mask8 (repeatable)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="run folder (default runs/MODEL-DATASET-PRESET-seedN)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--overwrite", action="store_true",
                       help="delete the run already in --out and start afresh (without it, an existing run is refused)")
    train.add_argument("--data-root", help="where the data set lives (else DMCBOOK_DATA, then the defaults)")
    train.add_argument("--device", type=_device, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: bf16 on GPUs and on CPUs with native bf16, fp16 on older GPUs, else fp32")
    train.add_argument("--compile", action="store_true", help="train through torch.compile (on a CPU it pays only for "
                       "networks with many small operations: see the book's performance page)")
    train.set_defaults(func=cmd_train)

    evaluate_ = sub.add_parser("eval", help="test accuracy of a checkpoint (checkpoint.pt or best.pt)")
    evaluate_.add_argument("checkpoint")
    evaluate_.add_argument("--dataset", help="default: the one it was trained on")
    evaluate_.add_argument("--data-root")
    evaluate_.add_argument("--device", type=_device)
    evaluate_.set_defaults(func=cmd_eval)

    for name, func, helptext in (("profile", cmd_profile, "parameters, MACs and FLOPs"),
                                 ("bench", cmd_bench, "training and inference speed as a ratio to a baseline")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("models", nargs="+")
        p.add_argument("--input-size", type=_positive_int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
        p.add_argument("--num-classes", type=_positive_int, default=10)
        p.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar")
        p.add_argument("--option", type=_model_option, action="append", metavar="KEY=VALUE")
        p.set_defaults(func=func)
        if name == "bench":
            p.add_argument("--baseline", default="resnet34")
            p.add_argument("--batch-size", type=_positive_int, default=128)
            p.add_argument("--steps", type=_positive_int, default=10)
            p.add_argument("--device", type=_device)
            p.add_argument("--json", help="also write the results (with the machine named) to this JSON file")
    campaign = sub.add_parser("campaign", help="the converged comparisons of every chapter (hours of CPU; resumable)")
    campaign.add_argument("action", choices=("run", "status", "ship"),
                          help="run: train the missing runs in order (start one process per core); status: list them; "
                               "ship: keep finished runs' best weights with their histories, for git")
    campaign.add_argument("runs", nargs="*", help="ship: the finished runs (e.g. dmcnet34-seed0)")
    campaign.add_argument("--chapter", help="only the runs this chapter reads (e.g. 04_drstn, 05_head_to_head)")
    campaign.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    campaign.add_argument("--limit", type=_positive_int, help="stop after training this many runs")
    campaign.add_argument("--minutes", type=_positive_int,
                          help="stop before this many minutes have passed, at the end of an epoch (resumable)")
    campaign.add_argument("--whole-runs", action="store_true",
                          help="with --minutes: start only runs estimated to finish in time, for a checkout "
                               "that ends with the session (its checkpoints go with it)")
    campaign.add_argument("--device", type=_device)
    campaign.set_defaults(func=cmd_campaign)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except (ValueError, DatasetUnavailable, CheckpointError, TrainingDiverged, OSError) as err:
        if isinstance(err, OSError) and err.strerror:  # without the "[Errno N]" prefix
            err = err.strerror + (f": {err.filename}" if err.filename else "")
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `--resume` continues from the last epoch's checkpoint", file=sys.stderr)
        return 130
    return 0
