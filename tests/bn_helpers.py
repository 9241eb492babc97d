"""Shared by the model tests: a check with default BN statistics cannot see a BN."""
import torch
from torch.nn.modules.batchnorm import _BatchNorm


def randomize_bn(module):
    """Give every BN (2d, and the 1d of DRSTN's threshold) non-default statistics and affine
    parameters, then put ``module`` in eval mode: with running mean 0, variance 1, weight 1 and
    bias 0 an eval-mode BN is the identity (up to eps), and an equation check could not see it."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.eval()
