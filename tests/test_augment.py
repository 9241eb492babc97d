"""The batched, on-device augmentation against the PIL path it replaces: same statistics."""
import dataclasses

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from dmcbook import data as D
from dmcbook.augment import BatchAugment, DeviceLoader


def _pil_path(spec, images, augment):
    transform = D.build_transforms(spec, images.shape[-1], 1, augment, True)
    return torch.stack([transform(T.functional.to_pil_image(im)) for im in images])


def _batch_path(spec, images, augment):
    torch.manual_seed(0)
    return BatchAugment(images.shape[-1], spec.mean, spec.std, augment, spec.hflip, spec.autoaugment)(images)


def test_crop_and_flip_are_drawn_per_image_like_the_pil_path():
    spec = D.SPECS["fashion-mnist"]
    images = torch.zeros(3000, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 10, 5] = 255  # one bright pixel, left of the centre: where it lands shows crop and flip
    torch.manual_seed(0)
    paths = {"pil": _pil_path(spec, images, "basic"), "batch": _batch_path(spec, images, "basic")}
    found = {}
    for name, out in paths.items():
        where = out.flatten(1).argmax(1)
        rows, cols = where // 28, where % 28
        flipped = cols > 13
        shift = torch.where(flipped, 27 - cols, cols) - 5
        found[name] = dict(flipped=flipped.float().mean().item(),
                           rows=np.bincount((rows - 10 + 3).numpy(), minlength=7) / len(rows),
                           cols=np.bincount((shift + 3).numpy(), minlength=7) / len(rows))
    assert abs(found["pil"]["flipped"] - 0.5) < 0.04 and abs(found["batch"]["flipped"] - 0.5) < 0.04
    for axis in ("rows", "cols"):  # offsets uniform over -3..3 in both paths
        assert np.abs(found["pil"][axis] - found["batch"][axis]).max() < 0.04, (axis, found)
        assert np.abs(found["batch"][axis] - 1 / 7).max() < 0.04


def test_paper_augmentation_matches_the_pil_path_in_its_statistics():
    spec = dataclasses.replace(D.SPECS["fashion-mnist"], autoaugment=T.AutoAugmentPolicy.CIFAR10)
    raw = D.load_dataset("fashion-mnist", train=True)
    images = torch.from_numpy(np.array(raw.images[:1500])).unsqueeze(1)
    torch.manual_seed(0)
    pil, batch = _pil_path(spec, images, "paper"), _batch_path(spec, images, "paper")
    assert pil.shape == batch.shape and batch.dtype == torch.float32
    # the overall level and spread, and where the mass lies image-wide
    assert abs(pil.mean() - batch.mean()) < 0.05 and abs(pil.std() / batch.std() - 1) < 0.05
    correlation = np.corrcoef(pil.mean(0).flatten(), batch.mean(0).flatten())[0, 1]
    assert correlation > 0.97
    # RandomErasing writes exact zeros (normalised); the data never hits 0 exactly otherwise
    erased = {name: (out == 0).flatten(1).float().mean(1) for name, out in (("pil", pil), ("batch", batch))}
    for name, area in erased.items():
        assert abs((area > 0).float().mean() - 0.5) < 0.05, name
    assert abs(erased["pil"].mean() - erased["batch"].mean()) < 0.02


def test_test_batches_equal_the_pil_test_transform():
    on_device = D.get_data("digits", batch_size=64, augment="paper", test_subset=100)
    workers = D.get_data("digits", batch_size=64, augment="paper", test_subset=100, on_device=False, num_workers=0)
    assert isinstance(on_device.test_loader, DeviceLoader)
    for (a, ya), (b, yb) in zip(on_device.test_loader, workers.test_loader):
        assert torch.equal(ya, yb) and torch.allclose(a, b, atol=1e-6)


def test_a_device_loader_reshuffles_by_its_generator_and_shards_each_global_batch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    loader = DeviceLoader(images, torch.arange(10), 4, BatchAugment(4, (0.0,), (1 / 255,), "none", False),
                          shuffle=True, drop_last=True)
    assert len(loader) == 2
    loader.generator.manual_seed(3)
    first = [y for _, y in loader]
    loader.generator.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader]))
    halves = []
    for rank in (0, 1):
        loader.generator.manual_seed(3)
        halves.append([y for _, y in loader.shard(rank, 2)])
    assert all(torch.equal(torch.cat([a, b]), y) for a, b, y in zip(*halves, first))
    x, y = next(iter(loader))
    assert torch.equal(x[:, 0, 0, 0], y.float())  # images follow their labels


@pytest.mark.parametrize("augment", ["none", "basic", "paper"])
def test_small_data_sets_live_on_the_device_and_large_ones_keep_workers(augment):
    bundle = D.get_data("digits", batch_size=16, augment=augment, train_subset=64)
    x, y = next(iter(bundle.train_loader))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.int64 and len(bundle.train_loader) == 4
    assert isinstance(bundle.train_loader, DeviceLoader)
    assert not isinstance(D.get_data("digits", batch_size=16, on_device=False).train_loader, DeviceLoader)
