"""The package's ResNet-family classifiers as Faster R-CNN backbones (ResNeSkt's Table 3).

Everything detection-specific is torchvision's: ``BackboneWithFPN`` takes the four stages' outputs
into a feature pyramid and ``FasterRCNN`` adds the region proposal network and the box head. This
module only exposes a classifier built on :class:`dmcbook.models.common.ResNet` (stem + ``layers``)
as the named children that torchvision's ``IntermediateLayerGetter`` expects.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by torchvision's FrozenBatchNorm2d with the same statistics, in place.

    Detection batches hold a few images each, too few for batch statistics (torchvision freezes the
    BN of its own ResNet backbones for the same reason).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def resnet_fpn_backbone(model: nn.Module, returned_layers: Sequence[int] = (1, 2, 3, 4),
                        out_channels: int = 256, frozen_bn: bool = True) -> BackboneWithFPN:
    """A torchvision ``BackboneWithFPN`` over the stem and stages of ``model`` (its classifier is dropped).

    ``returned_layers`` are the stages (1-4) that feed the pyramid, as in torchvision's
    ``resnet_fpn_backbone``. The stages' channel counts are read from a dry run.
    """
    stages = len(model.layers)
    if not returned_layers or any(i not in range(1, stages + 1) for i in returned_layers):
        raise ValueError(f"returned_layers must be a non-empty subset of 1..{stages}; got {tuple(returned_layers)}")
    body = nn.Sequential(OrderedDict([("stem", model.stem)] +
                                     [(f"layer{i + 1}", layer) for i, layer in enumerate(model.layers)]))
    if frozen_bn:
        freeze_batchnorm(body)
    was_training = body.training
    body.eval()
    with torch.no_grad():
        x = body.stem(torch.zeros(1, getattr(model, "in_chans", 3), 64, 64))
        channels = []
        for layer in body[1:]:
            x = layer(x)
            channels.append(x.shape[1])
    body.train(was_training)
    return BackboneWithFPN(body, {f"layer{i}": str(n) for n, i in enumerate(returned_layers)},
                           [channels[i - 1] for i in returned_layers], out_channels)


def fasterrcnn(model: nn.Module, num_classes: int = 91, returned_layers: Sequence[int] = (1, 2, 3, 4),
               out_channels: int = 256, frozen_bn: bool = True, **kwargs) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` on :func:`resnet_fpn_backbone` of ``model``.

    ``num_classes`` counts the background (91 = COCO's layout). Keyword arguments go to ``FasterRCNN``
    (``min_size``, ``max_size``, ``image_mean``, ``image_std`` for a 1-channel model, ...).
    """
    return FasterRCNN(resnet_fpn_backbone(model, returned_layers, out_channels, frozen_bn),
                      num_classes=num_classes, **kwargs)
