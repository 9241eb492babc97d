"""Runs under results/: never retrained once finished, shipped weights checked and loaded (issue 9)."""
import json
from types import SimpleNamespace

import pytest
import torch

from dmcbook.experiments import run_experiment
from dmcbook.runs import RunFolderError
from dmcbook.train import CheckpointError, Trainer, evaluate

TINY = dict(train_subset=64, test_subset=64)


def session(folder, mode="budget"):
    return SimpleNamespace(recipe="smoke", dataset="digits", results_dir=folder, chapter="test", mode=mode,
                           device="cpu")


def run(folder, mode="budget", **kwargs):
    kwargs.setdefault("recipe_overrides", TINY)
    return run_experiment(session(folder, mode), "resnet18-seed0", "resnet18", progress=False, **kwargs)


def as_if_committed(run_dir):
    """What a fresh clone holds: checkpoints are git-ignored, history and shipped weights are not."""
    for path in run_dir.glob("*.pt*"):
        path.unlink()


def forbid_training(monkeypatch):
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: pytest.fail("a finished run was retrained"))


def test_shipped_weights_are_fp16_checksummed_and_loaded_without_training(tmp_path, monkeypatch):
    first = run(tmp_path, ship_weights=True)
    run_dir = first.out_dir
    record = first.history["weights"]
    assert record["file"] == "weights.safetensors" and record["dtype"] == "float16"
    assert json.loads((run_dir / "history.json").read_text())["weights"] == record
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(run_dir / "weights.safetensors").values()} <= {torch.float16, torch.int64}
    as_if_committed(run_dir)
    forbid_training(monkeypatch)
    again = run(tmp_path, ship_weights=True)
    assert again.has_model and again.history == json.loads(json.dumps(first.history))
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor.half().to(tensor.dtype))
    fp32, fp16 = (evaluate(e.model, first.data.test_loader, "cpu")["acc"] for e in (first, again))
    assert abs(fp32 - fp16) <= 1 / 64  # at most one of the 64 test images changes its class


def test_a_finished_run_without_weights_keeps_its_history_and_says_how_to_get_them(tmp_path, monkeypatch):
    first = run(tmp_path)
    assert first.history["weights"] is None and json.loads((first.out_dir / "history.json").read_text())["weights"] is None
    as_if_committed(first.out_dir)
    forbid_training(monkeypatch)
    again = run(tmp_path, ship_weights=True)
    assert not again.has_model and again.history == json.loads(json.dumps(first.history)) and again.name == "resnet18-seed0"
    assert again.out_dir == first.out_dir and again.data.num_classes == 10
    with pytest.raises(CheckpointError, match="without shipped weights.*ship_weights=True.*python -m dmcbook train"):
        again.model


def test_a_finished_local_run_ships_its_weights_from_the_checkpoint_without_training(tmp_path, monkeypatch):
    first = run(tmp_path)
    forbid_training(monkeypatch)
    again = run(tmp_path, ship_weights=True)
    assert again.history["weights"]["file"] == "weights.safetensors" and (again.out_dir / "weights.safetensors").exists()
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor)


def test_corrupted_shipped_weights_are_refused(tmp_path):
    run_dir = run(tmp_path, ship_weights=True).out_dir
    as_if_committed(run_dir)
    path = run_dir / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 100] = bytes(100)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights.safetensors is corrupt"):
        run(tmp_path)


def test_a_finished_run_of_another_configuration_is_refused_but_replaced_in_smoke_mode(tmp_path):
    run(tmp_path)
    with pytest.raises(RunFolderError, match=r"recipe.train_subset: 64 -> 32.*delete the folder"):
        run(tmp_path, recipe_overrides=dict(train_subset=32, test_subset=64))
    replaced = run(tmp_path, mode="smoke", recipe_overrides=dict(train_subset=32, test_subset=64))
    assert replaced.history["config"]["recipe"]["train_subset"] == 32 and replaced.history["weights"] is None


def test_a_diverged_run_says_how_to_start_afresh(tmp_path):
    run_dir = run(tmp_path).out_dir
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps(dict(history, status="diverged")))
    with pytest.raises(RunFolderError, match="diverged; delete the folder .*recipe_overrides=dict\\(lr="):
        run(tmp_path)


def test_a_run_killed_between_its_checkpoint_and_its_history_is_resumed_not_skipped(tmp_path, monkeypatch):
    # The campaign skips a run whose Trainer raises RunFolderError: such a run would never train again.
    from dmcbook import train as engine
    overrides = dict(TINY, epochs=2)
    real, writes = engine.save_json, []

    def killed_at_the_second_history(obj, path):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt("killed")
        return real(obj, path)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "save_json", killed_at_the_second_history)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, recipe_overrides=overrides)
    resumed = run(tmp_path, recipe_overrides=overrides)
    assert resumed.history["status"] == "finished" and [e["epoch"] for e in resumed.history["epochs"]] == [1, 2]
    straight = run(tmp_path / "straight", recipe_overrides=overrides)
    assert [e["test_loss"] for e in resumed.history["epochs"]] == [e["test_loss"] for e in straight.history["epochs"]]
