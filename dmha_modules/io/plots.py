"""Figures of test results, written as PNG files for a person to look at.

- ``plot_confusion_matrix``: age groups (or any classes), counts and
  row percentages.
- ``plot_verification_scores``: DET curve and score histograms of trials.
- ``plot_embeddings_pca``: embeddings projected on their first two
  principal components, coloured by speaker or age group.

Each function draws on its own ``matplotlib.figure.Figure`` rather than
through ``pyplot``: no backend is selected and no global figure is left
open, so they are safe in training processes and threads. The PNG is written
to a temporary file in the destination folder and moved over ``path`` in one
step, so a reader never sees a half-written image and a failure leaves the
previous one in place.
"""

import os

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.special import ndtri

from dmha_modules.io.atomic import atomic_paths
from dmha_modules.scoring.metrics import (
    as_numpy,
    operating_points,
    rates_at_threshold,
    verification_metrics,
)

DPI = 120

# Confusion matrices larger than this are drawn without per-cell text,
# which would no longer be legible.
MAX_ANNOTATED_CLASSES = 25

# Legend entries of the PCA scatter; further labels are summarised in one line.
MAX_LEGEND_ENTRIES = 20

# Probabilities labelled on DET axes, spaced so that their labels do not
# collide even when the axes span 0.01% to 99.99%.
DET_TICKS = [0.0001, 0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999]

# Upper ends a DET plot's axes may stop at.
DET_UPPER_LIMITS = [0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999]


def save_png(figure, path):
    """Writes ``figure`` to ``path`` as a PNG atomically; returns ``path``.

    Through :func:`dmha_modules.io.atomic.atomic_paths`: an existing image is
    replaced only by a complete one. Missing parent folders are created.

    Arguments
    ---------
    figure : matplotlib.figure.Figure
        The figure to save.
    path : str or os.PathLike
        Destination ``.png`` file.

    Returns
    -------
    str
        ``path``.
    """
    with atomic_paths(path) as (temporary,):
        # "xb" creates the file with the process's umask, unlike mkstemp's 0600.
        with open(temporary, "xb") as file:
            figure.savefig(file, format="png", dpi=DPI)
    return os.fspath(path)


def plot_confusion_matrix(confusion, class_names, path, title=None, normalize=True):
    """Heatmap of a confusion matrix, each cell with its count and row percentage.

    Rows are true classes, columns predicted ones, so a cell's percentage is
    the share of its true class predicted as that column (the diagonal holds
    the recalls). Up to 25 classes every cell is annotated; beyond, only the
    colours are drawn. A class with no examples has an empty row, annotated
    with its zero counts only.

    Arguments
    ---------
    confusion : sequence of sequences, numpy.ndarray or torch.Tensor
        ``(C, C)`` non-negative integer counts, ``confusion[true][predicted]``
        (as ``classification_metrics`` returns).
    class_names : sequence of str
        ``C`` names, in class-index order.
    path : str or os.PathLike
        Destination ``.png`` file.
    title : str, optional
        Figure title.
    normalize : bool
        Colour by row fraction (comparable across classes of different
        sizes) rather than by count.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``confusion`` is not a square matrix of non-negative integers with
        one row per class name.

    Example
    -------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = plot_confusion_matrix(
    ...     [[5, 1], [2, 7]], ["young", "old"], os.path.join(folder, "confusion.png")
    ... )
    >>> os.listdir(folder)
    ['confusion.png']
    """
    counts = as_numpy(confusion)
    n_classes = len(class_names)
    if counts.shape != (n_classes, n_classes) or n_classes == 0:
        raise ValueError(
            f"confusion must be ({n_classes}, {n_classes}) for {n_classes} class "
            f"names, got shape {counts.shape}"
        )
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("confusion must hold non-negative integer counts")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(
        counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0
    )
    shown = fractions if normalize else counts
    top = 1.0 if normalize else max(int(counts.max()), 1)

    side = float(np.clip(1.5 + 0.75 * n_classes, 4.5, 12))
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=top)
    figure.colorbar(
        image,
        ax=axes,
        shrink=0.8,
        label="fraction of the true class" if normalize else "count",
    )
    _label_class_axes(axes, class_names)
    if title:
        axes.set_title(title)

    if n_classes <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(axes, counts, row_totals, fractions, shown, top)
    return save_png(figure, path)


def _label_class_axes(axes, class_names):
    """Class names as the tick labels of both axes, slanted on x when they would overlap."""
    n_classes = len(class_names)
    positions = np.arange(n_classes)
    rotate = n_classes * max(len(str(name)) for name in class_names) > 40
    axes.set_xticks(
        positions,
        labels=class_names,
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
    )
    axes.set_yticks(positions, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")


def _annotate_cells(axes, counts, row_totals, fractions, shown, top):
    """Writes each cell's count, and its row percentage where the true class occurs."""
    n_classes = len(counts)
    font_size = 10 if n_classes <= 8 else 7
    for true in range(n_classes):
        for predicted in range(n_classes):
            text = str(counts[true, predicted])
            if row_totals[true, 0] > 0:
                text += f"\n{100 * fractions[true, predicted]:.1f}%"
            dark = shown[true, predicted] > 0.55 * top
            axes.text(
                predicted,
                true,
                text,
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if dark else "black",
            )


def det_limits(p_miss, p_false_alarm, eer, n_target, n_nontarget):
    """Probability range of the (square) axes of a DET plot.

    The lower end is half the finest nonzero rate, ``1 / max(n_target,
    n_nontarget)``, kept between 0.01% and 5%, so that the smallest nonzero
    rates are inside the axes. The upper end is the first of
    ``DET_UPPER_LIMITS`` that holds the EER and every operating point away
    from the lower border, so good systems are not squeezed into a corner.
    """
    low = float(np.clip(0.5 / max(n_target, n_nontarget), DET_TICKS[0], 0.05))
    inside = (p_miss >= low) & (p_false_alarm >= low)
    needed = max(eer, p_miss[inside].max(initial=0), p_false_alarm[inside].max(initial=0))
    high = next((limit for limit in DET_UPPER_LIMITS if limit >= needed), 1.0)
    return low, min(high, 1 - low)


def probit(probabilities):
    """Normal deviates of probabilities, 0 and 1 (at infinity) moved far off the axes.

    The axes of a DET plot then cut the segments to them where they would
    cross, rather than bending them as clipping to the border would.
    """
    return ndtri(np.clip(probabilities, 1e-9, 1 - 1e-9))


def _mark_operating_point(det, histogram, scores, labels, operating_point):
    """Draws a decision threshold: its point on the DET curve, its line on the histograms."""
    threshold, name = operating_point
    p_miss, p_false_alarm = rates_at_threshold(scores, labels, threshold)
    det.plot(probit(p_false_alarm), probit(p_miss), "s", color="tab:purple",
             label=f"{name}: FA {100 * p_false_alarm:.2f}%, miss {100 * p_miss:.2f}%")
    histogram.axvline(threshold, color="tab:purple", lw=1.5,
                      label=f"threshold {threshold:.3f} ({name})")


def plot_verification_scores(scores, labels, path, title=None, p_target=0.01,
                             operating_point=None):
    """DET curve and score histograms of verification trials.

    Left: the DET curve, miss against false-alarm probability on normal
    deviate (probit) axes with percent tick labels, and the EER point. The
    axes span from half the finest nonzero rate (at least 0.01%) to just
    past the curve and the EER; rates of 0 and 1, at infinity on these axes,
    run off them. Right: histograms (densities, since non-target trials usually
    far outnumber target ones) of the target and non-target scores, with the
    EER threshold. With ``operating_point``, its threshold is marked on both
    (a square on the DET curve, off the axes when a rate is 0 or 1). Scores
    that are all equal give a sensible, if uninformative, figure.

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``, higher meaning "same speaker"; finite.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else.
    path : str or os.PathLike
        Destination ``.png`` file.
    title : str, optional
        Figure title.
    p_target : float
        Target prior of the minDCF given in the legend.
    operating_point : tuple, optional
        ``(threshold, name)``: a decision threshold on the scores ("accept
        when above") and what it is, such as ``"target FAR 1%"``.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        As ``verification_metrics``: without both target and non-target
        trials, or with scores that are not finite.

    Example
    -------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = plot_verification_scores(
    ...     [0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1],
    ...     [1, 1, 1, 0, 0, 0, 0],
    ...     os.path.join(folder, "scores.png"),
    ... )
    >>> os.listdir(folder)
    ['scores.png']
    """
    metrics = verification_metrics(scores, labels, p_target=p_target)
    _, p_miss, p_false_alarm = operating_points(scores, labels)
    # Accepting every trial is the curve's other end, below the lowest score.
    p_miss, p_false_alarm = np.append(0.0, p_miss), np.append(1.0, p_false_alarm)
    scores = as_numpy(scores).astype(np.float64)
    is_target = as_numpy(labels).astype(bool)
    n_target, n_nontarget = int(is_target.sum()), int((~is_target).sum())

    figure = Figure(figsize=(12, 5), layout="constrained")
    det, histogram = figure.subplots(1, 2)
    if title:
        figure.suptitle(title)

    eer = metrics["eer"]
    low, high = det_limits(p_miss, p_false_alarm, eer, n_target, n_nontarget)

    det.plot(probit(p_false_alarm), probit(p_miss), color="tab:blue", lw=1.5)
    det.plot(probit([low, high]), probit([low, high]), color="grey", ls=":", lw=1)
    det.plot(probit(eer), probit(eer), "o", color="tab:red", label=f"EER {100 * eer:.2f}%")
    if operating_point is not None:
        _mark_operating_point(det, histogram, scores, is_target, operating_point)
    _finish_det_axes(det, low, high, n_target, n_nontarget,
                     legend_title=f"minDCF(p_target={p_target:g}) {metrics['min_dcf']:.3f}")
    _draw_score_histograms(histogram, scores, is_target, metrics["eer_threshold"])
    return save_png(figure, path)


def _finish_det_axes(det, low, high, n_target, n_nontarget, legend_title):
    """Square DET axes from ``low`` to ``high`` with percent ticks, their labels and legend."""
    ticks = [tick for tick in DET_TICKS if low <= tick <= high]
    for set_ticks in (det.set_xticks, det.set_yticks):
        set_ticks(probit(ticks), labels=[f"{100 * tick:g}" for tick in ticks])
    det.set_xlim(probit(low), probit(high))
    det.set_ylim(probit(low), probit(high))
    det.set_aspect("equal")
    det.grid(True, alpha=0.3)
    det.set_xlabel("false-alarm probability (%)")
    det.set_ylabel("miss probability (%)")
    det.set_title(f"DET ({n_target} target, {n_nontarget} non-target trials)")
    # Below the curve, the lower left is empty for any system better than chance.
    det.legend(loc="lower left", title=legend_title, title_fontsize="small")


def _draw_score_histograms(histogram, scores, is_target, eer_threshold):
    """Density histograms of the non-target and target scores, with the EER threshold."""
    n_target, n_nontarget = int(is_target.sum()), int((~is_target).sum())
    bins = np.histogram_bin_edges(
        scores, bins=int(np.clip(np.sqrt(len(scores)), 10, 60))
    )
    for chosen, colour, name in (
        (~is_target, "tab:orange", f"non-target (n={n_nontarget})"),
        (is_target, "tab:green", f"target (n={n_target})"),
    ):
        histogram.hist(
            scores[chosen], bins=bins, density=True, alpha=0.55, color=colour, label=name
        )
    histogram.axvline(
        eer_threshold,
        color="tab:red",
        ls="--",
        lw=1,
        label=f"EER threshold {eer_threshold:.3f}",
    )
    histogram.set_xlabel("score")
    histogram.set_ylabel("density")
    histogram.set_title("score distributions")
    histogram.legend(loc="upper left", fontsize="small")


def plot_embeddings_pca(embeddings, labels, path, title=None, label_order=None):
    """Scatter of embeddings on their first two principal components.

    The components come from the SVD of the centred embeddings; each axis
    label gives the share of the total variance it explains. Points are
    coloured by label, each label keeping the colour of its position in
    ``label_order`` (so age groups keep their colours across figures even
    when one is absent). The legend, outside the axes, lists at most 20
    labels: beyond that (many speakers) it lists the first 19 and how many
    more there are.

    Arguments
    ---------
    embeddings : torch.Tensor or numpy.ndarray
        ``(N, E)`` or SpeechBrain's ``(N, 1, E)``, with ``N >= 2`` and
        ``E >= 2``; finite.
    labels : sequence or torch.Tensor
        ``N`` labels (speaker, age group, ...).
    path : str or os.PathLike
        Destination ``.png`` file.
    title : str, optional
        Figure title.
    label_order : sequence, optional
        Every label to show, in legend (and colour) order; by default the
        sorted distinct labels.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        Fewer than 2 embeddings or dimensions (there is no plane to project
        on), non-finite values, a label count that differs from the number of
        embeddings, or labels missing from ``label_order``.

    Example
    -------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = plot_embeddings_pca(
    ...     torch.randn(30, 8), ["teen", "adult", "senior"] * 10,
    ...     os.path.join(folder, "pca.png"), label_order=["teen", "adult", "senior"],
    ... )
    >>> os.listdir(folder)
    ['pca.png']
    """
    points = _embedding_matrix(embeddings)
    labels = labels.tolist() if torch.is_tensor(labels) else list(labels)
    if len(labels) != len(points):
        raise ValueError(f"{len(labels)} labels for {len(points)} embeddings")
    order = sorted(set(labels)) if label_order is None else list(label_order)
    missing = set(labels) - set(order)
    if missing:
        raise ValueError(
            f"labels missing from label_order: {sorted(map(str, missing))}"
        )

    centred = points - points.mean(axis=0)
    _, singular_values, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    variances = singular_values**2
    explained = variances[:2] / variances.sum() if variances.sum() > 0 else np.zeros(2)

    figure = Figure(figsize=(8, 6.5), layout="constrained")
    axes = figure.add_subplot()
    size = float(np.clip(3000 / len(points), 4, 40))
    _scatter_by_label(axes, projected, labels, order, size)
    _legend_outside(figure, axes, size, title=f"{len(points)} embeddings")
    axes.set_xlabel(f"PC1 ({100 * explained[0]:.1f}% of variance)")
    axes.set_ylabel(f"PC2 ({100 * explained[1]:.1f}% of variance)")
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    return save_png(figure, path)


def _embedding_matrix(embeddings):
    """``embeddings`` as a finite ``(N, E)`` float64 array with ``N, E >= 2``."""
    points = as_numpy(embeddings).astype(np.float64)
    if points.ndim == 3 and points.shape[1] == 1:
        points = points[:, 0]
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] < 2:
        raise ValueError(
            "need at least 2 embeddings of at least 2 dimensions as (N, E) or "
            f"(N, 1, E), got shape {points.shape}"
        )
    if not np.isfinite(points).all():
        raise ValueError("embeddings must be finite")
    return points


def _scatter_by_label(axes, projected, labels, order, size):
    """One scatter per label present, coloured by its position in ``order``."""
    colours = label_colours(len(order))
    label_array = np.asarray(labels, dtype=object)
    for position, label in enumerate(order):
        chosen = label_array == label
        if chosen.any():
            axes.scatter(
                projected[chosen, 0],
                projected[chosen, 1],
                s=size,
                color=colours[position],
                alpha=0.75,
                linewidths=0,
                label=f"{label} ({int(chosen.sum())})",
            )


def _legend_outside(figure, axes, size, title):
    """The axes' legend right of them, cut to ``MAX_LEGEND_ENTRIES`` lines."""
    handles, names = axes.get_legend_handles_labels()
    if len(handles) > MAX_LEGEND_ENTRIES:
        hidden = len(handles) - (MAX_LEGEND_ENTRIES - 1)
        handles = handles[: MAX_LEGEND_ENTRIES - 1] + [Line2D([], [], linestyle="none")]
        names = names[: MAX_LEGEND_ENTRIES - 1] + [f"... and {hidden} more"]
    figure.legend(
        handles,
        names,
        loc="outside right upper",
        fontsize="small",
        markerscale=max(1.0, 30 / size) ** 0.5,
        title=title,
        title_fontsize="small",
    )


def label_colours(n_labels):
    """``n_labels`` colours: tab10 or tab20, else spread over a rainbow.

    Beyond 20 labels, consecutive labels step around the rainbow by the
    golden ratio, so neighbours in the legend get far-apart colours.
    """
    if n_labels <= 20:
        palette = colormaps["tab10" if n_labels <= 10 else "tab20"]
        return [palette(i) for i in range(n_labels)]
    rainbow = colormaps["turbo"]
    return [rainbow(0.05 + 0.9 * ((i * 0.618034) % 1)) for i in range(n_labels)]
