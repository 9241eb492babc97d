"""Model transfer and parameter transfer, as DRSTN uses them (Cao and Zhu 2024).

*Model transfer* (Sec. 2.3, 3.3): build a DRSTN from a trained ResNet-18, copying every weight
whose name and shape match and leaving the new soft-threshold layers at their initialisation.
*Parameter transfer* (Sec. 4.3): initialise a network for a new data set from the best checkpoint
of the same network trained on another one, with a new classifier head.

Both return a :class:`TransferReport` that accounts for every key on both sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.models import adapt_input_conv
from torch import nn

from .models.registry import create_model

HEAD_PREFIX = "fc."
INPUT_CONV = "stem.0.weight"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be downloaded or found on this machine."""


@dataclass
class TransferReport:
    """Where each key went. ``copied`` and ``adapted`` are target keys filled from the source
    (``adapted``: the input convolution summed or tiled to another channel count, as timm does);
    ``skipped`` maps each source key that was not used to the reason; ``new`` are target keys
    left at their initialisation."""
    copied: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"copied {len(self.copied)}, adapted {len(self.adapted)}, skipped {len(self.skipped)}, "
                f"newly initialised {len(self.new)} tensors")

    def rows(self) -> list[dict]:
        """One row per key, for a table: key, what happened, why."""
        rows = [dict(key=k, action="copied", reason="") for k in self.copied]
        rows += [dict(key=k, action="adapted", reason="input channels adapted") for k in self.adapted]
        rows += [dict(key=k, action="skipped", reason=r) for k, r in self.skipped.items()]
        rows += [dict(key=k, action="new", reason="not in the source") for k in self.new]
        return rows

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  skipped {k}: {r}" for k, r in self.skipped.items()]
        lines += [f"  new     {k}" for k in self.new]
        return "\n".join(lines)


def torchvision_to_dmcbook(key: str) -> str:
    """torchvision's ResNet names -> this package's: ``conv1``/``bn1`` are ``stem.0``/``stem.1``
    and ``layerN`` is ``layers.(N-1)``; block and head names are the same. timm's ResNet family
    uses the same names (its deep stem's ``conv1.i`` becomes ``stem.0.i``), so timm's
    ``resnest50d`` loads into ``resneskt50(stem="imagenet", deep_stem=True, avd=True, spatial=False)``."""
    key = re.sub(r"^conv1\.", "stem.0.", key)
    key = re.sub(r"^bn1\.", "stem.1.", key)
    return re.sub(r"^layer(\d)\.", lambda m: f"layers.{int(m.group(1)) - 1}.", key)


def state_dict_of(source) -> dict[str, torch.Tensor]:
    """A state dict from a module, a state dict, a dmcbook checkpoint (``{"model": ...}``) or a
    path to any of these (read with ``weights_only=True``, so no code in the file can run)."""
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(source.get(wrapper), dict):
                return source[wrapper]
        if all(isinstance(v, torch.Tensor) for v in source.values()):
            return source
    raise ValueError(f"cannot read a state dict from {type(source).__name__}; pass a module, "
                     "a state dict, a checkpoint dict with a 'model' entry, or a path to one")


def _imagenet_state_dict(weights, alternative: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained ``weights`` (downloaded once, then cached by torch.hub)."""
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # offline: URLError or a socket error, depending on the platform
        raise WeightsUnavailable(
            f"torchvision's ImageNet weights {weights} could not be loaded ({type(err).__name__}: {err}). "
            f"This machine is probably offline. Run where {weights.url} can be downloaded (Colab can), "
            f"copy that file to {Path(torch.hub.get_dir()) / 'checkpoints'}, {alternative}.") from None


# Table 1: torchvision's name and the Grad-CAM layer (the last convolutional activation) of each network.
TABLE1_NETWORKS = {
    "SqueezeNet1_1": ("squeezenet1_1", lambda m: m.features[-1]),  # the last Fire module, 13x13
    "AlexNet": ("alexnet", lambda m: m.features[11]),              # the ReLU after conv5, 13x13
    "VGG-16": ("vgg16", lambda m: m.features[29]),                 # the ReLU after conv5_3, 14x14
    "ResNet-18": ("resnet18", lambda m: m.layer4[-1]),             # the last BasicBlock, 7x7
}


def imagenet_networks() -> dict[str, tuple[nn.Module, nn.Module]]:
    """Table 1's ImageNet-pretrained networks in eval mode, each with its Grad-CAM target layer.
    Raises :class:`WeightsUnavailable` when any of the weights cannot be had."""
    from torchvision.models import get_model, get_model_weights
    networks = {}
    for label, (name, target_layer) in TABLE1_NETWORKS.items():
        weights = get_model_weights(name).IMAGENET1K_V1
        model = get_model(name, weights=None)
        model.load_state_dict(_imagenet_state_dict(weights, "or use the comparison on networks trained here"))
        networks[label] = (model.eval(), target_layer(model))
    return networks


def resnet18_state_dict(source=None) -> dict[str, torch.Tensor]:
    """ResNet-18 weights in this package's key names.

    ``source=None`` loads torchvision's ImageNet weights (``IMAGENET1K_V1``; downloaded once,
    then cached by torch.hub); otherwise any ResNet-18 checkpoint, torchvision's or dmcbook's.
    Raises :class:`WeightsUnavailable` saying what to do when the ImageNet weights cannot be had,
    and ValueError when the checkpoint is not a ResNet-18.
    """
    if source is None:
        from torchvision.models import ResNet18_Weights
        source = _imagenet_state_dict(ResNet18_Weights.IMAGENET1K_V1,
                                      "or pass the path of any ResNet-18 checkpoint as `source`")
    state = {torchvision_to_dmcbook(k): v for k, v in state_dict_of(source).items()}
    _check_resnet18(state)
    return state


def _resnet18_keys() -> set[str]:
    from torchvision.models import resnet18
    return {torchvision_to_dmcbook(k) for k in resnet18(weights=None).state_dict()}


def _check_resnet18(state: dict) -> None:
    expected, got = _resnet18_keys(), set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise ValueError(
            f"this is not a ResNet-18 state dict: {len(missing)} of its keys are missing "
            f"(e.g. {missing[:3]}) and {len(unexpected)} are not ResNet-18's (e.g. {unexpected[:3]}). "
            "Model transfer needs ResNet-18 weights (BasicBlocks 2, 2, 2, 2); for a checkpoint of the "
            "same architecture as the target use `init_from_checkpoint`.")


def transfer_state(model: nn.Module, state: dict[str, torch.Tensor], reset_head: bool = False) -> TransferReport:
    """Copy into ``model`` every tensor of ``state`` whose key exists in the model with the same
    shape; the input convolution is adapted when only its channel count differs (timm's
    ``adapt_input_conv``: summed to one channel, tiled to more). The classifier is copied whole or
    not at all: it is skipped when ``reset_head`` is set or when its weight does not fit (another
    class count or feature width). The model's other tensors keep their initialisation."""
    target = model.state_dict()
    head = HEAD_PREFIX + "weight"
    if reset_head:
        head_reason = "replaced on purpose (new head)"
    elif head in state and head in target and state[head].shape != target[head].shape:
        head_reason = f"new head: {tuple(state[head].shape)} does not fit {tuple(target[head].shape)}"
    else:
        head_reason = None
    report, filled = TransferReport(), {}
    for key, value in state.items():
        if head_reason and key.startswith(HEAD_PREFIX):
            report.skipped[key] = head_reason
        elif key not in target:
            report.skipped[key] = "no such layer in the target"
        elif value.shape == target[key].shape:
            filled[key] = value
            report.copied.append(key)
        elif key == INPUT_CONV and value.shape[0] == target[key].shape[0] and value.shape[2:] == target[key].shape[2:]:
            filled[key] = adapt_input_conv(target[key].shape[1], value)
            report.adapted.append(key)
        else:
            report.skipped[key] = f"shape {tuple(value.shape)} does not fit {tuple(target[key].shape)}"
    report.new = [k for k in target if k not in filled]
    if not filled:
        raise ValueError("no tensor of the source fits the model (different widths?): " + report.summary())
    model.load_state_dict(filled, strict=False)
    return report


def drstn_from_resnet18(name: str = "drstn_v1", source=None, num_classes: int = 10, in_chans: int = 3,
                        stem: str = "imagenet", **options) -> tuple[nn.Module, TransferReport]:
    """Model transfer (Sec. 3.3): the DRSTN version ``name`` with ResNet-18's weights.

    ``source`` is as in :func:`resnet18_state_dict` (None: torchvision's ImageNet weights). Every
    convolution and BN of the blocks both networks have is copied; the soft-threshold layers,
    blocks that ResNet-18 lacks (V4) and a 3x3 Conv_1 (V2-V5; ImageNet's is 7x7) keep their
    initialisation; the classifier is copied only when the class counts agree.
    """
    state = resnet18_state_dict(source)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, stem=stem, **options)
    return model, transfer_state(model, state)


def init_from_checkpoint(model: nn.Module, checkpoint, reset_head: bool = True) -> TransferReport:
    """Parameter transfer (Sec. 4.3): load ``checkpoint`` (the best weights of the same network on
    the source data set) into ``model`` built for the target data set. With ``reset_head`` the
    classifier stays at its initialisation even when the class counts agree, because class k of the
    source (a sneaker, say) is not class k of the target (a digit). The input convolution may differ
    in channel count (RGB CIFAR-10 -> grey MNIST, as in the paper); any other difference means the
    checkpoint is of another architecture, and raises ValueError."""
    state = state_dict_of(checkpoint)
    target = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    misfit = sorted(k for k in set(state) & set(target) if not k.startswith(HEAD_PREFIX) and k != INPUT_CONV
                    and state[k].shape != target[k].shape)
    if missing or unexpected or misfit:
        raise ValueError(
            f"the checkpoint is not a {name} of this width: {len(missing)} of the model's keys are missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} are not the model's (e.g. {unexpected[:3]}) and "
            f"{len(misfit)} have other shapes (e.g. {misfit[:3]}). Parameter transfer needs a checkpoint "
            "of the same network; to start a DRSTN from ResNet-18 use `drstn_from_resnet18`.")
    return transfer_state(model, state, reset_head)
