"""DRSTN: soft thresholding (Eq. 15-16), the channel-wise threshold, V1-V5, model and parameter transfer."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from dmcbook import create_model
from dmcbook.models.common import ResNet, scaled_widths
from dmcbook.inside.drstn import threshold_statistics
from dmcbook.models.drstn import SoftThreshold, STRB, soft_threshold
from dmcbook.transfer import (WeightsUnavailable, drstn_from_resnet18, init_from_checkpoint,
                              resnet18_state_dict, torchvision_to_dmcbook)

from dmcbook.verify import batch_norm_eval, randomize_bn

VERSIONS = ("drstn_v1", "drstn_v2", "drstn_v3", "drstn_v4", "drstn_v5")
LAYOUTS = {"drstn_v1": (2, 2, 2, 2), "drstn_v2": (2, 2, 2, 2), "drstn_v3": (1, 1, 1, 1),
           "drstn_v4": (2, 3, 5, 2), "drstn_v5": (2, 2, 2)}


def piecewise(x, tau):
    """Eq. (15) written case by case."""
    return torch.where(x > tau, x - tau, torch.where(x < -tau, x + tau, torch.zeros_like(x)))


def test_soft_threshold_is_eq15_per_channel():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5) * 2
    tau = torch.tensor([0.1, 0.7, 1.5]).view(1, 3, 1, 1)
    assert torch.equal(soft_threshold(x, tau), piecewise(x, tau))
    assert torch.equal(soft_threshold(x, 0.5), piecewise(x, torch.tensor(0.5)))


def test_soft_threshold_gradient_is_eq16():
    x = torch.tensor([-3.0, -1.2, -0.9, -0.2, 0.3, 0.95, 1.1, 4.0], requires_grad=True)
    soft_threshold(x, 1.0).sum().backward()
    expected = (x.detach().abs() > 1.0).float()  # Eq. (16): 1 outside [-tau, tau], 0 inside
    assert torch.equal(x.grad, expected)


def test_threshold_is_nonnegative_below_the_channel_mean_magnitude():
    torch.manual_seed(0)
    st = SoftThreshold(6).train()
    x = torch.randn(4, 6, 7, 7) * torch.arange(1, 7).view(1, 6, 1, 1)
    tau = st.thresholds(x)
    a = x.abs().mean(dim=(2, 3), keepdim=True)
    assert tau.shape == (4, 6, 1, 1)
    assert (tau >= 0).all() and (tau < a).all()
    assert torch.allclose(st(x), piecewise(x, tau))


def test_threshold_is_channel_wise_not_channel_shared():
    # A widely copied port computes A as the mean over channels (DRSN-CS) under a "CW" label.
    # Channel-wise: a silent channel gets tau = 0 whatever the others do ...
    torch.manual_seed(0)
    st = SoftThreshold(4, reduction=1).eval()  # M = C, so the FCs can be diagonal below
    x = torch.randn(3, 4, 6, 6)
    x[:, 2] = 0
    tau = st.thresholds(x).flatten(1)
    assert (tau[:, 2] == 0).all() and (tau[:, [0, 1, 3]] > 0).all()
    # ... and with the FC layers not mixing channels (diagonal weights), changing one channel's
    # input changes that channel's tau alone.
    with torch.no_grad():
        st.fc1.weight.copy_(torch.diag(torch.rand(4) + 0.5))
        st.fc2.weight.copy_(torch.diag(torch.rand(4) + 0.5))
        st.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(3, 4, 6, 6)
    y = x.clone()
    y[:, 1] *= 3
    changed = (st.thresholds(x) != st.thresholds(y)).flatten(1)
    assert changed[:, 1].all() and not changed[:, [0, 2, 3]].any()


def test_eval_thresholds_follow_the_formula_with_running_statistics():
    # In eval mode the threshold BN normalises with its running statistics: tau is the formula
    # of Fig. 2 written out here, and one sample's tau does not depend on the rest of the batch.
    torch.manual_seed(0)
    st = randomize_bn(SoftThreshold(8))
    x = torch.randn(5, 8, 6, 6) * 2
    a = x.abs().mean(dim=(2, 3))
    bn = st.bn
    h = batch_norm_eval(st.fc1(a), bn)
    alpha = torch.sigmoid(st.fc2(F.relu(h)))
    with torch.no_grad():
        assert torch.allclose(st.thresholds(x).flatten(1), a * alpha, atol=1e-6)
        assert torch.allclose(st.thresholds(x[:2]), st.thresholds(x)[:2], atol=1e-6)


def test_hidden_width_is_c_over_4_by_default_and_c_with_reduction_1():
    assert SoftThreshold(64).fc1.out_features == 16 and SoftThreshold(64, 1).fc1.out_features == 64
    assert SoftThreshold(2).fc1.out_features == 1  # never empty at small widths


def test_batch_of_one_in_training_mode_uses_running_statistics():
    torch.manual_seed(0)
    st = SoftThreshold(5)
    with torch.no_grad():
        st.bn.running_mean.uniform_(-1, 1)
        st.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 5, 4, 4)
    before = st.bn.running_mean.clone()
    trained = st.train()(x)
    assert torch.equal(st.bn.running_mean, before)  # one sample does not move the statistics
    assert torch.allclose(trained, st.eval()(x))


def test_strb_shrinks_the_residual_branch_before_the_add():
    torch.manual_seed(0)
    block = randomize_bn(STRB(4, 4))
    x = torch.randn(2, 4, 6, 6)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    expected = F.relu(piecewise(branch, block.soft_threshold.thresholds(branch)) + x)
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_downsampling_strb_in_training_mode_is_its_formula():
    # The down-sampling path (stride 2, 1x1 projection shortcut), in training mode, written out with
    # functional ops on the block's weights: every BN, the threshold's BN1d included, must use the
    # batch's statistics, and the shortcut must be the projection, for the two to agree.
    torch.manual_seed(0)
    projection = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    block = randomize_bn(STRB(4, 8, stride=2, downsample=projection)).train()
    x = torch.randn(3, 4, 9, 9)

    def batch_norm(h, bn):
        return F.batch_norm(h, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)

    with torch.no_grad():
        branch = F.relu(batch_norm(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
        branch = batch_norm(F.conv2d(branch, block.conv2.weight, padding=1), block.bn2)
        st = block.soft_threshold
        a = branch.abs().mean(dim=(2, 3))
        hidden = F.relu(batch_norm(F.linear(a, st.fc1.weight), st.bn))
        tau = (a * torch.sigmoid(F.linear(hidden, st.fc2.weight, st.fc2.bias)))[:, :, None, None]
        shortcut = batch_norm(F.conv2d(x, projection[0].weight, stride=2), projection[1])
        expected = F.relu(piecewise(branch, tau) + shortcut)
        out = block(x)
    assert out.shape == (3, 8, 5, 5)
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("name", VERSIONS)
@pytest.mark.parametrize("size,in_chans", [(28, 1), (32, 3), (28, 3), (32, 1)])
def test_shapes(name, size, in_chans):
    model = create_model(name, num_classes=7, in_chans=in_chans, width=4).eval()
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 7)


def test_table2_layouts_and_stems():
    for name, layout in LAYOUTS.items():
        for stem, stride in (("cifar", 1), ("imagenet", 2)):
            model = create_model(name, stem=stem, width=4)
            assert tuple(len(stage) for stage in model.layers) == layout
            assert all(isinstance(b, STRB) for stage in model.layers for b in stage)
            conv = model.stem[0]
            assert conv.kernel_size == ((7, 7) if name == "drstn_v1" else (3, 3))
            assert conv.stride == (stride, stride)
            assert isinstance(model.stem[-1], nn.MaxPool2d) == (stem == "imagenet")


def soft_threshold_overhead(layout, width=64, reduction=4):
    """Each STRB adds FC(C->M, no bias) + BN1d(M) + FC(M->C with bias), M = C/reduction: 2CM + 2M + C."""
    return sum(n * (2 * c * (c // reduction) + 2 * (c // reduction) + c)
               for n, c in zip(layout, scaled_widths(width, len(layout))))


@pytest.mark.parametrize("name", VERSIONS)
@pytest.mark.parametrize("stem,num_classes,in_chans", [("imagenet", 1000, 3), ("cifar", 10, 1)])
def test_paper_size_parameter_counts(name, stem, num_classes, in_chans):
    layout = LAYOUTS[name]
    plain = ResNet(BasicBlock, layout, num_classes, in_chans, stem, scaled_widths(64, len(layout)))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    kernel_area = 49 if name == "drstn_v1" else 9
    stem_area = 49 if stem == "imagenet" else 9
    expected = count(plain) + soft_threshold_overhead(layout) + 64 * in_chans * (kernel_area - stem_area)
    assert count(create_model(name, num_classes=num_classes, in_chans=in_chans, stem=stem)) == expected


def test_v1_is_resnet18_plus_the_shrinkage_overhead():
    resnet18 = sum(p.numel() for p in torchvision.models.resnet18(weights=None).parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert resnet18 == 11_689_512
    # M = C/4 (the reference TFLearn code, the default) and M = C (the Keras file)
    assert count(create_model("drstn_v1", num_classes=1000, stem="imagenet")) == 11_689_512 + 351_040
    assert count(create_model("drstn_v1", num_classes=1000, stem="imagenet", reduction=1)) == 11_689_512 + 1_398_400
    # with 10 classes, the numbers the chapter quotes: 11.53 M and 12.58 M
    assert round(count(create_model("drstn_v1", stem="imagenet")) / 1e6, 2) == 11.53
    assert round(count(create_model("drstn_v1", stem="imagenet", reduction=1)) / 1e6, 2) == 12.58


@pytest.mark.parametrize("name", VERSIONS)
def test_gradients_reach_every_parameter(name):
    # In float64 a parameter that cannot learn (a bias right before BN) shows as ~1e-17, not ~1e-8.
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, width=4).train().double()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().max() > 1e-6]
    assert not silent


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="stem_kernel"):
        create_model("drstn_v2", stem_kernel=5)
    with pytest.raises(ValueError, match="reduction"):
        create_model("drstn_v5", reduction=0)
    with pytest.raises(ValueError, match="stem"):
        create_model("drstn_v1", stem="vit")


def test_threshold_statistics_cover_every_block():
    model = create_model("drstn_v3", in_chans=1, width=4)
    stats = threshold_statistics(model, torch.randn(3, 1, 28, 28))
    assert [s["layer"] for s in stats] == [f"layers.{i}.0.soft_threshold" for i in range(4)]
    for s, width in zip(stats, scaled_widths(4)):
        assert s["tau"].shape == (3, width) and 0 <= s["zero_before"] <= s["zeroed"] <= 1
    assert model.training  # restored


def test_resnet18_state_dict_transfers_with_every_key_reported():
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None, num_classes=10)
    state = {torchvision_to_dmcbook(k): v for k, v in source.state_dict().items()}
    model, report = drstn_from_resnet18("drstn_v1", source, num_classes=10, in_chans=3, stem="imagenet")
    target = model.state_dict()
    assert sorted(report.copied + report.adapted + list(report.skipped)) == sorted(state)
    assert sorted(report.copied + report.adapted + report.new) == sorted(target)
    assert not report.skipped and not report.adapted
    assert all(torch.equal(target[k], state[k]) for k in report.copied)
    assert report.new and all(".soft_threshold." in k for k in report.new)


def test_transfer_adapts_the_input_conv_and_skips_what_does_not_fit():
    source = torchvision.models.resnet18(weights=None)
    _, v1 = drstn_from_resnet18("drstn_v1", source, in_chans=1)
    assert v1.adapted == ["stem.0.weight"] and set(v1.skipped) == {"fc.weight", "fc.bias"}
    _, v5 = drstn_from_resnet18("drstn_v5", source, in_chans=1)
    assert "stem.0.weight" in v5.skipped  # 7x7 ImageNet kernel, 3x3 Conv_1
    assert all(k.startswith(("layers.3.", "fc.", "stem.0.")) for k in v5.skipped)
    assert {"fc.weight", "fc.bias"} <= set(v5.skipped)  # the head goes whole: 512 features do not fit 256


def test_checkpoints_of_other_architectures_are_refused(tmp_path):
    for other in ("squeezenet1_1", "resnet34"):  # other names altogether; same names, more blocks
        path = tmp_path / f"{other}.pt"
        torch.save(torchvision.models.get_model(other, weights=None).state_dict(), path)
        with pytest.raises(ValueError, match="not a ResNet-18"):
            drstn_from_resnet18("drstn_v1", path)
    model = create_model("drstn_v5", in_chans=1, width=4)
    torch.save({"model": create_model("resnet18", in_chans=1, width=4).state_dict()}, tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="not a drstn_v5"):
        init_from_checkpoint(model, tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="not a drstn_v5"):
        init_from_checkpoint(model, create_model("drstn_v5", in_chans=1, width=8))


def test_missing_imagenet_weights_say_what_to_do(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsUnavailable, match="any ResNet-18"):
        resnet18_state_dict()


def _sgd(model, loader, steps, seed):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    model.train()
    while len(losses) < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def test_parameter_transfer_starts_lower_than_scratch_on_real_data():
    from dmcbook.data import get_data
    fashion = get_data("fashion-mnist", augment="none", train_subset=2048, batch_size=64, num_workers=0)
    digits = get_data("digits", image_size=28, augment="none", batch_size=64, num_workers=0)
    torch.manual_seed(0)
    source = create_model("drstn_v5", in_chans=1, width=8)
    _sgd(source, fashion.train_loader, 64, seed=0)
    torch.manual_seed(1)
    scratch = create_model("drstn_v5", in_chans=1, width=8)
    transferred = create_model("drstn_v5", in_chans=1, width=8)
    transferred.load_state_dict(scratch.state_dict())  # same head initialisation for both
    report = init_from_checkpoint(transferred, {"model": source.state_dict()})
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    epoch = len(digits.train_loader)
    first_epoch = lambda m: sum(_sgd(m, digits.train_loader, epoch, seed=2)) / epoch  # noqa: E731
    assert first_epoch(transferred) < first_epoch(scratch) - 0.05
