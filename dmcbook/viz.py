"""Pictures every chapter shares: real sample photographs, image and feature-map grids, heat
maps over an image, learning curves, confusion matrices, ROC curves and Grad-CAM."""
from __future__ import annotations

import itertools
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .report import count

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


# The book's text column shows about 690 px; notebook.setup stores figures at 90 dpi, so a
# figure at most 7.5 in wide (675 px) is never shrunk and its 8-9 pt text stays legible.
PAGE_WIDTH = 7.5
MAX_PANEL, MIN_PANEL = 2.0, 1.1  # inches per image panel (1.1 in = 99 px at 90 dpi)
COLORBAR_ROOM = 0.7  # inches kept free for a colour bar at the right of a grid
# Every page's matplotlib settings. The inline backend saves with a tight box: padded little,
# a figure made PAGE_WIDTH wide is stored at the page's width, not 0.2 in wider.
PAGE_STYLE = {"figure.dpi": 90, "axes.grid": False, "image.interpolation": "nearest", "font.size": 9,
              "savefig.pad_inches": 0.02}


def use_page_style() -> None:
    """Apply :data:`PAGE_STYLE` (the set-up cell of every page calls it)."""
    import matplotlib.pyplot as plt
    plt.rcParams.update(PAGE_STYLE)


def grid_shape(n: int, ncols: int | None = None, panel: float = 1.8,
               page_width: float = PAGE_WIDTH) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels of ``panel`` inches: at most ``ncols`` per row and at
    most as many as fit ``page_width``, so a wide strip wraps into rows."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"need a positive number of panels; got {n!r}")
    fit = max(int(page_width / panel + 1e-9), 1)
    ncols = min(n, fit if ncols is None else max(min(ncols, fit), 1))
    return -(-n // ncols), ncols


def page_subplots(n: int, ncols: int | None = None, panel: float = 1.8, aspect: float = 1.0,
                  page_width: float = PAGE_WIDTH, **subplots_kw):
    """A figure with room for ``n`` panels that fits the page (see :func:`grid_shape`):
    returns the figure and a flat list of exactly ``n`` axes (constrained layout)."""
    import matplotlib.pyplot as plt
    nrows, ncols = grid_shape(n, ncols, panel, page_width)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(panel * ncols, page_width), panel * aspect * nrows + 0.3),
                             squeeze=False, layout="constrained", **subplots_kw)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def fits_page(fig) -> bool:
    """Whether a figure is at most :data:`PAGE_WIDTH` inches wide."""
    return fig.get_size_inches()[0] <= PAGE_WIDTH + 1e-6


def diverging_cmap():
    """RdBu_r with an exactly white middle, so that zeros on a centred scale are white."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap
    rdbu = matplotlib.colormaps["RdBu_r"]
    colors = [rdbu(0.0), rdbu(0.25), (1.0, 1.0, 1.0, 1.0), rdbu(0.75), rdbu(1.0)]
    return LinearSegmentedColormap.from_list("dmcbook_diverging", colors, N=255)  # odd N: a white centre bin


def shared_limits(arrays, vmin=None, vmax=None, center_zero: bool = False) -> tuple[float, float]:
    """One colour scale for several maps: the given limits, or the data's overall min and max;
    with ``center_zero`` symmetric limits +-max|x|, so zero sits in the middle of the map."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])
    if center_zero:
        given = [abs(v) for v in (vmin, vmax) if v is not None]
        bound = max(given) if given else float(np.abs(values).max())
        bound = bound or 1.0  # an all-zero map: any scale shows it white
        return -bound, bound
    low = float(values.min()) if vmin is None else float(vmin)
    high = float(values.max()) if vmax is None else float(vmax)
    return low, high if high > low else low + 1.0


def add_colorbar(fig, mappable, axes, label=None, **colorbar_kw):
    """One colour bar for a group of panels drawn on the same scale (opaque even when the
    panels are drawn translucent over an image)."""
    from matplotlib.cm import ScalarMappable
    opaque = ScalarMappable(norm=mappable.norm, cmap=mappable.get_cmap())
    return fig.colorbar(opaque, ax=axes, label=label, **{"shrink": 0.85, **colorbar_kw})


def _as_hwc(image) -> np.ndarray:
    image = torch.as_tensor(image).detach().float().cpu()
    if image.dim() == 3 and image.shape[0] in (1, 3):
        image = image.permute(1, 2, 0)
    image = image.numpy()
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def image_grid(images, titles=None, ncols: int = 6, cmap: str = "gray", size: float | None = None,
               suptitle=None, *, vmin=None, vmax=None, center_zero: bool = False, colorbar: bool = False,
               cbar_label=None):
    """A grid of images that fits the page: a batch (N, C, H, W), or a list of (C, H, W) / (H, W).

    ``ncols`` is a maximum: wide strips wrap into rows. With ``vmin``/``vmax``, ``center_zero``
    or ``colorbar`` the single-channel maps share one colour scale (and one colour bar);
    ``center_zero`` makes it symmetric around 0 on a diverging map whose zero is white.
    Otherwise every panel is scaled on its own, as photographs need.
    """
    images = [_as_hwc(image) for image in images]
    if not images:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"image_grid got {len(images)} images and {len(titles)} titles")
    maps = [image for image in images if image.ndim == 2]
    shared = bool(maps) and (colorbar or center_zero or vmin is not None or vmax is not None)
    if shared:
        vmin, vmax = shared_limits(maps, vmin, vmax, center_zero)
        if center_zero and cmap == "gray":
            cmap = diverging_cmap()
    bar = COLORBAR_ROOM if shared and colorbar else 0.0
    panel = min(size or max(min(MAX_PANEL, (PAGE_WIDTH - bar) / min(ncols, len(images))), MIN_PANEL),
                PAGE_WIDTH - bar)
    nrows, ncols = grid_shape(len(images), ncols, panel, PAGE_WIDTH - bar)
    fig, axes = page_subplots(len(images), ncols, panel, page_width=PAGE_WIDTH - bar)
    fig.set_size_inches(ncols * panel + bar,
                        nrows * (panel + (0.25 if titles is not None else 0.0)) + (0.35 if suptitle else 0.0))
    artist = None
    for i, (ax, image) in enumerate(zip(axes, images)):
        ax.axis("off")
        scale = dict(vmin=vmin, vmax=vmax) if shared and image.ndim == 2 else {}
        shown = ax.imshow(image, cmap=cmap, **scale)
        artist = shown if scale else artist
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if shared and colorbar:
        add_colorbar(fig, artist, axes, cbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def feature_grid(feature_map: torch.Tensor, max_maps: int = 16, ncols: int = 8, title=None, cmap="viridis", *,
                 center_zero: bool = False, colorbar: bool = True, shared: bool = True):
    """The first ``max_maps`` channels of one feature map (C, H, W): on one shared scale with a
    colour bar (default), or each scaled on its own (``shared=False``, then no colour bar)."""
    maps = feature_map.detach().float().cpu()[:max_maps]
    return image_grid(list(maps), titles=[f"ch {i}" for i in range(len(maps))], ncols=ncols, cmap=cmap,
                      suptitle=title, center_zero=shared and center_zero, colorbar=shared and colorbar,
                      **({"vmin": float(maps.min()), "vmax": float(maps.max())} if shared and not center_zero else {}))


def heatmap_overlay(image, heat, ax=None, alpha: float = 0.5, cmap: str = "jet", title=None, *,
                    vmin=None, vmax=None, colorbar: bool = False, cbar_label=None):
    """Draw ``heat`` (h, w), resized to the image, over ``image`` (C, H, W) or (H, W).

    ``vmin``/``vmax`` fix the heat scale (0 and 1 for Grad-CAM) so that panels compare;
    ``colorbar`` puts a colour bar beside this axis. Returns the axis."""
    import matplotlib.pyplot as plt
    base = _as_hwc(image)
    heat = torch.as_tensor(heat).detach().float().cpu()
    heat = F.interpolate(heat[None, None], size=base.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    ax = ax or plt.gca()
    ax.imshow(base, cmap="gray")
    shown = ax.imshow(heat.numpy(), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        add_colorbar(ax.figure, shown, ax, cbar_label, fraction=0.046, pad=0.02, shrink=1.0)
    return ax


SEED_SUFFIX = re.compile(r"[-_]seed\d+$")


def label_row_groups(ax, groups, names=None) -> None:
    """On a heat map whose rows are sorted by group (``groups``: each row's group, e.g. the class
    of an image), a line between neighbouring groups and, with ``names`` (group -> name), each
    group's name at its middle row; without ``names`` the rows are left unlabelled (a panel
    beside one that names them)."""
    groups = list(groups)
    starts = [0] + [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]]
    ends = starts[1:] + [len(groups)]
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="k", lw=0.6)
    if names is None:
        ax.set_yticks([])
    else:
        ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, ends)], [names[groups[a]] for a in starts],
                      fontsize=6)


def seed_summary(values) -> tuple[float, float, int]:
    """(mean, sample standard deviation, count) of per-seed values; one seed has std 0."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("seed_summary needs at least one value")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def _group_seeds(histories: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for label, history in histories.items():
        groups.setdefault(SEED_SUFFIX.sub("", label), []).append(history)
    return groups


# One colour per network on every page, so that ResNet-18 is the same blue in chapter 04's
# learning curves, its dot plot and the head-to-head trade-off. The plain ResNets take cool
# colours, each paper's networks warm or distinct ones; any other label (an ablation, a display
# name with details) takes the next colour of FREE_COLORS that its figure has not used.
MODEL_COLORS = {"resnet18": "C0", "resnet34": "C9", "resnet50": "C7", "dmcnet34": "C1", "gdfrnet": "C2",
                "resneskt50": "C3", "resnest50": "C4", "drstn_v5": "C5", "drstn_v1": "C6", "drstn_v2": "C8",
                "drstn_v3": "#000000", "drstn_v4": "#cb00f5"}
# picked greedily, each as far as could be (in RGB) from tab10 and the colours before it, dark
# enough to read on white, so that an ablation drawn beside its parent network cannot pass for it
FREE_COLORS = ("#014d4e", "#ff028d", "#380282", "#770001", "#0804f9", "#3c4d03", "#a00498", "#661aee")


def _model_key(label: str) -> str:
    """A label's registry name: seed and data-set prefix dropped, only its first line (display
    labels put details on a second), lower case without spaces or dashes ("ResNet-34" ->
    "resnet34")."""
    name = SEED_SUFFIX.sub("", str(label)).removeprefix("fashion-mnist-").split("\n")[0]
    return re.sub(r"[^a-z0-9_]", "", name.lower())


def model_colors(labels) -> list[str]:
    """The colour of each label in one figure: :data:`MODEL_COLORS`' for a network it names (the
    first label naming it, if several do), else the next unused of :data:`FREE_COLORS`."""
    labels = list(labels)
    keys = [_model_key(label) for label in labels]
    taken = {MODEL_COLORS[k] for k in keys if k in MODEL_COLORS}
    free = itertools.cycle([c for c in FREE_COLORS if c not in taken])
    colors, claimed = [], set()
    for key in keys:
        if key in MODEL_COLORS and key not in claimed:
            claimed.add(key)
            colors.append(MODEL_COLORS[key])
        else:
            colors.append(next(free))
    return colors


def plot_history(histories, title=None, *, seeds: bool = True, log_loss="auto", legend_cols=None):
    """Loss and accuracy curves (train dashed, test solid) of one history or a dict label -> history.

    Labels are shown verbatim. With ``seeds``, runs whose labels differ only in a trailing
    ``-seedN`` are drawn as their mean with a band of +-1 standard deviation. ``log_loss="auto"``
    puts the loss on a log axis when the losses span more than a factor of 30; there the loss's
    mean and band are those of its logarithm (geometric mean, times or divided by the spread), so
    that a band cannot reach zero.
    """
    import matplotlib.pyplot as plt
    if isinstance(histories, dict) and "epochs" in histories:
        histories = {histories["config"].get("run", histories["config"].get("model", "run")): histories}
    if not histories:
        raise ValueError("plot_history needs at least one history")
    groups = _group_seeds(histories) if seeds else {label: [h] for label, h in histories.items()}
    seeded = any(len(runs) > 1 for runs in groups.values())  # then every label says its seeds
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.4), layout="constrained")
    losses = [e[f"{split}_loss"] for h in histories.values() for e in h["epochs"] for split in ("train", "test")]
    losses = [v for v in losses if v > 0]
    log_axis = log_loss is True or (log_loss == "auto" and bool(losses) and max(losses) / min(losses) > 30)
    for (label, runs), color in zip(groups.items(), model_colors(groups)):
        length = min(len(run["epochs"]) for run in runs)
        x = [e["epoch"] for e in runs[0]["epochs"][:length]]
        marker = "o" if length <= 10 else None
        name = f"{label} ({count(len(runs), 'seed')})" if seeded else label
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in (("train", "--"), ("test", "-")):
                values = np.array([[e[f"{split}_{key}"] for e in run["epochs"][:length]] for run in runs])
                logged = key == "loss" and log_axis
                if logged:
                    values = np.log(np.clip(values, 1e-12, None))
                mean = values.mean(0)
                std = values.std(0, ddof=1) if len(runs) > 1 else None
                low, high = (mean - std, mean + std) if std is not None else (None, None)
                if logged:
                    mean, low, high = np.exp(mean), *(np.exp(b) if b is not None else None for b in (low, high))
                ax.plot(x, mean, style, color=color, marker=marker, ms=3,
                        label=name if (split, key) == ("test", "acc") else None)
                if std is not None:
                    ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)
    if log_axis:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (dashed: train, solid: test)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dashed: train, solid: test)")
    for ax in (ax_loss, ax_acc):
        ax.title.set_fontsize(9)
        if len(x) <= 10:
            ax.set_xticks(x)
    fig.legend(loc="outside lower center", ncols=legend_cols or min(len(groups), 2), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_results(results: dict, paper=None, *, ylabel: str = "test accuracy (%)", title=None, ax=None,
                 note=None):
    """One dot per seed, the mean with +-1 standard deviation, and the paper's number.

    ``results`` maps a label to its per-seed values; a label with no values keeps its slot,
    marked pending, so that a figure shows what is planned as well as what is done. ``paper`` is
    one number (a line across the plot) or a dict label -> number (a dashed line over that
    label). ``note`` (e.g. the reduced budget) is written under the axis. Returns the figure.
    """
    import matplotlib.pyplot as plt
    if not any(len(values) for values in results.values()):
        raise ValueError("plot_results needs at least one label with values")
    labels = list(results)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(PAGE_WIDTH, 2.0 + 1.1 * len(labels)), 3.4), layout="constrained")
    ticks, legend_done = [], False
    for i, (label, color) in enumerate(zip(labels, model_colors(labels))):
        if not len(results[label]):
            ticks.append(f"{label}\npending")
            ax.axvspan(i - 0.4, i + 0.4, color="0.94", lw=0)  # the empty slot
            continue
        mean, std, n = seed_summary(results[label])
        values = np.asarray(results[label], dtype=np.float64)
        jitter = np.linspace(-0.12, 0.12, n) if n > 1 else np.zeros(1)
        ax.scatter(i + jitter, values, s=20, color=color, alpha=0.8, zorder=3)
        if not legend_done:  # a grey dot in the legend: the dots take each label's colour
            ax.scatter([], [], s=20, color="0.5", label="one seed")
        ax.errorbar(i + 0.28, mean, yerr=std if n > 1 else None, fmt="D", color="k", ms=4, capsize=3,
                    label=None if legend_done else "mean ± std")
        legend_done = True
        ticks.append(f"{label}\n{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{label}\n{mean:.2f} (one seed)")
    if isinstance(paper, dict):
        for i, label in enumerate(labels):
            if label in paper:
                ax.hlines(paper[label], i - 0.35, i + 0.45, colors="0.3", linestyles="--",
                          label="paper" if not ax.get_legend_handles_labels()[1].count("paper") else None)
    elif paper is not None:
        ax.axhline(float(paper), color="0.3", ls="--", label="paper")
    # many slots: smaller tick labels, so that neighbours' names do not run into each other
    ax.set_xticks(range(len(labels)), ticks, fontsize=8 if len(labels) <= 6 else 6.5)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set(ylabel=ylabel, xlabel=note or "")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax.figure


VERDICT_COLORS = {"supported": "C2", "contradicted": "C3", "not resolved at this budget": "0.5"}


def plot_intervals(rows: list[dict], *, title=None, ax=None):
    """Each claim's paired difference (configuration minus baseline, in points) with its 95 %
    interval, one line per claim, coloured by its verdict (``rows`` as
    :func:`dmcbook.campaign.intervals` gives them). The dashed line is "no difference": a claim is
    resolved when its interval stays off it. Returns the figure."""
    import matplotlib.pyplot as plt
    if not rows:
        raise ValueError("plot_intervals needs at least one claim with a verdict")
    if ax is None:
        _, ax = plt.subplots(figsize=(PAGE_WIDTH, 1.0 + 0.4 * len(rows)), layout="constrained")
    shown = set()
    for y, row in enumerate(reversed(rows)):
        error = [[row["difference"] - row["low"]], [row["high"] - row["difference"]]]
        ax.errorbar(row["difference"], y, xerr=error, fmt="o", capsize=4, color=VERDICT_COLORS.get(row["verdict"], "k"),
                    label=None if row["verdict"] in shown else row["verdict"])
        shown.add(row["verdict"])
    ax.axvline(0, color="0.3", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [row["claim"] for row in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("configuration minus baseline (points), mean over seeds and 95 % interval", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the intervals and zero
    return ax.figure


def plot_tradeoff(rows: list[dict], costs: dict, front, *, acc: str = "acc", std: str = "std", note=None):
    """Accuracy against each cost, one panel a cost: a point per model with its ± std bar, and
    the Pareto front as a line. ``costs`` maps a row key to its axis label; ``front(key)``
    returns the models on that cost's front, cheapest first. A model whose cost is None has no
    point on that panel; one whose accuracy is None (no run finished) is a hollow triangle on the
    panel's floor at its cost: planned, not yet measured. ``note`` goes under the figure."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mticker
    fig, axes = plt.subplots(1, len(costs), figsize=(PAGE_WIDTH, 3.2), sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    by_model = {row["model"]: row for row in rows}
    colors = model_colors(by_model)
    for ax, (key, label) in zip(axes, costs.items()):
        placed = [row[key] for row in rows if row[key] is not None]
        span = np.log(max(placed) / min(placed)) if placed else 0.0
        on_front = front(key)
        for row, color in zip(rows, colors):
            if row[key] is None:
                continue
            if row[acc] is None:
                ax.plot(row[key], 0.03, "^", mfc="none", mec=color, ms=6, transform=ax.get_xaxis_transform(),
                        label=f"{row['model']} (pending)" if ax is axes[0] else None)
                continue
            ax.errorbar(row[key], row[acc], yerr=row[std], fmt="o", color=color, ms=4, capsize=2,
                        label=row["model"] if ax is axes[0] else None)
            # right of the point, except in the last quarter of the log axis, where it would run
            # off the panel; a point on the front, whose line rises to the right, takes its label
            # below it on the right and above it on the left, clear of the line
            right = span == 0 or np.log(row[key] / min(placed)) < 0.75 * span
            rise, va = (0, "center") if row["model"] not in on_front else (-4, "top") if right else (4, "bottom")
            ax.annotate(row["model"], (row[key], row[acc]), xytext=(5 if right else -5, rise),
                        textcoords="offset points", ha="left" if right else "right", va=va,
                        fontsize=7, color=color)
        line = [by_model[m] for m in on_front]
        ax.plot([r[key] for r in line], [r[acc] for r in line], "k--", lw=0.8,
                label="Pareto front" if ax is axes[0] else None)
        # a log axis (costs span a wide range) with plain tick labels at 1, 2 and 5 per decade,
        # or finer ones where the costs span less than that (else one tick or none would show)
        ax.set_xscale("log")
        narrow = bool(placed) and max(placed) < 4 * min(placed)
        subs = (1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(mticker.LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.margins(x=0.15)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("final test accuracy (%)")
    fig.legend(loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    if note:
        fig.suptitle(note, fontsize=8)
    return fig


def plot_confusion(labels, predictions, classes, normalize: bool = True, title=None):
    """A confusion matrix (scikit-learn), rows normalised to recall when ``normalize``, with a
    colour bar; normalised matrices share the scale 0-1, so that two networks' compare."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(labels), np.asarray(predictions), display_labels=[str(c) for c in classes],
        normalize="true" if normalize else None, values_format=".2f" if normalize else "d",
        ax=ax, colorbar=True, xticks_rotation=45, im_kw={"vmin": 0, "vmax": 1} if normalize else None)
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


def prediction_summary(logits, labels, classes) -> dict:
    """What a confusion matrix and ROC curves of one classifier say, as numbers for the prose:
    accuracy (%), macro AUC (the mean of the one-vs-rest AUCs, as :func:`plot_roc` titles it),
    the class with the lowest recall and that recall (%), and the most frequent mistake (true
    class as predicted class, None when there is none) with its share of the true class's images
    (%). Classes without a test image have neither a recall nor an AUC and are left out of both."""
    from sklearn.metrics import confusion_matrix, roc_auc_score
    labels = np.asarray(labels)
    probs = torch.as_tensor(logits).float().softmax(1).numpy()
    counts = confusion_matrix(labels, probs.argmax(1), labels=range(len(classes)))
    present = np.flatnonzero(counts.sum(1))
    recall = counts.diagonal()[present] / counts.sum(1)[present]
    mistakes = counts - np.diag(counts.diagonal())
    true, predicted = np.unravel_index(mistakes.argmax(), mistakes.shape)
    return {"accuracy %": 100 * counts.trace() / counts.sum(),
            "macro AUC": float(np.mean([roc_auc_score(labels == k, probs[:, k]) for k in present])),
            "weakest class": str(classes[present[recall.argmin()]]), "its recall %": 100 * float(recall.min()),
            "most frequent mistake": f"{classes[true]} as {classes[predicted]}" if mistakes.any() else None,
            "its share %": 100 * mistakes[true, predicted] / counts[true].sum()}


OBJECT_THRESHOLD = 0.1  # a 0-1 pixel above this is object, not Fashion-MNIST's black background


def object_mask(images: torch.Tensor, threshold: float = OBJECT_THRESHOLD) -> torch.Tensor:
    """The object's pixels (N, H, W, bool) of images (N, C, H, W, 0-1 pixels) on a dark
    background such as Fashion-MNIST's: where the channel mean exceeds ``threshold``."""
    return images.mean(1) > threshold


def cam_on_object(maps, images: torch.Tensor, threshold: float = OBJECT_THRESHOLD) -> list[float]:
    """For each class activation map (N, H, W, as :func:`grad_cam` returns them), the share of
    its mass that lies on the object (:func:`object_mask`). The object's share of the image is
    what a map spread evenly would score."""
    maps = torch.as_tensor(np.asarray(maps)).float()
    on_object = object_mask(images, threshold).float()
    if on_object.shape != maps.shape:
        raise ValueError(f"cam_on_object needs one map per image at the image's size: maps {tuple(maps.shape)}, "
                         f"images {tuple(images.shape)}")
    return ((maps * on_object).sum((1, 2)) / maps.sum((1, 2)).clamp_min(1e-12)).tolist()


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


def show_grad_cam(images, maps, titles=None, ncols: int = 6, denormalize=None, *, colorbar: bool = True,
                  alpha: float = 0.5, cmap: str = "jet"):
    """Grad-CAM maps drawn over their images on one 0-1 scale, wrapped to the page width, with
    one colour bar for all panels."""
    n = len(maps)
    width = PAGE_WIDTH - (COLORBAR_ROOM if colorbar else 0.0)
    fig, axes = page_subplots(n, ncols, panel=min(MAX_PANEL, max(width / min(ncols, n), MIN_PANEL)),
                              aspect=1.15, page_width=width)
    fig.set_size_inches(min(fig.get_size_inches()[0] + (PAGE_WIDTH - width), PAGE_WIDTH), fig.get_size_inches()[1])
    for i, ax in enumerate(axes):
        image = images[i] if denormalize is None else denormalize(images[i])
        heatmap_overlay(image, maps[i], ax=ax, alpha=alpha, cmap=cmap, vmin=0.0, vmax=1.0,
                        title=None if titles is None else str(titles[i]))
    if colorbar:
        add_colorbar(fig, axes[0].images[-1], axes, "Grad-CAM (0-1)")
    return fig
