import pytest

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
