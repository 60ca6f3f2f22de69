"""How sure an age model is: calibrated group probabilities, age intervals, the reliability diagram.

``recipes/train.py`` calibrates an age model on its validation speakers once
training ends (the best checkpoint loaded), and the model folder keeps the
result in ``hyperparams.yaml`` (see ``AgeClassifier``):

- ``temperature``: the group scores are divided by ``T`` before the softmax
  (or the ordinal sigmoids); ``T`` minimises the validation negative
  log-likelihood (:func:`fit_temperature`, Guo et al. 2017). The expected
  calibration error (:func:`expected_calibration_error`) says how far the
  probabilities are from the frequencies.
- ``interval_half_width_years``: split-conformal prediction
  (:func:`conformal_half_width`) on per-speaker residuals ``|mean predicted
  years of the speaker's utterances - the speaker's age|``. For a new speaker
  exchangeable with the validation speakers, ``mean prediction +- width``
  holds the true age with probability at least ``interval_coverage``
  (marginal, over speakers; not conditional on age or group). With ``n``
  validation speakers the quantile is the ``ceil((n + 1) c)``-th smallest
  residual, so few speakers make the interval conservative and coarse, and
  fewer than ``c / (1 - c)`` speakers give no interval at all (None).
- ``utterance_interval_half_width_years``: the same for one utterance
  (what ``dmha age`` predicts per file): each speaker counts once, its
  utterances sharing its weight (:func:`speaker_weighted_half_width`).
  Utterances of a speaker are not independent, so this width has no exact
  guarantee; the recipe measures its coverage on the test speakers.
"""

import math
from collections import defaultdict

import numpy as np
import torch
from matplotlib.figure import Figure

from dmha_modules.inference import group_posteriors
from dmha_modules.io.plots import DPI, save_png


def conformal_level(n, coverage):
    """The split-conformal quantile level ``ceil((n + 1) c) / n``; above 1: too few for ``c``.

    Example
    -------
    >>> conformal_level(9, 0.8), conformal_level(3, 0.8)
    (0.8888888888888888, 1.3333333333333333)
    """
    return math.ceil((n + 1) * coverage - 1e-9) / n


def conformal_half_width(residuals, coverage):
    """The split-conformal half-width of ``residuals`` for ``coverage``, or None (too few).

    Arguments
    ---------
    residuals : sequence of float
        Absolute residuals of the calibration units (speakers).
    coverage : float
        Nominal coverage ``1 - alpha`` in (0, 1).

    Returns
    -------
    float or None
        The ``ceil((n + 1) coverage)``-th smallest residual; None when that
        exceeds ``n``.

    Example
    -------
    >>> conformal_half_width([4.0, 1.0, 3.0, 2.0], 0.5)  # ceil(5 * 0.5) = 3rd smallest
    3.0
    >>> conformal_half_width([4.0, 1.0, 3.0], 0.8) is None
    True
    """
    residuals = sorted(float(r) for r in residuals)
    if not residuals:
        return None
    rank = math.ceil((len(residuals) + 1) * coverage - 1e-9)
    return residuals[rank - 1] if rank <= len(residuals) else None


def speaker_weighted_half_width(residuals, speakers, coverage):
    """Half-width for single utterances: each speaker weighs 1, shared by its utterances.

    The smallest residual whose cumulative weight (out of ``n`` speakers)
    reaches :func:`conformal_level`; None when that level exceeds 1.

    Example
    -------
    >>> speaker_weighted_half_width([1.0, 3.0, 2.0, 9.0], ["a", "a", "b", "c"], 0.5)
    3.0
    """
    weights = defaultdict(int)
    for speaker in speakers:
        weights[speaker] += 1
    n = len(weights)
    if n == 0 or conformal_level(n, coverage) > 1:
        return None
    level = conformal_level(n, coverage) * n
    cumulative = 0.0
    for residual, speaker in sorted(zip(map(float, residuals), speakers)):
        cumulative += 1.0 / weights[speaker]
        if cumulative >= level - 1e-9:
            return residual
    return max(map(float, residuals))


def speaker_means(predicted, true, speakers):
    """Per speaker: ``(mean predicted years, true years)``, speakers in first-seen order.

    Example
    -------
    >>> speaker_means([10.0, 14.0, 30.0], [12.0, 12.0, 25.0], ["a", "a", "b"])
    {'a': (12.0, 12.0), 'b': (30.0, 25.0)}
    """
    grouped = defaultdict(list)
    truth = {}
    for years, age, speaker in zip(predicted, true, speakers):
        grouped[speaker].append(float(years))
        truth[speaker] = float(age)
    return {speaker: (float(np.mean(values)), truth[speaker])
            for speaker, values in grouped.items()}


def interval_coverage(predicted, true, half_width):
    """Share of ``|predicted - true| <= half_width``.

    Example
    -------
    >>> interval_coverage([10.0, 20.0], [12.0, 30.0], 5.0)
    0.5
    """
    errors = np.abs(np.asarray(predicted, dtype=float) - np.asarray(true, dtype=float))
    return float(np.mean(errors <= half_width))



def interval_coverages(decoding, predicted, true, speakers):
    """Test coverage of the calibrated intervals that ``decoding`` holds.

    Per speaker (``interval_coverage_speakers``, with ``test_speakers``) on
    the speakers' mean predictions, per utterance (``interval_coverage_utterances``).

    Example
    -------
    >>> interval_coverages({"interval_half_width_years": 1.0}, [10, 12, 30], [11, 11, 35],
    ...                    ["a", "a", "b"])
    {'interval_coverage_speakers': 0.5, 'test_speakers': 2}
    """
    metrics = {}
    if decoding.get("interval_half_width_years") is not None:
        means = speaker_means(predicted, true, speakers).values()
        metrics["interval_coverage_speakers"] = interval_coverage(
            [p for p, _ in means], [t for _, t in means], decoding["interval_half_width_years"])
        metrics["test_speakers"] = len(means)
    if decoding.get("utterance_interval_half_width_years") is not None:
        metrics["interval_coverage_utterances"] = interval_coverage(
            predicted, true, decoding["utterance_interval_half_width_years"])
    return metrics

def fit_temperature(scores, labels, ordinal=False, scale=1.0, bounds=(0.05, 20.0)):
    """The temperature ``T`` minimising the NLL of ``group_posteriors(scores / T)``.

    Golden-section search on ``log T``; the NLL of a softmax is convex in
    ``1 / T``, so it has one minimum there.

    Arguments
    ---------
    scores : torch.Tensor
        Classifier scores ``(N, C)``.
    labels : torch.Tensor
        True classes ``(N,)``.
    ordinal, scale
        As ``group_posteriors``'s.
    bounds : tuple of float
        The search range of ``T``.

    Returns
    -------
    float

    Example
    -------
    >>> scores = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    >>> round(fit_temperature(scores, torch.tensor([0, 1, 1, 0])), 2)  # 3 of 4 right
    3.64
    """
    scores, labels = scores.double(), labels.long()

    def nll(log_t):
        probabilities = group_posteriors(scores / math.exp(log_t), ordinal, scale)
        picked = probabilities[torch.arange(len(labels)), labels]
        return float(-picked.clamp(min=1e-12).log().mean())

    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if nll(left) <= nll(right):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


def reliability_bins(probabilities, labels, bins=15):
    """Per equal-width confidence bin ``(lower, upper]``: count, accuracy, mean confidence.

    The confidence of a row is its largest probability; it is right when
    that class is the label. Bin 0 also holds confidence 0.

    Returns
    -------
    tuple of numpy.ndarray
        ``counts``, ``accuracies`` and ``confidences`` ``(bins,)`` (0 in empty bins).
    """
    probabilities = torch.as_tensor(probabilities, dtype=torch.float64)
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == torch.as_tensor(labels).long()).double()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    hits = torch.bincount(index, weights=correct, minlength=bins)
    total_confidence = torch.bincount(index, weights=confidence, minlength=bins)
    safe = counts.clamp(min=1)
    return counts.numpy(), (hits / safe).numpy(), (total_confidence / safe).numpy()


def expected_calibration_error(probabilities, labels, bins=15):
    """ECE: ``sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)|`` over equal-width bins.

    Example
    -------
    >>> probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> round(expected_calibration_error(probabilities, torch.tensor([0, 1, 0, 1])), 4)
    0.375
    """
    counts, accuracies, confidences = reliability_bins(probabilities, labels, bins)
    return float(np.sum(counts * np.abs(accuracies - confidences)) / max(counts.sum(), 1))


def calibrate_age(scores, labels, years_predicted, years_true, speakers, coverage,
                  ordinal=False, scale=1.0):
    """What a model folder keeps of the validation calibration (see the module docstring).

    Arguments
    ---------
    scores : torch.Tensor or None
        Group scores ``(N, C)`` (None without a classifier: no temperature).
    labels : torch.Tensor
        True groups ``(N,)``.
    years_predicted, years_true : sequence of float or None
        Predicted and true ages of the ``N`` utterances (None: no interval).
    speakers : sequence of str
        The speaker of each utterance.
    coverage : float
        Nominal coverage of the intervals.
    ordinal, scale
        As ``group_posteriors``'s.

    Returns
    -------
    dict
        ``temperature``, ``interval_coverage``, ``interval_half_width_years``,
        ``utterance_interval_half_width_years`` and ``calibration_speakers``.
    """
    calibration = {"calibration_speakers": len(set(speakers))}
    if scores is not None:
        calibration["temperature"] = fit_temperature(scores, labels, ordinal, scale)
    if years_predicted is not None:
        means = speaker_means(years_predicted, years_true, speakers).values()
        residuals = np.abs(np.asarray(years_predicted, float) - np.asarray(years_true, float))
        calibration.update(
            interval_coverage=float(coverage),
            interval_half_width_years=conformal_half_width(
                [abs(p - t) for p, t in means], coverage),
            utterance_interval_half_width_years=speaker_weighted_half_width(
                residuals, list(speakers), coverage),
        )
    return calibration


def plot_reliability(curves, path, title=None):
    """Reliability diagram: accuracy against confidence per bin, and the bins' counts.

    A calibrated model's points lie on the diagonal. Each curve is one set
    of probabilities of the same rows (e.g. before and after a temperature),
    binned by :func:`reliability_bins`; empty
    bins are not drawn.

    Arguments
    ---------
    curves : dict
        Legend label -> ``(counts, accuracies, confidences)`` per bin.
    path : str
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import os, tempfile
    >>> bins = (np.array([0, 3, 1]), np.array([0, 0.6, 1.0]), np.array([0, 0.5, 0.9]))
    >>> path = os.path.join(tempfile.mkdtemp(), "reliability.png")
    >>> plot_reliability({"raw (ECE 0.1)": bins}, path) == path
    True
    """
    figure = Figure(figsize=(5.5, 6.5), dpi=DPI, layout="constrained")
    diagram, histogram = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    diagram.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for label, (counts, accuracies, confidences) in curves.items():
        filled = np.asarray(counts) > 0
        line, = diagram.plot(np.asarray(confidences)[filled], np.asarray(accuracies)[filled],
                             marker="o", label=label)
        edges = np.linspace(0, 1, len(counts) + 1)
        histogram.stairs(counts, edges, color=line.get_color())
    diagram.set_xlim(0, 1)
    diagram.set_ylim(0, 1)
    diagram.set_ylabel("accuracy")
    diagram.legend(loc="upper left", fontsize="small")
    diagram.grid(True, alpha=0.3)
    histogram.set_xlabel("confidence (largest probability)")
    histogram.set_ylabel("rows")
    if title:
        diagram.set_title(title)
    return save_png(figure, path)
