import pytest
import torch

import dmcbook
from dmcbook.profile import count_params


def test_baselines_are_registered():
    assert {"resnet18", "resnet34", "resnet50"} <= set(dmcbook.list_models())


@pytest.mark.parametrize("stem,size", [("cifar", 32), ("cifar", 28), ("imagenet", 224)])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_resnet_shapes(stem, size, in_chans):
    model = dmcbook.create_model("resnet18", num_classes=7, in_chans=in_chans, stem=stem, width=8).eval()
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 7)


def test_paper_size_resnet34_matches_the_papers_count():
    # DMCNet's Table 7 lists ResNet-34 (10 classes) at 21.34 M; GDFRNet's Table 8 at 21.28 M.
    params = count_params(dmcbook.create_model("resnet34", 10, 3, "imagenet")) / 1e6
    assert abs(params - 21.28) < 0.02


def test_cifar_stem_has_no_max_pool_and_imagenet_stem_has_one():
    cifar = dmcbook.create_model("resnet18", stem="cifar", width=8)
    imagenet = dmcbook.create_model("resnet18", stem="imagenet", width=8)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in cifar.modules())
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in imagenet.modules())
    assert cifar.stem[0].kernel_size == (3, 3) and imagenet.stem[0].kernel_size == (7, 7)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        dmcbook.create_model("resnet19")


def test_unknown_option_and_stem_are_value_errors():
    with pytest.raises(ValueError, match="resnet18"):
        dmcbook.create_model("resnet18", colour="blue")
    with pytest.raises(ValueError, match="unknown stem"):
        dmcbook.create_model("resnet18", stem="tiny")
    for width in (True, 0, 2.5):  # a bool is an int to Python; True would build width 1
        with pytest.raises(ValueError, match="width must be a positive integer"):
            dmcbook.create_model("resnet18", width=width)


def test_wrong_channels_or_rank_say_what_was_expected():
    model = dmcbook.create_model("resnet18", in_chans=1, width=8)
    with pytest.raises(ValueError, match=r"expects 1-channel images \(N, 1, H, W\); got 3 channels"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 1, H, W\); got \(1, 32, 32\)"):
        model(torch.randn(1, 32, 32))
