"""Fitting a linear map of scores to log-likelihood ratios, and the LLR thresholds.

- ``fit_linear_llrs``: logistic regression ``llr = w . features + b`` minimising the
  prior-weighted cross-entropy, as BOSARIS's ``train_linear_calibration``;
  ``quality_features``: the quality terms it may add to the score (``QUALITY_TERMS``).
- ``bayes_threshold`` and ``far_threshold``: the LLR threshold of a target prior, or
  of a target false-accept rate read from development trials.

:mod:`dmha_modules.scoring.calibration` builds the stored ``Calibration`` on these.
"""

import math

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from dmha_modules.scoring.cllr import labelled_trials


# Quality measures and the terms each adds to the linear map.
QUALITY_TERMS = {"duration": ("log_shorter_seconds", "log_longer_seconds")}


def quality_features(quality, seconds):
    """The quality terms of trials: ``(N, terms)``, with the terms' names.

    ``duration`` adds the natural logs of the shorter and of the longer of
    the trial's two utterances' durations (symmetric: a trial scores the
    same both ways round).

    Arguments
    ---------
    quality : sequence of str
        Names in ``QUALITY_TERMS``.
    seconds : array-like
        ``(N, 2)`` durations of each trial's two utterances.

    Returns
    -------
    features : numpy.ndarray
        ``(N, terms)`` float64.
    names : list of str

    Example
    -------
    >>> features, names = quality_features(["duration"], [[2.0, 8.0]])
    >>> names, np.exp(features).round(6).tolist()
    (['log_shorter_seconds', 'log_longer_seconds'], [[2.0, 8.0]])
    """
    unknown = [name for name in quality if name not in QUALITY_TERMS]
    if unknown:
        raise ValueError(f"unknown quality measures {unknown}; known: {list(QUALITY_TERMS)}")
    seconds = np.asarray(seconds, dtype=np.float64).reshape(-1, 2)
    if not (seconds > 0).all():
        raise ValueError("durations must be positive")
    columns = {"duration": (np.log(seconds.min(axis=1)), np.log(seconds.max(axis=1)))}
    chosen = [column for name in quality for column in columns[name]]
    names = [term for name in quality for term in QUALITY_TERMS[name]]
    return (np.stack(chosen, axis=1) if chosen else np.zeros((len(seconds), 0))), names


def _weighted_cross_entropy(parameters, features, is_target, prior):
    """Prior-weighted cross-entropy of ``llr = features @ w + b``, its gradient and Hessian."""
    llrs = features @ parameters[:-1] + parameters[-1]
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.where(is_target, prior / is_target.sum(), (1 - prior) / (~is_target).sum())
    sign = np.where(is_target, -1.0, 1.0)  # the loss is softplus(sign * posterior log-odds)
    log_odds = sign * (llrs + logit(prior))
    loss = float(weights @ np.logaddexp(0, log_odds))
    slope = weights * sign * expit(log_odds)
    curvature = weights * expit(log_odds) * expit(-log_odds)
    return loss, design.T @ slope, design.T @ (design * curvature[:, None])


def fit_linear_llrs(features, labels, prior=0.5):
    """Weights ``w`` and offset ``b`` of ``llr = features @ w + b`` by logistic regression.

    Minimises the prior-weighted cross-entropy of BOSARIS's
    ``train_linear_calibration`` (Brümmer's FoCal): ``prior / n_target``
    times the sum over targets of ``ln(1 + e^-(llr + logit(prior)))`` plus
    ``(1 - prior) / n_nontarget`` times the sum over non-targets of
    ``ln(1 + e^(llr + logit(prior)))``. ``llr + logit(prior)`` is the
    posterior log-odds at the effective prior, so ``llr`` is the
    log-likelihood ratio whatever the prior and the ratio of target to
    non-target trials; at ``prior`` 0.5 the loss is ``ln 2`` times Cllr. The
    features are standardised for the (exact-Hessian, trust-region) Newton
    solver and the result mapped back, so an affine change of a feature
    changes only its weight.

    Arguments
    ---------
    features : array-like
        ``(N, K)`` trial features (the score first).
    labels : array-like
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.
    prior : float
        The effective target prior of the objective, in (0, 1).

    Returns
    -------
    weights : numpy.ndarray
        ``(K,)``.
    offset : float

    Example
    -------
    >>> weights, offset = fit_linear_llrs([[0.0], [1.0], [2.0], [3.0]], [0, 1, 0, 1])
    >>> round(float(weights[0]), 3), round(offset, 3)
    (0.908, -1.362)
    """
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    features = np.asarray(features, dtype=np.float64)
    _, is_target = labelled_trials(np.zeros(len(features)), labels)
    if not np.isfinite(features).all():
        raise ValueError("scores and quality measures must be finite")
    centre, spread = features.mean(axis=0), features.std(axis=0)
    spread[spread == 0] = 1.0  # a constant feature: its weight stays 0
    standard = (features - centre) / spread
    parts = lambda parameters: _weighted_cross_entropy(parameters, standard, is_target, prior)
    result = minimize(lambda p: parts(p)[:2], np.zeros(features.shape[1] + 1), jac=True,
                      hess=lambda p: parts(p)[2], method="trust-exact",
                      options={"gtol": 1e-9, "maxiter": 500})
    weights = result.x[:-1] / spread
    return weights, float(result.x[-1] - weights @ centre)


def bayes_threshold(p_target):
    """The LLR threshold of the Bayes decision at a target prior: ``-logit(p_target)``.

    With calibrated LLRs and equal costs of errors, accepting when ``llr >
    ln((1 - p_target) / p_target)`` has the least expected cost.

    Example
    -------
    >>> round(bayes_threshold(0.01), 4), bayes_threshold(0.5)
    (4.5951, 0.0)
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return math.log((1 - p_target) / p_target)


def far_threshold(nontarget_llrs, target_far):
    """The threshold at which ``target_far`` of development non-targets are accepted.

    Acceptance is ``llr > threshold``. Of ``n`` sorted non-target LLRs, the
    ``k``-th smallest as threshold accepts ``(n - k) / n``; a rate between two
    such points gets the threshold interpolated linearly between their LLRs
    (``numpy.interp`` of ``1 - target_far`` over ``k / n``). At least ``1 /
    target_far`` non-target trials are needed, ``10 / target_far`` for a
    usable estimate.

    Arguments
    ---------
    nontarget_llrs : array-like
        LLRs (or scores) of development non-target trials.
    target_far : float
        The false-accept rate wanted, in (0, 1).

    Returns
    -------
    float

    Example
    -------
    >>> llrs = np.arange(100.0)
    >>> far_threshold(llrs, 0.05), far_threshold(llrs, 0.055)
    (94.0, 93.5)
    """
    values = np.sort(np.asarray(nontarget_llrs, dtype=np.float64).reshape(-1))
    if not 0 < target_far < 1:
        raise ValueError(f"target_far must be in (0, 1), got {target_far}")
    if len(values) * target_far < 1:
        raise ValueError(f"a target false-accept rate of {target_far:g} needs at least "
                         f"{math.ceil(1 / target_far)} non-target trials, got {len(values)}")
    ranks = np.arange(1, len(values) + 1) / len(values)
    return float(np.interp(1 - target_far, ranks, values))
