import pytest
import numpy as np
import torch
import torch.nn.functional as F

import dmcbook
from dmcbook import viz

from dmcbook.verify import randomize_bn


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


def test_grad_cam_is_eq11_and_eq12():
    # Eq. (11): each channel's weight is the mean gradient of the class score over its map A^k;
    # Eq. (12): ReLU of the weighted sum of the maps. Written out with a forward hook and autograd,
    # resized bilinearly to the image and min-max scaled (the library scales before resizing and
    # again after; a bilinear resize commutes with that affine map, so once after is the same).
    torch.manual_seed(0)
    model = randomize_bn(dmcbook.create_model("resnet18", 10, 3, width=8))
    x, targets = torch.randn(3, 3, 32, 32), [1, 4, 7]
    maps, _ = viz.grad_cam(model, x, model.layers[-1], targets=targets)
    captured = []
    hook = model.layers[-1].register_forward_hook(lambda module, inputs, out: captured.append(out))
    try:
        scores = model(x)[range(3), targets]
    finally:
        hook.remove()
    activations = captured[0]
    grads, = torch.autograd.grad(scores.sum(), activations)  # images do not mix in eval mode
    weights = grads.mean(dim=(2, 3), keepdim=True)  # Eq. (11)
    raw = (weights * activations).sum(1, keepdim=True).detach()
    assert (raw < 0).any(), "no negative location: the ReLU of Eq. (12) would go unchecked"
    cam = F.interpolate(F.relu(raw), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    cam = (cam - low) / (cam.amax(dim=(1, 2), keepdim=True) - low)
    assert np.abs(maps - cam.numpy()).max() < 1e-4


def test_grad_cam_rejects_a_wrong_number_of_targets():
    model = dmcbook.create_model("resnet18", 10, 1, width=8)
    with pytest.raises(ValueError, match="one target per image"):
        viz.grad_cam(model, torch.randn(2, 1, 28, 28), model.layers[-1], targets=[1])


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield
    plt.close("all")


def _history(test_loss, seed=0, acc=0.5):
    epochs = [{"epoch": e + 1, "train_loss": 1.0, "test_loss": loss, "train_acc": acc, "test_acc": acc + 0.01 * e}
              for e, loss in enumerate(test_loss)]
    return {"config": {"model": "m", "seed": seed}, "epochs": epochs}


def test_wide_strips_wrap_to_the_page_width():
    assert viz.grid_shape(12, ncols=12, panel=1.5) == (3, 5)
    assert viz.grid_shape(3, ncols=6, panel=1.5) == (1, 3)
    fig = viz.image_grid([torch.rand(8, 8) for _ in range(16)], ncols=16, colorbar=True)
    assert viz.fits_page(fig) and fig.get_size_inches()[0] <= viz.PAGE_WIDTH
    fig = viz.show_grad_cam(torch.rand(8, 3, 16, 16), torch.rand(8, 16, 16).numpy(), ncols=8)
    assert viz.fits_page(fig) and len(fig.axes) == 8 + 1  # eight panels and one colour bar
    with pytest.raises(ValueError, match="positive number of panels"):
        viz.grid_shape(0)


def test_centred_maps_share_one_symmetric_scale_with_white_zero():
    maps = [torch.tensor([[0.0, 1.0], [-0.5, 0.2]]), torch.tensor([[0.0, 3.0], [-2.0, 0.0]])]
    fig = viz.image_grid(maps, center_zero=True, colorbar=True)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    limits = {ax.images[0].get_clim() for ax in panels}
    assert limits == {(-3.0, 3.0)}  # one scale for every panel, from the largest |value|
    image = panels[0].images[0]
    assert image.cmap(image.norm(0.0))[:3] == (1.0, 1.0, 1.0)  # exact zeros are white
    assert len(fig.axes) == 3  # two panels and one colour bar
    # without a shared scale each panel keeps its own limits (photographs)
    fig = viz.image_grid(maps)
    assert len({ax.images[0].get_clim() for ax in fig.axes}) == 2


def test_plot_history_keeps_names_groups_seeds_and_logs_wide_losses():
    runs = {"fashion-mnist-gdfrnet-r32-seed0": _history([1100.0, 0.6], 0, 0.4),
            "fashion-mnist-gdfrnet-r32-seed1": _history([900.0, 0.5], 1, 0.6),
            "fashion-mnist-resnet34-seed0": _history([2.0, 0.5])}
    fig = viz.plot_history(runs)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["fashion-mnist-gdfrnet-r32 (2 seeds)", "fashion-mnist-resnet34 (1 seed)"]
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_yscale() == "log" and ax_acc.get_yscale() == "linear"
    assert len(ax_acc.collections) == 2  # the seed band of train and test accuracy, one group only
    seeded_test_acc = ax_acc.lines[1].get_ydata()
    assert seeded_test_acc == pytest.approx([0.5, 0.51])  # the mean over the two seeds
    # on the log axis the band is the log loss's: above zero however wide the seeds spread
    spread = viz.plot_history({"b-seed0": _history([100.0, 0.05]), "b-seed1": _history([900.0, 0.5])})
    lowest = min(c.get_paths()[0].vertices[:, 1].min() for c in spread.axes[0].collections)
    assert spread.axes[0].get_yscale() == "log" and lowest > 0
    fig = viz.plot_history({"a": _history([1.0, 0.5])}, seeds=False)
    assert fig.axes[0].get_yscale() == "linear"


def test_plot_results_dots_per_seed_mean_std_and_paper_line():
    fig = viz.plot_results({"GDFRNet": [54.0, 62.0], "ResNet-34": [66.0]}, paper={"GDFRNet": 90.1},
                           note="budget")
    ax = fig.axes[0]
    from matplotlib.collections import PathCollection
    dots = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in dots] == [2, 1]  # one dot per seed
    # the legend's dot is grey: the dots themselves take each label's colour
    from matplotlib.colors import to_hex
    handles, names = ax.get_legend_handles_labels()
    assert to_hex(handles[names.index("one seed")].get_facecolor()[0]) == "#808080"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    mean, std, n = viz.seed_summary([54.0, 62.0])
    assert (mean, n) == (58.0, 2) and std == pytest.approx(5.657, abs=1e-3)
    assert ticks[0] == "GDFRNet\n58.00 ± 5.66 (n=2)" and ticks[1] == "ResNet-34\n66.00 (one seed)"
    paper_lines = [c for c in ax.collections if c.get_label() == "paper"]
    assert len(paper_lines) == 1 and paper_lines[0].get_segments()[0][0][1] == pytest.approx(90.1)
    with pytest.raises(ValueError, match="at least one value"):
        viz.seed_summary([])
    # a planned configuration without values keeps its slot, marked pending, with no dots
    fig = viz.plot_results({"mask1": [], "GDFRNet": [54.0, 62.0]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "mask1\npending"
    dots = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in dots] == [2] and "one seed" in ax.get_legend_handles_labels()[1]
    with pytest.raises(ValueError, match="at least one label with values"):
        viz.plot_results({"mask1": []})


def test_prediction_summary_reads_the_confusion_matrix_and_the_roc():
    classes = ["a", "b", "c"]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 0, 1, 2, 2, 1, 2, 0])  # b mistaken for c twice
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    summary = viz.prediction_summary(logits, labels, classes)
    assert summary["accuracy %"] == pytest.approx(70.0)
    assert (summary["weakest class"], summary["its recall %"]) == ("b", pytest.approx(50.0))
    assert (summary["most frequent mistake"], summary["its share %"]) == ("b as c", pytest.approx(50.0))
    perfect = viz.prediction_summary(torch.nn.functional.one_hot(labels, 3).float(), labels, classes)
    assert perfect["macro AUC"] == pytest.approx(1.0) and summary["macro AUC"] < 1.0
    assert perfect["most frequent mistake"] is None and perfect["its share %"] == 0
    no_c = viz.prediction_summary(logits[:8], labels[:8], classes)  # class c has no test image
    assert no_c["weakest class"] == "b" and 0 < no_c["macro AUC"] < 1.0


def test_cam_on_object_is_the_share_of_the_map_on_bright_pixels():
    images = torch.zeros(2, 1, 4, 4)
    images[:, :, :2] = 1.0  # the object is the top half
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = 1.0  # all on the object
    maps[1] = 1.0  # spread evenly: the object's share of the image
    assert viz.cam_on_object(maps, images) == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="one map per image"):
        viz.cam_on_object(maps[:, :2], images)


def test_normalised_confusion_matrices_share_one_colour_scale_with_a_bar():
    import matplotlib.pyplot as plt
    fig = viz.plot_confusion([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b"])
    image = fig.axes[0].images[0]
    assert image.get_clim() == (0, 1) and len(fig.axes) == 2  # the matrix and its colour bar
    plt.close(fig)


def test_a_network_keeps_its_colour_across_figures_and_labels_stay_distinct():
    alone = viz.model_colors(["resnet18-seed0"])
    among = viz.model_colors(["drstn_v1", "fashion-mnist-drstn_v5", "resnet18", "drstn_v4-no-gate-decay"])
    assert alone[0] == among[2] == viz.MODEL_COLORS["resnet18"]
    assert among[1] == viz.MODEL_COLORS["drstn_v5"]
    # display names resolve to the registry's; details on a second line do not change it
    assert viz.model_colors(["ResNet-34", "ResNeSt-50\n(spatial off)"]) == [viz.MODEL_COLORS["resnet34"],
                                                                          viz.MODEL_COLORS["resnest50"]]
    # two labels naming one network, and labels naming none, still differ within a figure
    labels = ["GDFRNet", "gdfrnet-seed1", "mask1", "mask4", "resnet18-10ep"]
    colors = viz.model_colors(labels)
    assert colors[0] == viz.MODEL_COLORS["gdfrnet"] and len(set(colors)) == len(labels)
    # the plots use them: a curve, a seed's dot and a trade-off point in the network's colour
    from matplotlib.colors import to_hex
    fig = viz.plot_history({"x-seed0": _history([1.0, 0.5]), "resnet18": _history([1.0, 0.5])})
    assert to_hex(fig.axes[1].lines[-1].get_color()) == to_hex(viz.MODEL_COLORS["resnet18"])
    fig = viz.plot_results({"x": [1.0], "ResNet-18": [2.0]})
    from matplotlib.collections import PathCollection
    dots = [c for c in fig.axes[0].collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert to_hex(dots[1].get_facecolor()[0]) == to_hex(viz.MODEL_COLORS["resnet18"])


def test_row_groups_get_a_line_between_them_and_a_name_at_their_middle():
    import matplotlib.pyplot as plt
    fig, (named, bare) = plt.subplots(1, 2)
    for ax in (named, bare):
        ax.imshow(np.zeros((5, 3)))
    viz.label_row_groups(named, [0, 0, 2, 2, 2], names=["coat", "bag", "boot"])
    viz.label_row_groups(bare, [0, 0, 2, 2, 2])
    assert [line.get_ydata()[0] for line in named.lines] == [1.5]  # between row 1 and row 2
    assert list(named.get_yticks()) == [0.5, 3.0] and [t.get_text() for t in named.get_yticklabels()] == ["coat", "boot"]
    assert list(bare.get_yticks()) == [] and len(bare.lines) == 1
    plt.close(fig)


def test_every_network_colour_and_free_colour_stands_apart_from_the_others():
    import itertools

    from matplotlib.colors import to_rgb
    colours = list(viz.MODEL_COLORS.values()) + list(viz.FREE_COLORS)
    # 0.25 in RGB: tab10's closest pair (brown and grey) is 0.26; the old free colours had 0.13
    nearest = min(np.linalg.norm(np.subtract(to_rgb(a), to_rgb(b))) for a, b in itertools.combinations(colours, 2))
    assert nearest >= 0.25
