"""fp32 against bf16 autocast on the CPU: the budget preset (ResNet-18 at width 16 on 10 000
Fashion-MNIST training images, 4 epochs, the full test set), three seeds each.

Run from the repository root: ``python results/performance/precision_runs.py``. Each run writes
``results/performance/precision/<precision>-seed<N>/history.json`` (finished runs are kept, not
retrained) and the script prints the side-by-side table, also written to ``precision.md``.
"""
from pathlib import Path

import torch

import dmcbook
from dmcbook.data import get_data
from dmcbook.experiments import load_runs, summarize
from dmcbook.report import markdown_table
from dmcbook.train import Trainer, get_recipe

HERE = Path(__file__).parent / "precision"
SEEDS = (0, 1, 2)

recipe = get_recipe("budget")
for seed in SEEDS:
    data = get_data("fashion-mnist", batch_size=recipe.batch_size, augment=recipe.augment,
                    train_subset=recipe.train_subset, test_subset=recipe.test_subset, seed=seed)
    for precision in ("fp32", "bf16"):
        out = HERE / f"{precision}-seed{seed}"
        if (out / "history.json").exists() and '"status": "finished"' in (out / "history.json").read_text():
            continue
        torch.manual_seed(seed)
        model = dmcbook.create_model("resnet18", data.num_classes, data.in_chans, "cifar", width=recipe.width)
        Trainer(model, data, recipe, out_dir=out, seed=seed, progress="epochs", precision=precision,
                resume=True, run_config=dict(run=out.name, mode="budget", model_options=dict(width=recipe.width),
                                             stem="cifar", in_chans=data.in_chans,
                                             num_classes=data.num_classes)).fit()

runs = load_runs(HERE)
rows = summarize(runs)
for row in rows:
    histories = [h for name, h in runs.items() if name.startswith(row["variant"] + "-")]
    row["train img/s"] = round(sum(h["epochs"][-1]["images_per_sec"] for h in histories) / len(histories))
    row["precision"] = histories[0]["engine"]["precision"]
table = markdown_table(rows)
(Path(__file__).parent / "precision.md").write_text(table + "\n")
print(table)
