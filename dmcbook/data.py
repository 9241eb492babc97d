"""The papers' data sets behind one entry point, :func:`get_data`.

Where a data set is looked for, in order:

1. the ``root`` argument, else the ``DMCBOOK_DATA`` environment variable;
2. copies already on the machine (Debian's ``dataset-fashion-mnist`` package, the default cache
   folder ``~/.cache/dmcbook/data``);
3. a download through torchvision, when the machine is online.

A data set that is found nowhere and cannot be downloaded raises :class:`DatasetUnavailable`,
whose message names the data set, every place searched and how to get it.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms as T

from .augment import MAX_DEVICE_IMAGE_SIZE, BatchAugment, DeviceLoader, images_as_uint8
from .checks import check_choice, is_integer

DEFAULT_CACHE = Path.home() / ".cache" / "dmcbook" / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGEWOOF_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"
AUGMENTS = ("none", "basic", "paper")

# The ten ImageNet classes of the ResNeSkt paper (Sec. 3.1).
IMAGENET10_WNIDS = ("n01514668", "n01530575", "n01728572", "n01847000", "n01871265",
                    "n02708093", "n02814533", "n02963159", "n03991062", "n11939491")
# The paper splits 10 000 / 3 500 images over ten classes: 1 000 / 350 per class.
IMAGENET10_TRAIN_PER_CLASS, IMAGENET10_TEST_PER_CLASS = 1000, 350
# Smallest and largest image side get_data accepts: below 8 px the models' strides leave nothing,
# above 1024 px one batch outgrows any GPU these chapters target.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024


class DatasetUnavailable(RuntimeError):
    """A data set is neither on this machine nor downloadable from here."""

    def __init__(self, name: str, searched: list, how: str, reason: str = ""):
        places = "\n".join(f"  - {p}" for p in searched) or "  (nowhere)"
        detail = f"\nThe last attempt failed with: {reason}" if reason else ""
        super().__init__(f"Data set {name!r} is not available.\nSearched:\n{places}\n"
                         f"How to get it: {how}{detail}")
        self.name, self.searched = name, searched


class DataFileError(ValueError):
    """A data set's file is on the machine but damaged: reported, never skipped for another copy."""


class TensorImages(Dataset):
    """uint8 images (N, H, W) or (N, H, W, 3) with integer labels, served as PIL images so that
    the same torchvision transforms apply as for the downloaded data sets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], transform=None):
        self.images, self.targets, self.classes, self.transform = images, labels, classes, transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is: its size, channels, statistics and which augmentations fit it."""
    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple
    std: tuple
    hflip: bool                       # mirrored digits or signs are other classes
    autoaugment: T.AutoAugmentPolicy | None
    load: Callable                    # load(root, train, download) -> Dataset
    how_to_get: str
    system_roots: tuple = field(default=())


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFileError(f"{path} is truncated or not a gzip file ({type(err).__name__}: {err}); "
                            "delete it and fetch it again") from None
    # torchvision.datasets.mnist has a reader, but it takes a path and only plain files.
    # Header: two zero bytes, 0x08 (unsigned bytes), the number of dimensions, then each size.
    ndim = data[3] if len(data) >= 4 else 0
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or ndim not in (1, 3) or \
            len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DataFileError(f"{path} is not an IDX file of unsigned bytes with 1 or 3 dimensions of the size its "
                            f"header states ({len(data)} bytes, header shape {shape}); delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _load_fashion(root, train, download):
    split = "train" if train else "t10k"
    for folder in (Path(root), Path(root) / "fashion-mnist"):
        images = folder / f"{split}-images-idx3-ubyte.gz"
        if images.exists():  # the flat layout of Debian's package
            labels, pixels = _read_idx(folder / f"{split}-labels-idx1-ubyte.gz"), _read_idx(images)
            if labels.ndim != 1 or pixels.ndim != 3 or len(labels) != len(pixels):
                raise DataFileError(f"{images} holds {pixels.shape} images but its labels file {labels.shape} labels")
            return TensorImages(pixels, labels, FASHION_CLASSES)
    return datasets.FashionMNIST(root, train=train, download=download)


def _load_digits(root, train, download):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()  # bundled with scikit-learn: always there
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    return TensorImages(x_train if train else x_test, y_train if train else y_test,
                        [str(d) for d in range(10)])


def _imagenette(root, train, download):
    return datasets.Imagenette(root, split="train" if train else "val", size="320px", download=download)


def _imagewoof(root, train, download):
    folder = Path(root) / "imagewoof2-320"
    if not folder.exists() and download:
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(IMAGEWOOF_URL, str(root))
    return datasets.ImageFolder(folder / ("train" if train else "val"))


class _TenClassFolder(datasets.ImageFolder):
    """An ImageFolder over the ten wnids only, however many other classes the folder holds."""

    def find_classes(self, directory):
        return list(IMAGENET10_WNIDS), {wnid: i for i, wnid in enumerate(IMAGENET10_WNIDS)}


def _imagenet10(root, train, download):
    """The ResNeSkt paper's ten classes from a local ImageNet train folder, split per class into
    1000 training and (up to) 350 test images with a fixed seed."""
    root = Path(root)
    missing = [w for w in IMAGENET10_WNIDS if not (root / w).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} lacks the class folders {', '.join(missing)}")
    full = _TenClassFolder(root)
    rng = np.random.default_rng(0)
    targets = np.asarray(full.targets)
    chosen = []
    for label in range(len(full.classes)):
        index = rng.permutation(np.flatnonzero(targets == label))
        end = IMAGENET10_TRAIN_PER_CLASS
        chosen.extend(index[:end] if train else index[end:end + IMAGENET10_TEST_PER_CLASS])
    subset = Subset(full, sorted(int(i) for i in chosen))
    subset.classes = full.classes
    return subset


# AutoAugment's published policies, each searched on its own data set (DMCNet, Sec. 2.1.1: "the best
# policy for the given data set"); GTSRB has none of its own, and CIFAR-10's stands in.
CIFAR_POLICY, SVHN_POLICY = T.AutoAugmentPolicy.CIFAR10, T.AutoAugmentPolicy.SVHN
IMAGENET_POLICY = T.AutoAugmentPolicy.IMAGENET
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_TORCHVISION_HOW = "run once on a machine with internet access (it downloads through torchvision), or copy the files into DMCBOOK_DATA"

SPECS = {s.name: s for s in [
    DatasetSpec("digits", 10, 1, 32, (0.3057,), (0.3235,), False, None, _load_digits,
                "it is bundled with scikit-learn: pip install scikit-learn"),
    DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), False, None,
                lambda r, t, d: datasets.MNIST(r, train=t, download=d), _TORCHVISION_HOW),
    DatasetSpec("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), True, None, _load_fashion,
                "on Debian or Ubuntu: apt-get install dataset-fashion-mnist; or " + _TORCHVISION_HOW,
                system_roots=(DEBIAN_FASHION_MNIST,)),
    DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, CIFAR_POLICY,
                lambda r, t, d: datasets.CIFAR10(r, train=t, download=d), _TORCHVISION_HOW),
    DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, CIFAR_POLICY,
                lambda r, t, d: datasets.CIFAR100(r, train=t, download=d), _TORCHVISION_HOW),
    DatasetSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, SVHN_POLICY,
                lambda r, t, d: datasets.SVHN(r, split="train" if t else "test", download=d), _TORCHVISION_HOW),
    DatasetSpec("gtsrb", 43, 3, 32, (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669), False, CIFAR_POLICY,
                lambda r, t, d: datasets.GTSRB(r, split="train" if t else "test", download=d), _TORCHVISION_HOW),
    DatasetSpec("imagenette", 10, 3, 224, IMAGENET_MEAN, IMAGENET_STD, True, IMAGENET_POLICY, _imagenette,
                _TORCHVISION_HOW),
    DatasetSpec("imagewoof", 10, 3, 224, IMAGENET_MEAN, IMAGENET_STD, True, IMAGENET_POLICY, _imagewoof,
                f"download and unpack {IMAGEWOOF_URL} into DMCBOOK_DATA (or run once online)"),
    DatasetSpec("imagenet10", 10, 3, 224, IMAGENET_MEAN, IMAGENET_STD, True, IMAGENET_POLICY, _imagenet10,
                "point root= (or DMCBOOK_DATA) at a local ImageNet train folder holding the class folders "
                + ", ".join(IMAGENET10_WNIDS)),
]}


def list_datasets() -> list[str]:
    """The names :func:`get_data` accepts."""
    return sorted(SPECS)


def _candidate_roots(spec: DatasetSpec, root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("DMCBOOK_DATA")
    roots = [Path(env)] if env else []
    return roots + [Path(p) for p in spec.system_roots] + [DEFAULT_CACHE]


def load_dataset(name: str, train: bool, root=None, download: bool = True) -> Dataset:
    """The raw (untransformed) split of data set ``name``, found or downloaded as the module says."""
    check_choice("data set", name, list_datasets())
    spec = SPECS[name]
    roots = _candidate_roots(spec, root)
    explicit = root if root is not None else os.environ.get("DMCBOOK_DATA")
    if explicit and not Path(explicit).is_dir():  # a typo must not become a new empty folder
        source = "root" if root is not None else "DMCBOOK_DATA"
        raise DataFileError(f"data root {explicit} ({source}) is not a directory; check the path, or create it "
                            "first if the data set should be downloaded there")
    reason = ""
    for candidate in roots:
        try:
            return spec.load(candidate, train, False)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            reason = f"{type(err).__name__}: {err}"
            # Only "not there" moves on to the next place; a damaged copy is reported below.
            if not isinstance(err, FileNotFoundError) and "not found" not in str(err).lower():
                raise DataFileError(f"data set {name!r} under {candidate} is damaged ({reason.splitlines()[0]}); "
                                    "delete or replace its files") from None
    if not download:
        reason = "downloads are switched off (download=False); " + reason
    elif name != "imagenet10":  # ImageNet cannot be downloaded by script
        target = roots[0] if (root is not None or os.environ.get("DMCBOOK_DATA")) else DEFAULT_CACHE
        try:
            target.mkdir(parents=True, exist_ok=True)
            return spec.load(target, train, True)
        except Exception as err:  # urllib, socket and checksum errors all mean "not from here"
            reason = f"{type(err).__name__}: {err}"
    raise DatasetUnavailable(name, [str(r) for r in roots], spec.how_to_get, reason) from None


def _channel_stats(spec: DatasetSpec, in_chans: int) -> tuple[tuple, tuple]:
    if in_chans == spec.in_chans:
        return spec.mean, spec.std
    if in_chans == 3:  # a grey image repeated three times
        return spec.mean * 3, spec.std * 3
    return (float(np.mean(spec.mean)),), (float(np.mean(spec.std)),)


def build_transforms(spec: DatasetSpec, image_size: int, in_chans: int, augment: str, train: bool):
    """The test transform, or the training transform for an augmentation level.

    ``basic`` is random crop with padding (random resized crop for large images) and a flip
    where mirroring keeps the class; ``paper`` adds AutoAugment with the paper's policy before
    and RandomErasing (p = 0.5) after, as DMCNet's recipe does.
    """
    check_choice("augmentation", augment, AUGMENTS)
    large = image_size > 64
    steps = []
    if in_chans != spec.in_chans:
        steps.append(T.Grayscale(num_output_channels=in_chans))
    if not train or augment == "none":
        steps += [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)] if large else [T.Resize((image_size, image_size))]
    else:
        if augment == "paper" and spec.autoaugment is not None:
            steps.append(T.AutoAugment(spec.autoaugment))
        if large:
            steps.append(T.RandomResizedCrop(image_size))
        else:
            steps += [T.Resize((image_size, image_size)), T.RandomCrop(image_size, padding=image_size // 8)]
        if spec.hflip:
            steps.append(T.RandomHorizontalFlip())
    mean, std = _channel_stats(spec, in_chans)
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment == "paper":
        steps.append(T.RandomErasing(p=0.5))
    return T.Compose(steps)


class _Transformed(Dataset):
    """Applies a transform on top of a raw data set (so train and test can share one raw copy)."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform
        self.classes = getattr(base, "classes", None)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        if isinstance(image, torch.Tensor):
            image = T.functional.to_pil_image(image)
        return self.transform(image.convert("RGB") if image.mode not in ("L", "RGB") else image), label


def _check_integer(what: str, value, least: int | None = None) -> None:
    """One line for a value that must be an integer (a bool or 2.5 is not), at least ``least``."""
    if not is_integer(value):
        raise ValueError(f"{what} must be an integer; got {value!r}")
    if least is not None and value < least:
        raise ValueError(f"{what} must be at least {least}; got {value}")


def _subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    # A subset larger than the data set is the whole set (the budget recipe's subset on the
    # small digits set relies on this); describe() reports the size actually used.
    if size is None or size >= len(dataset):
        return dataset
    index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    subset = Subset(dataset, index.sort().values.tolist())
    subset.classes = getattr(dataset, "classes", None)
    return subset


def loader_settings(image_size: int) -> dict:
    """Workers and pinned memory for this machine.

    On a GPU the workers decode and augment while the GPU computes (Colab has two CPUs, so two
    workers). On a CPU the model already uses every core, and small images cost little to
    prepare, so extra worker processes would only compete with it.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        return dict(num_workers=min(cpus, 8), pin_memory=True)
    return dict(num_workers=0 if image_size <= 64 else min(cpus, 4), pin_memory=False)


def _worker_loaders(train_set, test_set, batch_size, seed, settings):
    """DataLoaders whose workers read and augment.

    Their workers start afresh each epoch (not persistent): each new worker seeds its random
    numbers from the loader's generator, which the Trainer reseeds from (seed, epoch), so an
    epoch's augmentations are the same whether or not the run was interrupted before it;
    persistent workers carried their random state over from epochs that a resumed run never
    saw. The test loader's too: where old bundles await garbage collection (several runs in one
    notebook), workers forked later shut its persistent workers down from inside, and the
    parent then waited 5 s for each. A restart costs one fork per worker and epoch.
    """
    train_loader = DataLoader(train_set, batch_size, shuffle=True, drop_last=len(train_set) > batch_size,
                              generator=torch.Generator().manual_seed(seed), persistent_workers=False, **settings)
    test_loader = DataLoader(test_set, max(batch_size, 256), shuffle=False, persistent_workers=False, **settings)
    return train_loader, test_loader


@dataclass
class DataBundle:
    """The two splits of a data set, their loaders, and what a model needs to know about them."""
    name: str
    train_set: Dataset
    test_set: Dataset
    train_loader: DataLoader
    test_loader: DataLoader
    num_classes: int
    in_chans: int
    image_size: int
    classes: list
    mean: tuple
    std: tuple

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of a batch (N, C, H, W) or image (C, H, W): values in [0, 1]."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * std + mean).clamp(0, 1)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train_set)} train / {len(self.test_set)} test images, "
                f"{self.in_chans}x{self.image_size}x{self.image_size}, {self.num_classes} classes")


def _device_loaders(spec, train_set, test_set, image_size, in_chans, augment, batch_size, seed):
    """Both splits as uint8 tensors behind :class:`DeviceLoader`, with the transforms of
    :func:`build_transforms` applied to whole batches."""
    mean, std = _channel_stats(spec, in_chans)
    loaders = []
    for dataset, train in ((train_set, True), (test_set, False)):
        raw = Subset(dataset.dataset.base, dataset.indices) if isinstance(dataset, Subset) else dataset.base
        images, labels = images_as_uint8(raw, image_size, in_chans)
        transform = BatchAugment(image_size, mean, std, augment, spec.hflip, spec.autoaugment, train)
        size = batch_size if train else max(batch_size, 256)
        loaders.append(DeviceLoader(images, labels, size, transform, shuffle=train,
                                    drop_last=train and len(labels) > batch_size, seed=seed))
    return loaders


def get_data(name: str, root=None, image_size: int | None = None, in_chans: int | None = None,
             batch_size: int = 128, augment: str = "basic", train_subset: int | None = None,
             test_subset: int | None = None, seed: int = 0, download: bool = True,
             num_workers: int | None = None, on_device: bool | None = None) -> DataBundle:
    """Train and test sets and loaders of data set ``name`` (see :func:`list_datasets`).

    ``image_size`` and ``in_chans`` default to the data set's own; asking for other values resizes
    and converts (grey to RGB by repetition, RGB to grey by luminance). ``train_subset`` and
    ``test_subset`` draw a fixed random subset (seeded by ``seed``) for reduced budgets.
    ``on_device`` (default: for images up to 64 px) keeps both splits as uint8 tensors and
    augments whole batches with :class:`dmcbook.augment.DeviceLoader`; the engine moves them to
    its device. Larger images are read and augmented by DataLoader workers.
    """
    check_choice("data set", name, list_datasets())
    _check_integer("batch_size", batch_size, 1)
    for what, value, least in (("in_chans", in_chans, None), ("train_subset", train_subset, 1),
                               ("test_subset", test_subset, 1), ("num_workers", num_workers, 0)):
        if value is not None:
            _check_integer(what, value, least)
    _check_integer("seed", seed)
    spec = SPECS[name]
    if image_size is not None and (not is_integer(image_size)
                                   or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels; "
                         f"got {image_size!r}")
    image_size = image_size or spec.image_size
    in_chans = spec.in_chans if in_chans is None else in_chans
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3; got {in_chans}")
    train_raw = load_dataset(name, True, root, download)
    test_raw = load_dataset(name, False, root, download)
    classes = list(getattr(train_raw, "classes", None) or range(spec.num_classes))
    train_set = _subset(_Transformed(train_raw, build_transforms(spec, image_size, in_chans, augment, True)),
                        train_subset, seed)
    test_set = _subset(_Transformed(test_raw, build_transforms(spec, image_size, in_chans, augment, False)),
                       test_subset, seed)
    if on_device is None:
        on_device = image_size <= MAX_DEVICE_IMAGE_SIZE
    if on_device:
        train_loader, test_loader = _device_loaders(spec, train_set, test_set, image_size, in_chans, augment,
                                                    batch_size, seed)
    else:
        settings = loader_settings(image_size)
        if num_workers is not None:
            settings["num_workers"] = num_workers
        train_loader, test_loader = _worker_loaders(train_set, test_set, batch_size, seed, settings)
    mean, std = _channel_stats(spec, in_chans)
    return DataBundle(name, train_set, test_set, train_loader, test_loader, spec.num_classes, in_chans,
                      image_size, classes, mean, std)
