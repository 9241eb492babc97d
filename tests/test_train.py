import json
import math
import time

import pytest
import torch

import dmcbook
from dmcbook.data import get_data
from dmcbook.train import CheckpointError, Trainer, TrainingDiverged, get_recipe, load_checkpoint


@pytest.fixture(scope="module")
def digits():
    return get_data("digits", batch_size=64, augment="none")


def small_model(seed=0, name="resnet18"):
    torch.manual_seed(seed)
    return dmcbook.create_model(name, 10, 1, "cifar", width=8)


RECIPE = dict(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=None, width=8)


def test_engine_learns_digits_above_90_percent_quickly(digits):
    start = time.perf_counter()
    history = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False).fit()
    assert history["final_test_acc"] >= 0.90, history["epochs"]
    assert time.perf_counter() - start < 60
    assert history["status"] == "finished" and len(history["epochs"]) == 3


def test_resumed_run_equals_an_uninterrupted_one(digits, tmp_path):
    recipe = get_recipe("budget", **RECIPE)
    Trainer(small_model(), digits, recipe, out_dir=tmp_path, progress=False).fit(stop_after=1)
    assert json.loads((tmp_path / "history.json").read_text())["status"] == "running"
    resumed = Trainer(small_model(seed=123), digits, recipe, out_dir=tmp_path, resume=True, progress=False).fit()
    straight = Trainer(small_model(), digits, recipe, progress=False).fit()
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[e[k] for k in keys] for e in resumed["epochs"]] == [[e[k] for k in keys] for e in straight["epochs"]]


def test_checkpoint_round_trip(digits, tmp_path):
    model = small_model()
    recipe = get_recipe("smoke", train_subset=None, width=8)
    history = Trainer(model, digits, recipe, out_dir=tmp_path, progress=False).fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "best_acc", "history"} <= set(ckpt)
    copy = small_model(seed=7)
    load_checkpoint(tmp_path / "best.pt", copy)
    for a, b in zip(model.state_dict().values(), copy.state_dict().values()):
        assert torch.equal(a, b)
    assert ckpt["best_acc"] == history["best_test_acc"]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    model = small_model()
    recipe = get_recipe("budget", **RECIPE)
    trainer = Trainer(model, digits, recipe, out_dir=tmp_path, progress=False)
    trainer.fit(stop_after=1)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="epoch 2.*last good checkpoint"):
        trainer.fit()
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert json.loads((tmp_path / "history.json").read_text())["status"].startswith("diverged")
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_corrupt_and_mismatched_checkpoints_get_clear_errors(digits, tmp_path):
    Trainer(small_model(), digits, get_recipe("smoke", width=8), out_dir=tmp_path, progress=False).fit()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="not a readable dmcbook checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="written by model 'resnet18', not 'resnet34'"):
        load_checkpoint(tmp_path / "checkpoint.pt", small_model(name="resnet34"))
    other = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "checkpoint.pt", other)


def test_checkpoint_loading_never_runs_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_schedules_follow_the_papers():
    dmc = get_recipe("dmcnet")
    assert dmc.lr_at(0) < 0.001 and math.isclose(dmc.lr_at(5), 0.1)
    assert math.isclose(dmc.lr_at(200), 1e-6) and dmc.lr_at(100) < 0.1
    gdfr = get_recipe("gdfrnet")
    assert math.isclose(gdfr.lr_at(59.9), 0.1) and math.isclose(gdfr.lr_at(60), 0.02)
    assert math.isclose(gdfr.lr_at(199), 0.1 * 0.2 ** 3) and gdfr.label_smoothing == 0.1
    res = get_recipe("resneskt")
    assert math.isclose(res.lr_at(49.9), 1e-3) and math.isclose(res.lr_at(50), 1e-4) and res.batch_size == 8


def test_recipe_errors():
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        get_recipe("fast")
    with pytest.raises(ValueError, match="unknown recipe fields"):
        get_recipe("budget", epochz=3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        get_recipe("budget", optimizer="lion")
