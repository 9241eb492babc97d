import errno
import hashlib
import json
import math
import multiprocessing
import re
import socket
from pathlib import Path

import pytest
import torch

import dmcbook
from dmcbook.data import get_data
from dmcbook.runs import RunFolderError
from dmcbook import train as engine
from dmcbook.train import CheckpointError, Trainer, TrainingDiverged, get_recipe, load_checkpoint


@pytest.fixture(scope="module")
def digits():
    return get_data("digits", batch_size=64, augment="none")


def small_model(seed=0, name="resnet18"):
    torch.manual_seed(seed)
    return dmcbook.create_model(name, 10, 1, "cifar", width=8)


RECIPE = dict(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, train_subset=None, width=8)


def test_engine_learns_digits_above_90_percent_in_three_epochs(digits):
    # Speed is measured by `python -m dmcbook bench` as a ratio to a plain ResNet, never here.
    history = Trainer(small_model(), digits, get_recipe("budget", **RECIPE), progress=False).fit()
    assert history["final_test_acc"] >= 0.90, history["epochs"]
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
    with pytest.raises(TrainingDiverged, match=r"training loss was NaN or infinite at \d+ of the \d+ steps of "
                                               r"epoch 2.*last good checkpoint \(epoch 1\) is kept"):
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


# -- run folders, divergence and checkpoint integrity (issue 9) -----------------------------------

TINY = dict(width=8, train_subset=None, test_subset=None)


@pytest.fixture(scope="module")
def tiny():
    return get_data("digits", batch_size=32, augment="none", train_subset=64, test_subset=64)


def test_a_run_folder_is_refused_without_resume_or_overwrite(tiny, tmp_path):
    recipe = get_recipe("smoke", **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit()
    with pytest.raises(RunFolderError, match="already holds a run.*--overwrite"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False)
    history = Trainer(small_model(), tiny, recipe, out_dir=tmp_path, overwrite=True, progress=False).fit()
    assert history["status"] == "finished" and len(history["epochs"]) == 1


def test_resume_refuses_another_data_set_seed_or_options(tiny, tmp_path):
    recipe = get_recipe("smoke", epochs=2, **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit(stop_after=1)
    with pytest.raises(RunFolderError, match=r"seed: 0 -> 1.*--overwrite"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, seed=1, resume=True, progress=False)
    other = get_data("digits", batch_size=32, augment="none", train_subset=32, test_subset=64)
    with pytest.raises(RunFolderError, match="data: .*64 train.* -> .*32 train"):
        Trainer(small_model(), other, recipe, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(RunFolderError, match="model_options"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False,
                run_config=dict(model_options=dict(width=8)))


def _train_into(folder, barrier, queue):
    """One of two processes training into the same folder at once."""
    data = get_data("digits", batch_size=32, augment="none", train_subset=64, test_subset=64)
    barrier.wait()
    try:
        Trainer(small_model(), data, get_recipe("smoke", epochs=2, **TINY), out_dir=folder, progress=False).fit()
        queue.put("ok")
    except Exception as err:
        queue.put(f"{type(err).__name__}: {err}")


def test_two_trainings_into_one_folder_one_is_refused_clearly(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_train_into, args=(tmp_path, barrier, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = sorted((queue.get(timeout=300) for _ in workers), key=lambda outcome: outcome != "ok")
    for w in workers:
        w.join(timeout=60)
    assert outcomes[0] == "ok" and outcomes[1].startswith("RunFolderError"), outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "best.pt.sha256", "checkpoint.pt", "checkpoint.pt.sha256", "history.json"]
    stored = json.loads(load_checkpoint(tmp_path / "checkpoint.pt")["history"])
    assert stored["epochs"] == json.loads((tmp_path / "history.json").read_text())["epochs"]


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tiny, tmp_path):
    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    recipe = get_recipe("smoke", **TINY)
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} {dead.pid}")
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit()
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} 1")  # init: always alive
    with pytest.raises(RunFolderError, match="in use by process 1"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False)


def _interrupt_history_write(monkeypatch, at_write: int):
    """Make the ``at_write``-th write of history.json raise as a kill would (KeyboardInterrupt),
    after that epoch's best.pt and checkpoint.pt are written."""
    real, writes = engine.save_json, []

    def save_json(obj, path):
        if Path(path).name == "history.json":
            writes.append(path)
            if len(writes) == at_write:
                raise KeyboardInterrupt("killed before history.json")
        return real(obj, path)
    monkeypatch.setattr(engine, "save_json", save_json)


@pytest.mark.parametrize("killed_in_epoch", [1, 2])  # a fresh run's first epoch: no history.json yet
def test_a_run_interrupted_while_writing_an_epoch_resumes_from_its_checkpoint(tiny, tmp_path, monkeypatch,
                                                                            killed_in_epoch):
    recipe = get_recipe("smoke", epochs=3, **TINY)
    with monkeypatch.context() as patch:
        _interrupt_history_write(patch, killed_in_epoch)
        with pytest.raises(KeyboardInterrupt):
            Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] + 1 == killed_in_epoch
    resumed = Trainer(small_model(seed=5), tiny, recipe, out_dir=tmp_path, resume=True, progress=False)
    # claiming the folder brought history.json level with the checkpoint
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == killed_in_epoch
    history = resumed.fit()
    straight = Trainer(small_model(), tiny, recipe, progress=False).fit()
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[e[k] for k in keys] for e in history["epochs"]] == [[e[k] for k in keys] for e in straight["epochs"]]
    assert json.loads((tmp_path / "history.json").read_text())["status"] == "finished"


def test_the_same_trainer_goes_on_after_an_interrupted_write_without_training_an_epoch_twice(
        tiny, tmp_path, monkeypatch):
    trainer = Trainer(small_model(), tiny, get_recipe("smoke", epochs=2, **TINY), out_dir=tmp_path, progress=False)
    with monkeypatch.context() as patch:
        _interrupt_history_write(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    history = trainer.fit()  # history.json lags this Trainer's own checkpoint: no other process wrote
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] and history["status"] == "finished"
    assert json.loads((tmp_path / "history.json").read_text())["epochs"] == history["epochs"]


def test_an_epochs_files_are_written_best_then_checkpoint_then_history(tiny, tmp_path, monkeypatch):
    order, write_checked, save_json = [], engine.write_checked, engine.save_json
    monkeypatch.setattr(engine, "write_checked", lambda path, write: order.append(Path(path).name) or
                        write_checked(path, write))
    monkeypatch.setattr(engine, "save_json", lambda obj, path: order.append(Path(path).name) or save_json(obj, path))
    Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, progress=False).fit()
    # a kill between best.pt and checkpoint.pt leaves the checkpoint's best_acc behind best.pt, never ahead
    assert order == ["best.pt", "checkpoint.pt", "history.json"]


def test_epochs_a_checkpoint_cannot_account_for_are_refused_when_the_folder_is_claimed(tiny, tmp_path):
    recipe = get_recipe("smoke", epochs=2, **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit(stop_after=1)
    for name in ("checkpoint.pt", "checkpoint.pt.sha256"):
        (tmp_path / name).unlink()
    with pytest.raises(RunFolderError, match="records 1 epochs, but there is no checkpoint.pt to continue them"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False)


def test_a_resume_in_another_precision_is_refused(tiny, tmp_path):
    recipe = get_recipe("smoke", epochs=2, **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False, precision="fp32").fit(stop_after=1)
    with pytest.raises(RunFolderError, match=r"trained in fp32 and this Trainer would continue in bf16-autocast; "
                                             r"resume it where it trains in fp32 \(precision='fp32'\)"):
        Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False, precision="bf16")
    history = Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False,
                      precision="fp32").fit()
    assert [e["device"] for e in history["epochs"]] == ["cpu", "cpu"]  # where each epoch ran


def test_a_resumed_deadline_counts_an_epochs_whole_wall_time(tiny, tmp_path):
    import time
    recipe = get_recipe("smoke", epochs=2, **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit(stop_after=1)
    trainer = Trainer(small_model(), tiny, recipe, out_dir=tmp_path, resume=True, progress=False)
    last = trainer.history["epochs"][-1]
    assert last["epoch_time"] >= last["train_time"]
    last.update(train_time=1.0, epoch_time=1000.0)  # an epoch whose test pass and checkpoint took long
    history = trainer.fit(deadline=time.time() + 100)
    assert len(history["epochs"]) == 1 and history["status"] == "running"


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tiny, tmp_path, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write .*best.pt: no space left"):  # an epoch's first file
        Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, progress=False).fit()
    assert [p.name for p in tmp_path.iterdir()] == []


def _break_after_epoch(trainer, value):
    """Set the classifier's weights to ``value`` right after the epoch's last step."""
    train_epoch = trainer._train_epoch

    def epoch_then_spike(epoch):
        record = train_epoch(epoch)
        if epoch == 1:
            with torch.no_grad():
                trainer.model.fc.weight.fill_(value)
        return record
    trainer._train_epoch = epoch_then_spike


@pytest.mark.parametrize("value", [float("inf"), 3e38])  # non-finite weights; finite weights, NaN test loss
def test_a_spike_at_an_epochs_last_step_ends_diverged_not_finished(tiny, tmp_path, value):
    trainer = Trainer(small_model(), tiny, get_recipe("smoke", epochs=2, **TINY), out_dir=tmp_path, progress=False)
    _break_after_epoch(trainer, value)
    trainer.fit(stop_after=1)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match="after epoch 2 .*last good checkpoint \\(epoch 1\\) is kept.*--overwrite"):
        trainer.fit()
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["status"] == "diverged" and "after epoch 2" in history["error"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == good and len(history["epochs"]) == 1
    with pytest.raises(RunFolderError, match="diverged.*--overwrite"):
        Trainer(small_model(), tiny, get_recipe("smoke", epochs=2, **TINY), out_dir=tmp_path, resume=True)


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("nan"), "lr must be a positive finite number; got nan"),
    ("lr", float("inf"), "lr must be a positive finite number; got inf"),
    ("lr", -0.1, "lr must be a positive finite number; got -0.1"),
    ("lr", True, "lr must be a positive finite number; got True"),
    ("epochs", 0, "epochs must be a positive integer; got 0"),
    ("epochs", 2.0, "epochs must be a positive integer; got 2.0"),
    ("batch_size", -4, "batch_size must be a positive integer; got -4"),
    ("momentum", -0.5, "momentum must be a number from 0 to below 1; got -0.5"),
    ("weight_decay", -1.0, "weight_decay must be a finite number >= 0; got -1.0"),
    ("warmup_epochs", -2, "warmup_epochs must be a finite number >= 0; got -2"),
    ("min_lr", 1.0, "min_lr must be a number from 0 to lr (0.05); got 1.0"),
    ("milestones", 5, "milestones must be a tuple of increasing positive epochs (e.g. (60, 120, 160)); got 5"),
    ("milestones", (3, 1), "milestones must be a tuple of increasing positive epochs (e.g. (60, 120, 160)); got (3, 1)"),
    ("milestones", (0, 2), "milestones must be a tuple of increasing positive epochs (e.g. (60, 120, 160)); got (0, 2)"),
    ("gamma", -0.1, "gamma must be a positive finite number; got -0.1"),
    ("label_smoothing", 1.5, "label_smoothing must be a number from 0 to below 1; got 1.5"),
    ("label_smoothing", 1.0, "label_smoothing must be a number from 0 to below 1; got 1.0"),
    ("image_size", 7, "image_size must be None or an integer from 8 to 1024 pixels; got 7"),
    ("image_size", 32.0, "image_size must be None or an integer from 8 to 1024 pixels; got 32.0"),
    ("grad_clip", -1.0, "grad_clip must be None or a positive finite number; got -1.0"),
    ("grad_clip", 0, "grad_clip must be None or a positive finite number; got 0"),
    ("width", 0, "width must be None or a positive integer; got 0"),
    ("train_subset", 0, "train_subset must be None or a positive integer; got 0"),
    ("train_subset", 10.5, "train_subset must be None or a positive integer; got 10.5"),
    ("test_subset", True, "test_subset must be None or a positive integer; got True")])
def test_recipe_names_the_bad_field_and_its_value(field, value, message):
    with pytest.raises(ValueError, match=re.escape(f"recipe 'budget': {message}")):
        get_recipe("budget", **{field: value})


def test_the_recipe_of_every_committed_run_passes_the_checks():
    # the checks refuse nothing that made a run of the book (JSON stores tuples as lists)
    fields = set(engine.RECIPE_DEFAULTS) | {"name", "epochs"}
    paths = sorted((Path(__file__).parents[1] / "results").glob("**/history.json"))
    for path in paths:
        stored = json.loads(path.read_text())["config"]["recipe"]
        engine.Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields})
    assert len(paths) > 50


@pytest.mark.parametrize("classes, chans, message", [
    (5, 1, r"resnet18 gives outputs of shape \(1, 5\) for one image and digits has 10 classes.*num_classes=10$"),
    (10, 3, r"resnet18 takes 3-channel images and those of digits have 1; build the model with in_chans=1$")])
def test_a_model_that_does_not_fit_the_data_is_refused_before_overwrite_deletes_anything(
        tiny, tmp_path, classes, chans, message):
    recipe = get_recipe("smoke", **TINY)
    Trainer(small_model(), tiny, recipe, out_dir=tmp_path, progress=False).fit()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    torch.manual_seed(0)
    wrong = dmcbook.create_model("resnet18", classes, chans, "cifar", width=8)
    stats = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(ValueError, match=message) as info:
        Trainer(wrong, tiny, recipe, out_dir=tmp_path, overwrite=True, progress=False)
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    # the probe left the model as it was: in training mode, BN statistics unmoved
    assert wrong.training and all(torch.equal(v, stats[k]) for k, v in wrong.state_dict().items())


def test_no_decay_modules_train_without_weight_decay(tiny):
    # With zero gradients an SGD step is pure decay: the exempt gate keeps its weights exactly,
    # every other weight shrinks by lr * weight_decay.
    recipe = get_recipe("smoke", lr=0.1, momentum=0.0, weight_decay=0.5, no_decay=("soft_threshold",), **TINY)
    model = small_model(name="drstn_v5")
    trainer = Trainer(model, tiny, recipe, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    for name, param in model.named_parameters():
        factor = 1.0 if ".soft_threshold." in name else 1 - 0.1 * 0.5
        assert torch.allclose(param.detach(), factor * before[name]), name
    assert trainer.history["config"]["recipe"]["no_decay"] == ("soft_threshold",)


@pytest.mark.parametrize("no_decay, message", [
    ("soft_threshold", "no_decay must be a tuple of module names"),
    (("soft_treshold",), "no_decay names ['soft_treshold'], but no trainable parameter of drstn_v5")])
def test_no_decay_refuses_names_that_select_nothing(tiny, no_decay, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Trainer(small_model(name="drstn_v5"), tiny, get_recipe("smoke", no_decay=no_decay, **TINY), progress=False)


def test_flipped_bytes_in_a_checkpoint_are_refused(tiny, tmp_path):
    Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, progress=False).fit()
    path = tmp_path / "checkpoint.pt"
    assert (tmp_path / "checkpoint.pt.sha256").read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 100] = bytes(b ^ 0xFF for b in data[middle:middle + 100])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checkpoint.pt is corrupt: its SHA-256"):
        load_checkpoint(path, small_model())
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, resume=True)


def test_a_checkpoint_without_its_digest_loads_with_a_warning(tiny, tmp_path):
    Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, progress=False).fit()
    (tmp_path / "best.pt.sha256").unlink()
    with pytest.warns(UserWarning, match="no best.pt.sha256; its integrity cannot be checked"):
        load_checkpoint(tmp_path / "best.pt", small_model())


def test_mismatch_and_pickle_messages_keep_the_reason_and_never_suggest_unsafe_loading(tiny, tmp_path):
    Trainer(small_model(), tiny, get_recipe("smoke", **TINY), out_dir=tmp_path, progress=False).fit()
    wider = dmcbook.create_model("resnet18", 10, 1, "cifar", width=16)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(checkpoint vs model: stem.0.weight \(8, 1, 3, 3\) "
                                              r"vs \(16, 1, 3, 3\)") as info:
        load_checkpoint(tmp_path / "checkpoint.pt", wider)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=r"2 missing keys \(weight, bias\); \d+ unexpected keys \(stem.0.weight"):
        load_checkpoint(tmp_path / "checkpoint.pt", torch.nn.Linear(2, 2))

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"model": {}, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="never loads such files") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only" not in str(info.value)
