"""Helpers for checking a module against its paper's equations, shared by the chapters' checks
and the tests. A check with default BN statistics cannot see a BN: in evaluation mode, with
running mean 0, variance 1, weight 1 and bias 0, a BN is the identity (up to eps)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomize_bn(module: nn.Module) -> nn.Module:
    """Give every BN of ``module`` (any dimension) random running statistics and affine
    parameters, and put ``module`` in evaluation mode; returns it."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.eval()


def batch_norm_eval(x: torch.Tensor, bn: _BatchNorm) -> torch.Tensor:
    """An evaluation-mode BN written out: ``(x - mean) / sqrt(var + eps) * weight + bias`` per
    channel (dimension 1 of ``x``), from ``bn``'s running statistics and affine parameters."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)
