import functools
import gzip
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmcbook import data as D


def test_digits_is_always_there_and_resized():
    bundle = D.get_data("digits", batch_size=16)
    x, y = next(iter(bundle.train_loader))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.int64
    assert len(bundle.train_set) + len(bundle.test_set) == 1797
    assert bundle.num_classes == 10 and bundle.in_chans == 1


def test_channel_conversion_and_subsets():
    bundle = D.get_data("digits", in_chans=3, image_size=28, batch_size=8, train_subset=40, test_subset=20)
    x, _ = next(iter(bundle.test_loader))
    assert x.shape[1:] == (3, 28, 28)
    assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])
    assert len(bundle.train_set) == 40 and len(bundle.test_set) == 20
    assert bundle.denormalize(x).min() >= 0 and bundle.denormalize(x).max() <= 1


def test_digits_are_not_flipped_but_fashion_is():
    assert not D.SPECS["digits"].hflip and not D.SPECS["svhn"].hflip and D.SPECS["fashion-mnist"].hflip
    names = [type(t).__name__ for t in D.build_transforms(D.SPECS["digits"], 32, 1, "paper", True).transforms]
    assert "RandomHorizontalFlip" not in names and "RandomErasing" in names


def test_paper_augmentation_uses_the_papers_autoaugment_policy():
    steps = D.build_transforms(D.SPECS["svhn"], 32, 3, "paper", True).transforms
    auto = [t for t in steps if type(t).__name__ == "AutoAugment"]
    assert auto and auto[0].policy == D.T.AutoAugmentPolicy.SVHN
    for name, policy in (("cifar100", "CIFAR10"), ("imagenette", "IMAGENET"), ("imagewoof", "IMAGENET")):
        assert D.SPECS[name].autoaugment == getattr(D.T.AutoAugmentPolicy, policy), name
    erasing = [t for t in steps if type(t).__name__ == "RandomErasing"]
    assert erasing[0].p == 0.5


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown data set 'cifar11'.*'cifar10'"):
        D.get_data("cifar11")


def test_missing_dataset_offline_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, download=False, **kwargs):
        if download:
            raise urllib.error.URLError("no network")
        raise RuntimeError("Dataset not found. You can use download=True to download it")
    monkeypatch.setattr(D.datasets, "CIFAR10", offline)
    with pytest.raises(D.DatasetUnavailable) as info:
        D.get_data("cifar10", root=tmp_path)
    message = str(info.value)
    assert "'cifar10' is not available" in message and str(tmp_path) in message
    assert "How to get it" in message and "URLError" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_download_false_never_downloads(tmp_path):
    with pytest.raises(D.DatasetUnavailable, match="downloads are switched off"):
        D.load_dataset("mnist", True, root=tmp_path, download=False)


def test_dmcbook_data_variable_is_searched_first(tmp_path, monkeypatch):
    monkeypatch.setenv("DMCBOOK_DATA", str(tmp_path))
    with pytest.raises(D.DatasetUnavailable) as info:
        D.load_dataset("svhn", True, download=False)
    assert info.value.searched[0] == str(tmp_path)


def _write_images(folder: Path, n: int, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.JPEG")


def test_imagenet10_reads_the_ten_wnids_and_splits_per_class(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "IMAGENET10_TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(D, "IMAGENET10_TEST_PER_CLASS", 2)
    for wnid in D.IMAGENET10_WNIDS:
        _write_images(tmp_path / wnid, 6)
    _write_images(tmp_path / "n99999999", 4)  # another class: must be left out
    bundle = D.get_data("imagenet10", root=tmp_path, image_size=32, batch_size=4)
    assert len(bundle.train_set) == 30 and len(bundle.test_set) == 20
    assert bundle.classes == list(D.IMAGENET10_WNIDS)
    x, _ = next(iter(bundle.train_loader))
    assert x.shape == (4, 3, 32, 32)


def test_imagenet10_names_the_missing_class_folders(tmp_path):
    with pytest.raises(D.DatasetUnavailable, match="n01514668"):
        D.get_data("imagenet10", root=tmp_path)


def test_imagewoof_reads_an_unpacked_archive(tmp_path):
    for split in ("train", "val"):
        for cls in ("n02086240", "n02087394"):
            _write_images(tmp_path / "imagewoof2-320" / split / cls, 2)
    bundle = D.get_data("imagewoof", root=tmp_path, image_size=64, batch_size=2, download=False)
    assert len(bundle.train_set) == 4 and bundle.classes == ["n02086240", "n02087394"]
    assert next(iter(bundle.test_loader))[0].shape == (4, 3, 64, 64)


@pytest.mark.skipif(not (D.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_reads_the_real_debian_files():
    bundle = D.get_data("fashion-mnist", batch_size=64, augment="none", download=False)
    assert len(bundle.train_set) == 60000 and len(bundle.test_set) == 10000
    assert bundle.classes[9] == "Ankle boot"
    x, y = next(iter(bundle.test_loader))
    assert x.shape == (256, 1, 28, 28)
    # The first test image of Fashion-MNIST is an ankle boot.
    assert y[0].item() == 9
    raw = D.load_dataset("fashion-mnist", False, download=False)
    assert np.asarray(raw[0][0]).mean() > 0  # real pixels, not zeros


# -- damaged files, mistyped roots, impossible sizes (issue 9) -------------------------------------

def _write_idx(path: Path, array: np.ndarray, claimed_shape=None) -> None:
    shape = claimed_shape or array.shape
    header = bytes([0, 0, 8, len(shape)]) + b"".join(int(n).to_bytes(4, "big") for n in shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def test_a_good_idx_copy_loads(tmp_path):
    _fake_fashion(tmp_path)
    assert len(D.load_dataset("fashion-mnist", True, root=tmp_path, download=False)) == 12


def test_a_truncated_gz_names_the_file(tmp_path):
    _fake_fashion(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:200])
    with pytest.raises(D.DataFileError, match=f"{images} is truncated"):
        D.load_dataset("fashion-mnist", True, root=tmp_path, download=False)


def test_a_wrongly_shaped_idx_file_names_the_file(tmp_path):
    _fake_fashion(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.zeros(12), claimed_shape=(20,))
    with pytest.raises(D.DataFileError, match=f"{labels} is not an IDX file.*header shape \\(20,\\)"):
        D.load_dataset("fashion-mnist", False, root=tmp_path, download=False)


def test_a_garbage_file_in_dmcbook_data_is_reported_not_skipped(tmp_path, monkeypatch):
    _fake_fashion(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip at all")
    monkeypatch.setenv("DMCBOOK_DATA", str(tmp_path))
    with pytest.raises(D.DataFileError, match="train-images-idx3-ubyte.gz is truncated or not a gzip file"):
        D.get_data("fashion-mnist", download=False)


def test_a_mistyped_root_is_named_and_never_created(tmp_path, monkeypatch):
    with pytest.raises(D.DataFileError, match="dtaa \\(root\\) is not a directory"):
        D.get_data("mnist", root=tmp_path / "dtaa")
    assert not (tmp_path / "dtaa").exists()
    monkeypatch.setenv("DMCBOOK_DATA", str(tmp_path / "typo"))
    with pytest.raises(D.DataFileError, match="typo \\(DMCBOOK_DATA\\) is not a directory"):
        D.get_data("cifar10")
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("size", [0, 1, -32, 100_000, 32.5])
def test_impossible_image_sizes_are_refused_before_loading(size, monkeypatch):
    monkeypatch.setattr(D, "load_dataset", lambda *a, **k: pytest.fail("loaded before checking image_size"))
    with pytest.raises(ValueError, match=f"image_size must be an integer from 8 to 1024 pixels; got {size}"):
        D.get_data("digits", image_size=size)


# -- audit of the data layer: resumable worker loaders, integer arguments --------------------------

def test_a_resumed_run_on_worker_loaders_repeats_the_uninterrupted_one(tmp_path, monkeypatch):
    """Augmenting workers (images over 64 px, GPUs) must draw each epoch's random numbers from
    (seed, epoch) as the main process does: persistent workers carried theirs over."""
    from dmcbook import create_model
    from dmcbook.train import Trainer, get_recipe
    monkeypatch.setattr(D, "load_dataset", functools.cache(D.load_dataset))  # fresh loaders, one read

    def data():
        return D.get_data("digits", batch_size=16, augment="basic", image_size=16, train_subset=48,
                          test_subset=16, on_device=False, num_workers=1)

    def model():
        torch.manual_seed(0)
        return create_model("resnet18", 10, 1, "cifar", width=4)

    recipe = get_recipe("budget", epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.5, train_subset=48,
                        test_subset=16, width=4, image_size=16, augment="basic")
    assert data().train_loader.num_workers == 1
    straight = Trainer(model(), data(), recipe, progress=False).fit()
    Trainer(model(), data(), recipe, out_dir=tmp_path, progress=False).fit(stop_after=1)
    resumed = Trainer(model(), data(), recipe, out_dir=tmp_path, resume=True, progress=False).fit()
    losses = [[(e["train_loss"], e["test_loss"]) for e in h["epochs"]] for h in (straight, resumed)]
    assert losses[0] == losses[1]


def test_worker_loaders_restart_their_workers_each_epoch():
    bundle = D.get_data("digits", batch_size=16, image_size=16, train_subset=32, test_subset=16,
                        on_device=False, num_workers=1)
    assert not bundle.train_loader.persistent_workers and not bundle.test_loader.persistent_workers


@pytest.mark.parametrize("argument, value, message", [
    ("batch_size", 2.5, "batch_size must be an integer; got 2.5"),
    ("batch_size", True, "batch_size must be an integer; got True"),
    ("batch_size", 0, "batch_size must be at least 1; got 0"),
    ("in_chans", True, "in_chans must be an integer; got True"),
    ("in_chans", 0, "in_chans must be 1 or 3; got 0"),
    ("train_subset", 10.5, "train_subset must be an integer; got 10.5"),
    ("test_subset", 0, "test_subset must be at least 1; got 0"),
    ("num_workers", -1, "num_workers must be at least 0; got -1"),
    ("seed", 1.0, "seed must be an integer; got 1.0"),
])
def test_non_integers_where_integers_belong_are_refused_before_loading(argument, value, message, monkeypatch):
    monkeypatch.setattr(D, "load_dataset", lambda *a, **k: pytest.fail("loaded before checking the arguments"))
    with pytest.raises(ValueError, match=f"^{message}$"):
        D.get_data("digits", **{argument: value})


def test_numpy_integers_and_a_subset_larger_than_the_data_set_are_accepted():
    bundle = D.get_data("digits", batch_size=np.int64(16), in_chans=np.int64(1), train_subset=10**6,
                        test_subset=np.int64(20), augment="none")
    assert len(bundle.train_set) == 1437 and len(bundle.test_set) == 20  # the whole training split
    assert "1437 train / 20 test images" in bundle.describe()
