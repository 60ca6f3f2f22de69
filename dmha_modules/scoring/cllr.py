"""How good LLRs are: Cllr, and minCllr through the optimally calibrated LLRs (PAV).

- ``cllr`` and ``min_cllr``: the log-likelihood-ratio cost of LLRs and of
  the best monotone recalibration of the scores (Brümmer & du Preez 2006).
- ``pav_llrs``: the optimally calibrated LLRs of labelled scores (PAV).

``Cllr - minCllr`` is what a calibration (``dmha_modules.scoring.calibration``) loses.
"""

import math

import numpy as np
from scipy.special import logit

from dmha_modules.scoring.metrics import as_numpy


def labelled_trials(values, labels):
    """``values`` (float64) and ``labels`` (bool), 1-D, as long, both kinds of trial present.

    Arguments
    ---------
    values : sequence, numpy.ndarray or torch.Tensor
        ``(N,)`` scores or LLRs.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else.

    Returns
    -------
    values : numpy.ndarray
    is_target : numpy.ndarray

    Example
    -------
    >>> labelled_trials([0.5, 0.1], [1, 0])[1].tolist()
    [True, False]
    """
    values = as_numpy(values).astype(np.float64).reshape(-1)
    is_target = as_numpy(labels).reshape(-1)
    if len(values) != len(is_target):
        raise ValueError(f"{len(values)} scores for {len(is_target)} labels")
    if not np.isin(is_target, (0, 1)).all():
        raise ValueError("labels must be 1 (or True) for target trials, 0 for the others")
    is_target = is_target.astype(bool)
    if is_target.all() or not is_target.any():
        raise ValueError(f"need target and non-target trials, got {int(is_target.sum())} "
                         f"and {int((~is_target).sum())}")
    return values, is_target


def cllr(llrs, labels):
    """The log-likelihood-ratio cost of LLRs, in bits (Brümmer & du Preez 2006).

    ``Cllr = 1 / (2 ln 2) [mean over targets of ln(1 + e^-llr) + mean over
    non-targets of ln(1 + e^llr)]``: 0 for perfect, confident LLRs, 1 for
    LLRs that are always 0 (they say nothing), above 1 for misleading ones.
    Infinite LLRs are allowed: on the right side they cost 0, on the wrong
    side infinitely (as BOSARIS's ``cllr``).

    Arguments
    ---------
    llrs : sequence, numpy.ndarray or torch.Tensor
        Natural-log likelihood ratios ``(N,)``.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.

    Returns
    -------
    float

    Example
    -------
    >>> cllr([0.0, 0.0], [1, 0]), round(cllr([3.0, -3.0], [1, 0]), 4)
    (1.0, 0.0701)
    """
    llrs, is_target = labelled_trials(llrs, labels)
    if np.isnan(llrs).any():
        raise ValueError("LLRs must not be NaN")
    target_cost = np.logaddexp(0, -llrs[is_target]).mean()
    nontarget_cost = np.logaddexp(0, llrs[~is_target]).mean()
    return float((target_cost + nontarget_cost) / (2 * math.log(2)))


def pav_llrs(scores, labels):
    """The optimally calibrated LLRs of labelled scores: PAV, the ROCCH's slopes.

    Pool-adjacent-violators fits the target posterior as a non-decreasing
    function of the score (trials of equal score are one block, so ties are
    never broken in anyone's favour); the LLR is its logit minus the
    empirical prior log-odds ``ln(n_target / n_nontarget)`` (BOSARIS's
    ``opt_loglr``). Among monotone maps of the scores it minimises Cllr,
    and its LLRs are the slopes of the ROC convex hull. The lowest block is
    ``-inf`` when it holds only non-targets and the highest ``+inf`` when it
    holds only targets: right-side infinities, which cost nothing in
    ``cllr`` (BOSARIS's "raw" option, without its Laplace smoothing).

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``, higher meaning "same speaker"; finite.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` LLRs, in the order of ``scores``.

    Example
    -------
    >>> pav_llrs([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]).tolist()
    [-inf, 0.0, 0.0, inf]
    """
    scores, is_target = labelled_trials(scores, labels)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    distinct, block_of = np.unique(scores, return_inverse=True)
    counts = np.bincount(block_of, minlength=len(distinct)).astype(np.float64)
    targets = np.bincount(block_of, weights=is_target, minlength=len(distinct))
    pooled = []  # blocks [targets, trials, distinct scores], posteriors increasing
    for block in zip(targets, counts, [1] * len(counts)):
        pooled.append(list(block))
        while len(pooled) > 1 and pooled[-2][0] * pooled[-1][1] >= pooled[-1][0] * pooled[-2][1]:
            last = pooled.pop()
            pooled[-1] = [mine + theirs for mine, theirs in zip(pooled[-1], last)]
    posterior = np.repeat([t / n for t, n, _ in pooled], [width for *_, width in pooled])
    with np.errstate(divide="ignore"):
        llrs = logit(posterior) - math.log(is_target.sum() / (~is_target).sum())
    return llrs[block_of]


def min_cllr(scores, labels):
    """Cllr of the optimally calibrated scores (``pav_llrs``): what calibration cannot remove.

    ``Cllr - minCllr`` is the calibration loss of a set of LLRs; ``minCllr``
    itself depends only on how well the scores discriminate (BOSARIS's
    ``min_cllr``; Brümmer & du Preez 2006).

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``; finite.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.

    Returns
    -------
    float

    Example
    -------
    >>> round(min_cllr([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]), 4)
    0.5
    """
    return cllr(pav_llrs(scores, labels), labels)
