"""``python -m dmcbook list | train | eval | profile | bench``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import DatasetUnavailable, get_data, list_datasets
from .models.registry import create_model, list_models
from .train import CheckpointError, Trainer, TrainingDiverged, evaluate, get_recipe, list_recipes, load_checkpoint


def _model_option(text: str):
    """``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true, lists), else as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value



def cmd_list(args) -> None:
    print("models:   " + ", ".join(list_models()))
    print("datasets: " + ", ".join(list_datasets()))
    print("recipes:  " + ", ".join(list_recipes()))


def cmd_train(args) -> None:
    overrides = {k: v for k, v in dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                       width=args.width, train_subset=args.train_subset).items() if v is not None}
    recipe = get_recipe(args.preset, **overrides)
    data = get_data(args.dataset, root=args.data_root, image_size=recipe.image_size, in_chans=args.in_chans,
                    batch_size=recipe.batch_size, augment=recipe.augment, train_subset=recipe.train_subset,
                    test_subset=recipe.test_subset, seed=args.seed)
    options = dict(args.option or [])
    if recipe.width is not None:
        options.setdefault("width", recipe.width)
    import torch
    torch.manual_seed(args.seed)
    model = create_model(args.model, data.num_classes, data.in_chans, args.stem, **options)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}-{args.preset}-seed{args.seed}")
    print(f"{args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) on {data.describe()}")
    print(f"recipe {recipe.name}: {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr}. {recipe.note}")
    run_config = dict(run=out.name, mode=args.preset, model_options=options, stem=args.stem,
                      in_chans=data.in_chans, num_classes=data.num_classes)
    history = Trainer(model, data, recipe, out_dir=out, seed=args.seed, device=args.device, resume=args.resume,
                      run_config=run_config).fit()
    print(f"final test accuracy {100 * history['final_test_acc']:.2f} % "
          f"(best {100 * history['best_test_acc']:.2f} % at epoch {history['best_epoch']}); "
          f"training time {history['train_time']:.0f} s; history in {out / 'history.json'}")


def cmd_eval(args) -> None:
    ckpt = load_checkpoint(args.checkpoint)
    if "config" in ckpt:
        config = json.loads(ckpt["config"])
    elif "history" in ckpt:
        config = json.loads(ckpt["history"])["config"]
    else:
        raise CheckpointError(f"{args.checkpoint} does not say which model wrote it")
    dataset = args.dataset or config["dataset"]
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
    rows = []
    for name in args.models:
        model = create_model(name, args.num_classes, args.input_size[0], args.stem, **dict(args.option or []))
        flops = count_flops(model, args.input_size)
        rows.append({"model": name, "params (M)": round(count_params(model) / 1e6, 2),
                     "GMACs": round(flops["macs"] / 1e9, 3), "GFLOPs": round(flops["flops"] / 1e9, 3)})
    print(f"input {tuple(args.input_size)}, {args.num_classes} classes, stem {args.stem}; "
          "MACs = multiply-accumulates (what thop and the papers call FLOPs)")
    print(markdown_table(rows))


def cmd_bench(args) -> None:
    from .profile import benchmark
    from .report import markdown_table
    rows = benchmark(args.models, baseline=args.baseline, input_size=args.input_size, batch_size=args.batch_size,
                     steps=args.steps, num_classes=args.num_classes, stem=args.stem, device=args.device,
                     **dict(args.option or []))
    print(f"input {tuple(args.input_size)}, batch {args.batch_size}; time ratio = time per image / {args.baseline}'s")
    print(markdown_table(rows, digits=3))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dmcbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the registered models, data sets and recipes").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a model; prints progress and the final test accuracy")
    train.add_argument("--model", default="resnet18", help="a name from `list` (default: resnet18)")
    train.add_argument("--dataset", default="digits", help="a name from `list` (default: digits, always offline)")
    train.add_argument("--preset", default="budget", help="a recipe from `list` (default: budget)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--width", type=int, help="base stage width (64 = the paper's size)")
    train.add_argument("--train-subset", type=int, help="train on this many images")
    train.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar")
    train.add_argument("--in-chans", type=int, choices=(1, 3), help="convert images to this many channels")
    train.add_argument("--option", type=_model_option, action="append", metavar="KEY=VALUE",
                       help="a model option, e.g. --option mask=mask8 (repeatable)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="run folder (default runs/MODEL-DATASET-PRESET-seedN)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--data-root", help="where the data set lives (else DMCBOOK_DATA, then the defaults)")
    train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    train.set_defaults(func=cmd_train)

    evaluate_ = sub.add_parser("eval", help="test accuracy of a checkpoint (checkpoint.pt or best.pt)")
    evaluate_.add_argument("checkpoint")
    evaluate_.add_argument("--dataset", help="default: the one it was trained on")
    evaluate_.add_argument("--data-root")
    evaluate_.add_argument("--device")
    evaluate_.set_defaults(func=cmd_eval)

    for name, func, helptext in (("profile", cmd_profile, "parameters, MACs and FLOPs"),
                                 ("bench", cmd_bench, "training and inference speed as a ratio to a baseline")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("models", nargs="+")
        p.add_argument("--input-size", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
        p.add_argument("--num-classes", type=int, default=10)
        p.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar")
        p.add_argument("--option", type=_model_option, action="append", metavar="KEY=VALUE")
        p.set_defaults(func=func)
        if name == "bench":
            p.add_argument("--baseline", default="resnet34")
            p.add_argument("--batch-size", type=int, default=32)
            p.add_argument("--steps", type=int, default=5)
            p.add_argument("--device")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, DatasetUnavailable, CheckpointError, TrainingDiverged) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `--resume` continues from the last epoch's checkpoint", file=sys.stderr)
        return 130
    return 0
