"""Pictures every chapter shares: real sample photographs, image and feature-map grids, heat
maps over an image, learning curves, confusion matrices, ROC curves and Grad-CAM."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "grace_hopper")


def _load_photograph(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return matplotlib.image.imread(f, format="jpg")
    import skimage.data
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def sample_images(size: int = 224, names=PHOTOGRAPHS) -> dict[str, torch.Tensor]:
    """Real photographs shipped with scikit-image and matplotlib (no download), centre-cropped
    to a square and resized: name -> float tensor (3, size, size) with values in [0, 1]."""
    out = {}
    for name in names:
        if name not in PHOTOGRAPHS:
            raise ValueError(f"unknown photograph {name!r}; expected some of {PHOTOGRAPHS}")
        image = torch.from_numpy(np.array(_load_photograph(name), dtype=np.float32))
        if image.max() > 1.5:
            image = image / 255.0
        image = image.permute(2, 0, 1)[:3]
        side = min(image.shape[1:])
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        image = image[:, top:top + side, left:left + side]
        out[name] = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(0, 1)
    return out


def _as_hwc(image) -> np.ndarray:
    image = torch.as_tensor(image).detach().float().cpu()
    if image.dim() == 3 and image.shape[0] in (1, 3):
        image = image.permute(1, 2, 0)
    image = image.numpy()
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def image_grid(images, titles=None, ncols: int = 6, cmap: str = "gray", size: float = 2.0, suptitle=None):
    """A grid of images: a batch (N, C, H, W), or a list of (C, H, W) / (H, W) arrays."""
    import matplotlib.pyplot as plt
    images = list(images)
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(_as_hwc(images[i]), cmap=cmap)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def feature_grid(feature_map: torch.Tensor, max_maps: int = 16, ncols: int = 8, title=None, cmap="viridis"):
    """The first ``max_maps`` channels of one feature map (C, H, W), each scaled on its own."""
    maps = feature_map.detach().float().cpu()[:max_maps]
    return image_grid(list(maps), titles=[f"ch {i}" for i in range(len(maps))], ncols=ncols,
                      cmap=cmap, size=1.5, suptitle=title)


def heatmap_overlay(image, heat, ax=None, alpha: float = 0.5, cmap: str = "jet", title=None):
    """Draw ``heat`` (h, w), resized to the image, over ``image`` (C, H, W) or (H, W)."""
    import matplotlib.pyplot as plt
    base = _as_hwc(image)
    heat = torch.as_tensor(heat).detach().float().cpu()
    heat = F.interpolate(heat[None, None], size=base.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    ax = ax or plt.gca()
    ax.imshow(base, cmap="gray")
    ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_history(histories, title=None):
    """Loss and accuracy curves (train dashed, test solid) of one history or a dict label -> history."""
    import matplotlib.pyplot as plt
    if isinstance(histories, dict) and "epochs" in histories:
        histories = {histories["config"].get("model", "run"): histories}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (label, history) in enumerate(histories.items()):
        epochs = history["epochs"]
        x = [e["epoch"] for e in epochs]
        color = f"C{i % 10}"
        ax_loss.plot(x, [e["train_loss"] for e in epochs], "--", color=color)
        ax_loss.plot(x, [e["test_loss"] for e in epochs], "-", color=color, label=label)
        ax_acc.plot(x, [e["train_acc"] for e in epochs], "--", color=color)
        ax_acc.plot(x, [e["test_acc"] for e in epochs], "-", color=color, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (dashed: train, solid: test)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dashed: train, solid: test)")
    ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(labels, predictions, classes, normalize: bool = True, title=None):
    """A confusion matrix (scikit-learn), rows normalised to recall when ``normalize``."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(labels), np.asarray(predictions), display_labels=[str(c) for c in classes],
        normalize="true" if normalize else None, values_format=".2f" if normalize else "d",
        ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


def plot_roc(logits, labels, classes, title=None, ax=None):
    """One-vs-rest ROC curves with their AUC (scikit-learn), and the macro-average AUC."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, roc_curve
    probs = torch.as_tensor(logits).float().softmax(1).numpy()
    labels = np.asarray(labels)
    ax = ax or plt.subplots(figsize=(6, 5))[1]
    aucs = []
    for k, name in enumerate(classes):
        fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
        aucs.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, lw=1, label=f"{name} (AUC {aucs[-1]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=title or f"one-vs-rest ROC, macro AUC {np.mean(aucs):.3f}")
    ax.legend(fontsize=7)
    return ax, float(np.mean(aucs))


def grad_cam(model: nn.Module, images: torch.Tensor, target_layer: nn.Module, targets=None,
             method: str = "gradcam") -> tuple[np.ndarray, list[int]]:
    """Class activation maps of ``images`` (N, C, H, W) through pytorch-grad-cam.

    It handles the library's traps: one target per image (the predicted class unless
    ``targets`` is given), gradients enabled even under ``torch.no_grad``, eval mode during the
    pass and the model's own mode restored after, and the hooks released (context manager).
    Returns maps (N, H, W) in [0, 1] and the target classes.
    """
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    methods = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}
    if method not in methods:
        raise ValueError(f"unknown Grad-CAM method {method!r}; expected one of {sorted(methods)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device)
    try:
        with torch.enable_grad():
            if targets is None:
                with torch.no_grad():
                    targets = model(images).argmax(1).tolist()
            targets = [int(t) for t in targets]
            if len(targets) != len(images):
                raise ValueError(f"grad_cam needs one target per image: {len(images)} images, {len(targets)} targets")
            with methods[method](model=model, target_layers=[target_layer]) as cam:
                maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        model.train(was_training)
    return maps, targets


def show_grad_cam(images, maps, titles=None, ncols: int = 6, denormalize=None):
    """Grad-CAM maps drawn over their images, one panel each."""
    import matplotlib.pyplot as plt
    n = len(maps)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image = images[i] if denormalize is None else denormalize(images[i])
            heatmap_overlay(image, maps[i], ax=ax, title=None if titles is None else str(titles[i]))
    fig.tight_layout()
    return fig
