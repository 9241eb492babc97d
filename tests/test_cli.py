import errno
import json
import os
import shlex
from pathlib import Path

import pytest
import torch

from dmcbook import cli
from dmcbook.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet34" in out and "fashion-mnist" in out and "budget" in out


def test_unknown_model_and_dataset_list_the_valid_ones(capsys):
    assert main(["train", "--model", "resnet19", "--preset", "smoke"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar11", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'cifar11'" in err and "'fashion-mnist'" in err


def test_bad_arguments_get_argparse_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "many"])
    assert info.value.code == 2 and "invalid int value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--option", "no-equals-sign"])


def test_whole_runs_without_minutes_is_one_clear_error_before_any_work(capsys):
    assert main(["campaign", "run", "--whole-runs"]) == 2
    assert "--whole-runs needs --minutes" in capsys.readouterr().err


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet18", "--dataset", "digits", "--preset", "smoke",
                 "--out", str(out)]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt")]) == 0
    assert "accuracy" in capsys.readouterr().out
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert main(["eval", str(tmp_path / "junk.pt")]) == 2
    assert "not a readable dmcbook checkpoint" in capsys.readouterr().err


def test_profile_names_macs_and_flops(capsys):
    assert main(["profile", "resnet18", "--input-size", "1", "28", "28", "--option", "width=8"]) == 0
    out = capsys.readouterr().out
    assert "GMACs" in out and "GFLOPs" in out and "resnet18" in out


# -- run folders and bad inputs (issue 9) ----------------------------------------------------------

SMOKE = ["train", "--model", "resnet18", "--dataset", "digits", "--preset", "smoke", "--train-subset", "64"]


def test_an_existing_run_folder_is_refused_and_overwrite_starts_afresh(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*SMOKE, "--out", out]) == 0
    capsys.readouterr()
    assert main([*SMOKE, "--out", out, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*SMOKE, "--out", out, "--seed", "1", "--resume"]) == 2
    assert "seed: 0 -> 1" in capsys.readouterr().err
    assert main([*SMOKE, "--out", out, "--seed", "1", "--overwrite"]) == 0
    assert main([*SMOKE, "--out", str(tmp_path / "typo"), "--resume"]) == 2  # nothing there to continue
    assert "holds no run to continue" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    assert json.loads((tmp_path / "run" / "history.json").read_text())["config"]["seed"] == 1


def test_weight_decay_and_no_decay_reach_the_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMOKE, "--model", "drstn_v3", "--out", str(out), "--weight-decay", "0.001",
                 "--no-decay", "soft_threshold"]) == 0
    recipe = json.loads((out / "history.json").read_text())["config"]["recipe"]
    assert recipe["weight_decay"] == 0.001 and recipe["no_decay"] == ["soft_threshold"]
    assert main([*SMOKE, "--model", "drstn_v3", "--out", str(tmp_path / "typo"), "--no-decay", "soft_treshold"]) == 2
    assert "no_decay names ['soft_treshold']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*SMOKE, "--weight-decay", "-1"])
    assert "must be a non-negative finite number; got -1" in capsys.readouterr().err


def test_after_a_divergence_the_suggested_command_is_accepted(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*SMOKE, "--out", out, "--lr", "1000"]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "To start afresh: python -m dmcbook train" in err
    command = shlex.split(err.split("To start afresh: ")[1])
    assert command[-3:] == ["--overwrite", "--lr", "100"] and "1000" not in command
    code = main(command[3:])
    err = capsys.readouterr().err
    assert code == 0 or "diverged" in err, err  # not refused: it starts afresh in the same folder
    assert "already holds a run" not in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "resnet18", "--steps", "0"], "argument --steps: must be a positive integer; got 0"),
    (["bench", "resnet18", "--batch-size", "0"], "argument --batch-size: must be a positive integer; got 0"),
    (["profile", "resnet18", "--input-size", "3", "-1", "32"], "argument --input-size: must be a positive integer"),
    (["train", "--epochs", "0"], "argument --epochs: must be a positive integer; got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a positive finite number; got nan"),
    (["train", "--device", "tpu"], "unknown device 'tpu'; expected cpu, cuda, cuda:N or mps"),
    (["eval", "x.pt", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_numbers_and_devices_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--device", "cuda"])
    assert "this machine has no CUDA GPU" in capsys.readouterr().err


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_out_that_is_a_file_is_refused_before_loading_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "get_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    (tmp_path / "file").write_text("")
    assert main([*SMOKE, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "is not a directory" in _error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main([*SMOKE, "--out", str(locked / "run")]) == 2
    assert "is not writable" in _error_line(capsys)


def test_a_full_disk_gives_one_line_and_no_temporary(tmp_path, capsys, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    assert main([*SMOKE, "--out", str(tmp_path / "run")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's lines
    assert last.startswith("python -m dmcbook train: error: could not write") and "no space left" in last
    assert not [p for p in (tmp_path / "run").iterdir() if "tmp" in p.name]


def test_a_mistyped_data_root_is_named_and_not_created(tmp_path, capsys):
    assert main([*SMOKE, "--dataset", "mnist", "--data-root", str(tmp_path / "dtaa"), "--out", str(tmp_path / "r")]) == 2
    assert f"data root {tmp_path / 'dtaa'} (root) is not a directory" in _error_line(capsys)
    assert not (tmp_path / "dtaa").exists()


def test_eval_refuses_a_corrupted_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMOKE, "--out", str(out)]) == 0
    data = bytearray((out / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "best.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt")]) == 2
    assert "best.pt is corrupt" in _error_line(capsys)


# -- audit of the CLI: one line instead of a traceback ----------------------------------------------

def test_eval_of_a_checkpoint_from_the_trainer_api_says_what_it_lacks(tmp_path, capsys):
    """A Trainer created in Python without run_config records no in_chans, stem or options."""
    from dmcbook import create_model
    from dmcbook.data import get_data
    from dmcbook.train import Trainer, get_recipe
    data = get_data("digits", batch_size=16, image_size=16, train_subset=32, test_subset=16)
    recipe = get_recipe("smoke", epochs=1, batch_size=16, train_subset=32, test_subset=16, image_size=16)
    Trainer(create_model("resnet18", 10, 1, width=4), data, recipe, out_dir=tmp_path, progress=False).fit()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "checkpoint.pt")]) == 2  # best.pt only if an epoch beat 0 %
    line = _error_line(capsys)
    assert "does not record in_chans, num_classes, stem, model_options" in line
    assert "dmcbook.train.load_checkpoint(path, model)" in line


@pytest.mark.parametrize("argv, flag", [
    (["train", "--option", "num_classes=5"], "the data set (--dataset)"),
    (["train", "--option", "in_chans=3"], "--in-chans"),
    (["train", "--option", "stem=imagenet"], "--stem"),
    (["profile", "resnet18", "--option", "num_classes=5"], "--num-classes"),
    (["profile", "resnet18", "--option", "in_chans=1"], "the C of --input-size"),
    (["bench", "resnet18", "--option", "steps=2"], "--steps"),
])
def test_an_option_that_a_flag_sets_is_refused_naming_the_flag(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "get_data", lambda *a, **k: pytest.fail("data loaded before --option was checked"))
    assert main([*argv, "--out", str(tmp_path / "run")] if argv[0] == "train" else argv) == 2
    key = argv[-1].split("=")[0]
    assert _error_line(capsys).endswith(f"{key} is not a model option here; it is set by {flag}")


def test_eval_on_a_data_set_with_another_class_count_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*SMOKE, "--out", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "get_data", lambda *a, **k: pytest.fail("data loaded before the classes were counted"))
    assert main(["eval", str(out / "best.pt"), "--dataset", "gtsrb"]) == 2
    assert "gtsrb has 43 classes, but the model in" in _error_line(capsys)
