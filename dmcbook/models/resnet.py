"""Plain ResNet baselines (He et al. 2016) with both stems and a width option.

The blocks are torchvision's own ``BasicBlock`` and ``Bottleneck``, so the baseline is the
community's reference block; only the stem and the stage widths are configurable here.
At ``width=64`` with ``stem="imagenet"`` the parameter counts equal torchvision's.
"""
from torchvision.models.resnet import BasicBlock, Bottleneck

from .common import ResNet, scaled_widths
from .registry import register_model


def _resnet(block, layers, num_classes, in_chans, stem, width=64, shortcut="conv"):
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, stem=stem,
                  widths=scaled_widths(width), shortcut=shortcut)


@register_model
def resnet18(num_classes=10, in_chans=3, stem="cifar", width=64, shortcut="conv"):
    """ResNet-18: BasicBlocks (2, 2, 2, 2)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, stem, width, shortcut)


@register_model
def resnet34(num_classes=10, in_chans=3, stem="cifar", width=64, shortcut="conv"):
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, stem, width, shortcut)


@register_model
def resnet50(num_classes=10, in_chans=3, stem="cifar", width=64, shortcut="conv"):
    """ResNet-50: Bottlenecks (3, 4, 6, 3), expansion 4."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, stem, width, shortcut)
