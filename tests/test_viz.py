import pytest
import torch

import dmcbook
from dmcbook import viz


def test_sample_images_are_real_square_photographs():
    images = viz.sample_images(size=64)
    assert set(images) == set(viz.PHOTOGRAPHS)
    for image in images.values():
        assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
        assert image.std() > 0.05  # a photograph, not a flat fill


def test_grad_cam_one_map_per_image_and_leaves_the_model_as_it_was():
    model = dmcbook.create_model("resnet18", 10, 3, width=8).train()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():  # the helper must enable gradients itself
        maps, targets = viz.grad_cam(model, x, model.layers[-1], targets=[1, 2, 3])
    assert maps.shape == (3, 32, 32) and targets == [1, 2, 3]
    assert model.training
    hooks = [m for m in model.modules() if m._forward_hooks or m._backward_hooks]
    assert not hooks, "Grad-CAM hooks were not released"
    # different targets give different maps for the same image
    maps_b, _ = viz.grad_cam(model, x[:1].repeat(2, 1, 1, 1), model.layers[-1], targets=[0, 5])
    assert not torch.allclose(torch.as_tensor(maps_b[0]), torch.as_tensor(maps_b[1]))


def test_grad_cam_rejects_a_wrong_number_of_targets():
    model = dmcbook.create_model("resnet18", 10, 1, width=8)
    with pytest.raises(ValueError, match="one target per image"):
        viz.grad_cam(model, torch.randn(2, 1, 28, 28), model.layers[-1], targets=[1])
