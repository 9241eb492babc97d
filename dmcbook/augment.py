"""Whole small data sets on the training device, augmented a batch at a time.

A GPU trains ResNet-34 on 32x32 images faster than two CPU workers can push images through PIL
(about 3 400 images/s with the paper's augmentation). For the small data sets (CIFAR, SVHN,
GTSRB at 32 px, the MNIST-like sets) :class:`DeviceLoader` therefore keeps the whole split on
the device as uint8 (CIFAR-10's 50 000 images are 150 MB) and augments each batch there, every
image with its own random parameters, as the PIL path does image by image:

    uint8 -> AutoAugment (the data set's policy, paper level) -> [0, 1] -> random crop with
    zero padding of size/8 -> horizontal flip where mirroring keeps the class -> normalise ->
    RandomErasing (p = 0.5, paper level)

Library choice. Crop, flip, erasing and normalisation: kornia's augmentation module, which draws
parameters per image (``same_on_batch=False``); torchvision's v2 transforms accept batched tensors
but draw one set of parameters per call, so a whole batch would share one crop and one flip.
AutoAugment: not kornia's, which picks one sub-policy per batch and whose Brightness and
Translate operations differ from torchvision's (on Fashion-MNIST, one Brightness sub-policy gave
a mean pixel of 0.72 under kornia and 0.25 under torchvision), but torchvision's own
policies and operations (the code the PIL path runs), applied per image by
:class:`PerImageAutoAugment` to groups of images that drew the same outcome.
``tests/test_augment.py`` compares the statistics of both paths.
Large images (Imagenette, ImageNet folders) keep the worker-based PIL path of :mod:`dmcbook.data`.
"""
from __future__ import annotations

import copy
import math

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Subset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

# Above this size a data set stays on the worker-based path (its images do not fit on a device).
MAX_DEVICE_IMAGE_SIZE = 64


class PerImageAutoAugment(nn.Module):
    """torchvision's AutoAugment for a batch of uint8 images (N, C, H, W), drawn per image as
    ``T.AutoAugment`` draws it for one image: a uniformly chosen sub-policy, each operation
    applied with its probability and, where signed, a random sign. The magnitudes are fixed per
    operation, so the images sharing an outcome go through torchvision's operation together
    (at most two calls per operation of each sub-policy, whatever the batch size)."""

    def __init__(self, policy: T.AutoAugmentPolicy, image_size: int):
        super().__init__()
        reference = T.AutoAugment(policy)
        # private torchvision helpers, used so that both paths run the very same operations
        self.policies = reference.policies
        self.space = reference._augmentation_space(10, (image_size, image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = images.clone()
        choice = torch.randint(len(self.policies), (len(images),), device=images.device)
        for index in choice.unique().tolist():
            rows = (choice == index).nonzero().squeeze(1)
            for name, probability, level in self.policies[index]:
                magnitudes, signed = self.space[name]
                magnitude = float(magnitudes[level]) if level is not None else 0.0
                applied = torch.rand(len(rows), device=images.device) <= probability
                negative = torch.randint(2, (len(rows),), device=images.device).bool() & signed
                for chosen, value in ((applied & ~negative, magnitude), (applied & negative, -magnitude)):
                    chosen = rows[chosen]
                    if len(chosen):
                        out[chosen] = _apply_op(out[chosen], name, value, interpolation=InterpolationMode.NEAREST,
                                                fill=None)
        return out


class BatchAugment(nn.Module):
    """The training (or test) transform of :func:`dmcbook.data.build_transforms` for a batch of
    uint8 images (N, C, H, W): float, normalised images (N, C, H, W) on the same device."""

    def __init__(self, image_size: int, mean, std, augment: str, hflip: bool, policy=None, train: bool = True):
        super().__init__()
        augmenting = train and augment != "none"
        self.autoaugment = PerImageAutoAugment(policy, image_size) if augmenting and augment == "paper" and policy else None
        geometry = []
        if augmenting:
            geometry.append(K.RandomCrop((image_size, image_size), padding=image_size // 8, fill=0.0))
            if hflip:
                geometry.append(K.RandomHorizontalFlip())
        self.geometry = nn.Sequential(*geometry)
        self.normalize = K.Normalize(torch.tensor(mean), torch.tensor(std))
        self.erasing = K.RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0) \
            if augmenting and augment == "paper" else None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.autoaugment is not None:  # on uint8, as on PIL images (posterize and equalize need it)
            images = self.autoaugment(images)
        x = self.normalize(self.geometry(images.float().div_(255)))
        if self.erasing is not None:
            x = self.erasing(x)
        return x.contiguous()


def images_as_uint8(dataset, image_size: int, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw data set (PIL images or uint8 arrays) as uint8 images (N, C, H, W) and labels (N,).

    Arrays already at the right size and channel count are taken as they are; anything else goes
    through PIL once (grey conversion and resize, as the test transform does)."""
    base, index = (dataset.dataset, np.asarray(dataset.indices)) if isinstance(dataset, Subset) else (dataset, None)
    array = getattr(base, "images", getattr(base, "data", None))
    labels = getattr(base, "targets", getattr(base, "labels", None))
    if isinstance(array, (np.ndarray, torch.Tensor)) and labels is not None:
        images = torch.from_numpy(np.array(array))  # a copy: Debian's arrays are read-only
        if images.ndim == 3:
            images = images.unsqueeze(1)
        elif images.shape[-1] == 3:  # (N, H, W, 3), as CIFAR stores it
            images = images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.array(labels), dtype=torch.long)
        if images.dtype == torch.uint8 and images.shape[1:] == (in_chans, image_size, image_size):
            if index is not None:
                images, labels = images[index], labels[index]
            return images.contiguous(), labels
    prepare = T.Compose([T.Resize((image_size, image_size)), T.PILToTensor()])
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        if isinstance(image, torch.Tensor):
            image = T.functional.to_pil_image(image)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        images.append(prepare(image.convert("L" if in_chans == 1 else "RGB")))  # "L" as T.Grayscale
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


class DeviceLoader:
    """Batches of (augmented images, labels) from uint8 images held on one device.

    It behaves like the DataLoader it replaces where the engine looks: ``len``, iteration,
    ``batch_size``, ``drop_last`` and a ``generator`` that the engine reseeds every epoch (the
    shuffle, so a resumed run sees the same batches). The augmentations draw from the device's
    global generator, which :func:`dmcbook.train.seed_everything` seeds. ``shard(rank, world)``
    makes each process of a distributed run take its slice of every global batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, transform: BatchAugment,
                 shuffle: bool, drop_last: bool, seed: int = 0):
        self.images, self.labels, self.transform = images, labels, transform
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = 0, 1

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "DeviceLoader":
        """Move the images (once) to the training device; the labels follow."""
        device = torch.device(device)
        if self.images.device != device:
            pin = device.type == "cuda"
            self.images = (self.images.pin_memory() if pin else self.images).to(device, non_blocking=pin)
            self.labels = self.labels.to(device)
            self.transform.to(device)
        return self

    def shard(self, rank: int, world: int) -> "DeviceLoader":
        """This loader for rank ``rank`` of ``world``: the same images, shuffle and generator."""
        sharded = copy.copy(self)
        sharded.rank, sharded.world = rank, world
        return sharded

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start:start + self.batch_size].tensor_split(self.world)[self.rank]
            yield self.transform(self.images[batch]), self.labels[batch]
