"""Validation and test metrics: age-group classification and speaker verification.

- ``classification_metrics``: macro-F1, balanced accuracy, accuracy and the
  confusion matrix of predicted class indices.
- ``verification_metrics``: EER and normalised minDCF of trial scores, with
  their thresholds, as SpeechBrain's ``EER`` and ``minDCF`` define them.
- ``operating_points``: miss and false-alarm rates at every threshold (the
  points of a DET curve); ``rates_at_threshold``: at one threshold.
- ``trial_pairs``: verification trials from the speakers of utterances.
- ``cosine_scores``: cosine similarity of the two embeddings of each trial.

Results are plain Python floats, ints and lists, so they can be logged and
written as JSON as they are.
"""

import numpy as np
import torch
import torch.nn.functional as F


def as_numpy(values):
    """A tensor (on any device, any dtype), array or sequence as a numpy array."""
    if torch.is_tensor(values):
        values = values.detach().cpu()
        # numpy has no bfloat16 (mixed-precision embeddings).
        return (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    return np.asarray(values)


def _class_indices(values, n_classes, name):
    """``values`` as a 1-D integer array of class indices in ``[0, n_classes)``."""
    indices = as_numpy(values)
    if indices.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got {indices.dtype}")
    indices = indices.astype(np.int64)
    out_of_range = (indices < 0) | (indices >= n_classes)
    if out_of_range.any():
        raise ValueError(
            f"{name} holds {indices[out_of_range][0]}, outside the {n_classes} classes"
        )
    return indices


def classification_metrics(predicted, target, n_classes):
    """Macro-F1, balanced accuracy, accuracy and confusion matrix.

    Conventions (those of scikit-learn's defaults):

    - ``macro_f1`` is the mean F1 over the classes that occur in ``target``
      or in ``predicted``, as ``f1_score(target, predicted, average="macro")``.
      A class that occurs in neither is left out rather than counted as 0, so
      a validation set that lacks a rare class is not penalised for it; a
      class that is predicted but never true counts with F1 = 0.
    - ``balanced_accuracy`` is the mean recall over the classes that occur in
      ``target``, as ``balanced_accuracy_score(target, predicted)``.

    Arguments
    ---------
    predicted : sequence, numpy.ndarray or torch.Tensor
        Predicted class indices ``(N,)``, integers in ``[0, n_classes)``.
    target : sequence, numpy.ndarray or torch.Tensor
        True class indices ``(N,)``, integers in ``[0, n_classes)``.
    n_classes : int
        Number of classes (the size of the confusion matrix).

    Returns
    -------
    dict
        ``macro_f1``, ``balanced_accuracy``, ``accuracy`` (floats in [0, 1])
        and ``confusion``: ``n_classes`` lists of ``n_classes`` ints,
        ``confusion[t][p]`` counting the examples of true class ``t``
        predicted as ``p``.

    Raises
    ------
    ValueError
        Empty or differently long inputs, or indices that are not integers
        in ``[0, n_classes)``.

    Example
    -------
    >>> metrics = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], n_classes=3)
    >>> metrics["accuracy"], metrics["balanced_accuracy"], round(metrics["macro_f1"], 4)
    (0.75, 0.8333333333333334, 0.7778)
    >>> metrics["confusion"]
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    predicted = _class_indices(predicted, n_classes, "predicted")
    target = _class_indices(target, n_classes, "target")
    if len(predicted) != len(target):
        raise ValueError(f"{len(predicted)} predictions for {len(target)} targets")
    if len(target) == 0:
        raise ValueError("no examples to score")
    confusion = np.bincount(
        target * n_classes + predicted, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    correct = np.diag(confusion)
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true + predicted): defined for
    # every class that occurs on either side.
    occurring = true_counts + predicted_counts > 0
    f1 = 2 * correct[occurring] / (true_counts[occurring] + predicted_counts[occurring])
    in_target = true_counts > 0
    recall = correct[in_target] / true_counts[in_target]
    return {
        "macro_f1": float(f1.mean()),
        "balanced_accuracy": float(recall.mean()),
        "accuracy": float(correct.sum() / len(target)),
        "confusion": confusion.tolist(),
    }


def _error_counts(scores, labels):
    """Misses and false alarms at every candidate threshold, counted exactly.

    A trial is accepted when its score is strictly above the threshold (as in
    SpeechBrain). The candidate thresholds are the distinct scores, in
    increasing order; the last one rejects every trial.

    Returns
    -------
    thresholds, misses, false_alarms : numpy.ndarray
        ``(T,)`` each: float64 thresholds, the number of target trials
        rejected and of non-target trials accepted at each.
    n_target, n_nontarget : int
        Numbers of target and non-target trials.
    """
    scores = as_numpy(scores)
    is_target = as_numpy(labels)
    if scores.ndim != 1 or is_target.ndim != 1 or len(scores) != len(is_target):
        raise ValueError(
            f"scores {scores.shape} and labels {is_target.shape} must be 1-D and "
            "equally long"
        )
    if not np.isin(is_target, (0, 1)).all():
        raise ValueError(
            "labels must be 1 (or True) for target trials, 0 for the others"
        )
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    is_target = is_target.astype(bool)
    target_scores = np.sort(scores[is_target])
    nontarget_scores = np.sort(scores[~is_target])
    if len(target_scores) == 0 or len(nontarget_scores) == 0:
        raise ValueError(
            f"need target and non-target trials, got {len(target_scores)} and "
            f"{len(nontarget_scores)}"
        )
    thresholds = np.unique(scores)
    misses = np.searchsorted(target_scores, thresholds, side="right")
    false_alarms = len(nontarget_scores) - np.searchsorted(
        nontarget_scores, thresholds, side="right"
    )
    return thresholds, misses, false_alarms, len(target_scores), len(nontarget_scores)


def operating_points(scores, labels):
    """Miss and false-alarm probabilities at every threshold: a DET curve.

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``, higher meaning "same speaker".
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target (same-speaker) trials, 0 or False else.

    Returns
    -------
    thresholds, p_miss, p_false_alarm : numpy.ndarray
        ``(T,)`` float64 each: the distinct scores in increasing order, the
        fraction of target trials scoring at most the threshold and the
        fraction of non-target trials scoring above it.

    Example
    -------
    >>> thresholds, p_miss, p_false_alarm = operating_points(
    ...     [0.9, 0.4, 0.7, 0.1], [True, True, False, False]
    ... )
    >>> thresholds.tolist(), p_miss.tolist(), p_false_alarm.tolist()
    ([0.1, 0.4, 0.7, 0.9], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 0.0, 0.0])
    """
    thresholds, misses, false_alarms, n_target, n_nontarget = _error_counts(
        scores, labels
    )
    return thresholds, misses / n_target, false_alarms / n_nontarget


def rates_at_threshold(scores, labels, threshold):
    """Miss and false-alarm probabilities of the decisions ``score > threshold``.

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``; finite.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.
    threshold : float
        Trials scoring above it are accepted.

    Returns
    -------
    p_miss, p_false_alarm : float

    Example
    -------
    >>> rates_at_threshold([0.9, 0.4, 0.7, 0.1], [1, 1, 0, 0], 0.5)
    (0.5, 0.5)
    """
    _, _, _, n_target, n_nontarget = _error_counts(scores, labels)  # checks the inputs
    scores, is_target = as_numpy(scores), as_numpy(labels).astype(bool)
    accepted = scores > threshold
    return (float((~accepted[is_target]).sum() / n_target),
            float(accepted[~is_target].sum() / n_nontarget))


def verification_metrics(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Equal error rate and normalised minimum detection cost of trials.

    The definitions are those of ``speechbrain.utils.metric_stats.EER`` and
    ``minDCF``, computed from sorted scores in O(N log N) time and O(N)
    memory. SpeechBrain's ``minDCF`` compares every score with every
    threshold in (N, 2N) matrices and its ``EER`` loops over the 2N
    thresholds in Python: for 20,000 trials (the recipes' ``max_trials``)
    they take about 10 GB and 45 s, and 4 s, on CPU. The tests check that
    both give the same values as these.

    - A trial is accepted when its score is strictly above the threshold.
      The candidate thresholds are the distinct scores (SpeechBrain also
      tries the midpoints between them, which give the same error rates as
      the score below and so are never chosen).
    - ``eer`` is ``(P_fa + P_miss) / 2`` at the first (lowest) threshold
      where ``|P_fa - P_miss|`` is smallest. With finite trials the two rates
      move in steps of ``1 / n_nontarget`` and ``1 / n_target``, so this is
      within half a step of where the two curves cross.
    - ``min_dcf`` is the minimum over the thresholds of ``c_miss * P_miss *
      p_target + c_fa * P_fa * (1 - p_target)``, divided by ``min(c_miss *
      p_target, c_fa * (1 - p_target))``, the cost of the better of always
      accepting and always rejecting (NIST's normalisation; SpeechBrain's
      ``minDCF`` returns the cost before it). As in SpeechBrain, always
      rejecting is a candidate but always accepting is not, so ``min_dcf``
      is at most 1 whenever ``c_miss * p_target <= c_fa * (1 - p_target)``,
      which holds for the usual ``p_target <= 0.5`` and equal costs.

    Scores that cannot tell targets from non-targets (all equal) give
    ``eer`` 0.5 and ``min_dcf`` 1.

    Arguments
    ---------
    scores : sequence, numpy.ndarray or torch.Tensor
        Trial scores ``(N,)``, higher meaning "same speaker"; finite.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``(N,)``: 1 or True for target (same-speaker) trials, 0 or False else.
        Both kinds must occur.
    p_target : float
        Prior probability of a target trial, in (0, 1).
    c_miss : float
        Cost of rejecting a target trial.
    c_fa : float
        Cost of accepting a non-target trial.

    Returns
    -------
    dict
        ``eer`` (a fraction in [0, 1]), ``eer_threshold``, ``min_dcf``
        (normalised) and ``min_dcf_threshold``, all floats; the thresholds
        are scores, with "accept" meaning ``score > threshold``.

    Example
    -------
    >>> metrics = verification_metrics(
    ...     scores=[0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1],
    ...     labels=[1, 1, 1, 0, 0, 0, 0],
    ... )
    >>> round(metrics["eer"], 4), metrics["eer_threshold"]
    (0.2917, 0.4)
    >>> round(metrics["min_dcf"], 4), metrics["min_dcf_threshold"]
    (0.6667, 0.7)
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    thresholds, misses, false_alarms, n_target, n_nontarget = _error_counts(
        scores, labels
    )
    eer_index, eer = _equal_error_point(misses, false_alarms, n_target, n_nontarget)
    dcf_index, min_dcf = _min_normalised_dcf(
        misses, false_alarms, n_target, n_nontarget, p_target, c_miss, c_fa
    )
    return {
        "eer": float(eer),
        "eer_threshold": float(thresholds[eer_index]),
        "min_dcf": float(min_dcf),
        "min_dcf_threshold": float(thresholds[dcf_index]),
    }


def _equal_error_point(misses, false_alarms, n_target, n_nontarget):
    """Index of the EER threshold among the candidates, and the EER there."""
    # |P_fa - P_miss| scaled by n_target * n_nontarget: exact integers, so
    # thresholds that tie are recognised as ties and the lowest one is kept.
    eer_index = int(np.argmin(np.abs(false_alarms * n_target - misses * n_nontarget)))
    eer = (false_alarms[eer_index] / n_nontarget + misses[eer_index] / n_target) / 2
    return eer_index, eer


def _min_normalised_dcf(misses, false_alarms, n_target, n_nontarget, p_target, c_miss, c_fa):
    """Index of the threshold of least normalised detection cost, and that cost."""
    costs = (
        c_miss * p_target * misses / n_target
        + c_fa * (1 - p_target) * false_alarms / n_nontarget
    ) / min(c_miss * p_target, c_fa * (1 - p_target))
    dcf_index = int(np.argmin(costs))
    return dcf_index, costs[dcf_index]


def _draw(rng, indices, size):
    """``size`` of ``indices`` drawn without replacement (all of them if they fit)."""
    if size >= len(indices):
        return indices
    return rng.choice(indices, size=size, replace=False)


def trial_pairs(speaker_ids, max_pairs=None, seed=0):
    """Verification trials: pairs of utterances, same speaker or not.

    Without ``max_pairs`` (or when there are at most ``max_pairs`` pairs)
    every pair ``i < j`` is a trial. Otherwise at least half of the budget
    (rounded up) is kept for different-speaker pairs, unless there are fewer
    of them; the same-speaker pairs get the rest, all of them when they fit
    (the usual case, as they are the rare ones), else a random subset; the
    different-speaker pairs then fill what is left. Both subsets are drawn
    without replacement by ``numpy.random.default_rng(seed)``, so a given
    ``seed`` gives the same trials every time.

    All N (N - 1) / 2 pairs are enumerated first (16 bytes each), which is
    fine up to several thousand utterances.

    Arguments
    ---------
    speaker_ids : sequence or torch.Tensor
        Speaker of each utterance ``(N,)``: any values that compare equal
        for the same speaker (ints, strings).
    max_pairs : int, optional
        Most trials to return.
    seed : int
        Seed of the subsampling.

    Returns
    -------
    list of (int, int, bool)
        ``(i, j, same_speaker)`` with ``i < j`` utterance indices, sorted by
        ``(i, j)``.

    Example
    -------
    >>> trial_pairs(["ann", "bob", "ann"])
    [(0, 1, False), (0, 2, True), (1, 2, False)]
    >>> len(trial_pairs(list(range(10)), max_pairs=5))
    5
    """
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1, got {max_pairs}")
    if torch.is_tensor(speaker_ids):
        speaker_ids = speaker_ids.tolist()
    _, speakers = np.unique(np.asarray(list(speaker_ids)), return_inverse=True)
    speakers = speakers.reshape(-1)
    first, second = np.triu_indices(len(speakers), k=1)
    same = speakers[first] == speakers[second]
    if max_pairs is not None and len(first) > max_pairs:
        same_pairs = np.flatnonzero(same)
        different_pairs = np.flatnonzero(~same)
        n_same = min(
            len(same_pairs), max_pairs - min(len(different_pairs), (max_pairs + 1) // 2)
        )
        n_different = min(len(different_pairs), max_pairs - n_same)
        rng = np.random.default_rng(seed)
        kept = np.sort(
            np.concatenate(
                [
                    _draw(rng, same_pairs, n_same),
                    _draw(rng, different_pairs, n_different),
                ]
            )
        )
        first, second, same = first[kept], second[kept], same[kept]
    return list(zip(first.tolist(), second.tolist(), same.tolist()))


def cosine_scores(embeddings, pairs, chunk_size=65536):
    """Cosine similarity of the embeddings of each pair.

    Pairs are scored ``chunk_size`` at a time, so memory stays at
    ``chunk_size x E`` whatever the number of trials. A zero embedding scores
    0 against anything.

    Arguments
    ---------
    embeddings : torch.Tensor or numpy.ndarray
        ``(N, E)`` or SpeechBrain's ``(N, 1, E)``.
    pairs : sequence or torch.Tensor
        ``(i, j)`` or ``(i, j, same)`` rows (as from ``trial_pairs``), or a
        ``(P, 2)`` or ``(P, 3)`` integer tensor.
    chunk_size : int
        Pairs scored at once.

    Returns
    -------
    torch.Tensor
        ``(P,)`` cosine similarities, on the embeddings' device.

    Example
    -------
    >>> embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    >>> cosine_scores(embeddings, [(0, 1, False), (0, 2, True), (1, 2, False)])
    tensor([0.0000, 0.7071, 0.7071])
    """
    embeddings = torch.as_tensor(embeddings)
    if embeddings.dim() == 3 and embeddings.shape[1] == 1:
        embeddings = embeddings[:, 0]
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be (N, E) or (N, 1, E), got {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        embeddings = embeddings.float()
    index = torch.as_tensor(pairs, dtype=torch.long, device=embeddings.device)
    if index.numel() == 0:
        return embeddings.new_zeros(0)
    if index.dim() != 2 or index.shape[1] not in (2, 3):
        raise ValueError(
            f"pairs must be (i, j) or (i, j, same) rows, got {tuple(index.shape)}"
        )
    unit = F.normalize(embeddings, dim=1)
    return torch.cat(
        [
            (unit[chunk[:, 0]] * unit[chunk[:, 1]]).sum(dim=1)
            for chunk in index.split(chunk_size)
        ]
    )


def adaptive_snorm(embeddings, pairs, cohort, top_n=200, chunk_size=4096):
    """Adaptive symmetric score normalisation (AS-Norm) of cosine trial scores.

    Each utterance is scored against the cohort; the mean and standard
    deviation of its ``top_n`` highest cohort scores normalise every trial it
    is in: ``s' = ((s - m_e) / d_e + (s - m_t) / d_t) / 2`` for enrolment
    ``e`` and test ``t`` (Matejka et al., Interspeech 2017).

    Arguments
    ---------
    embeddings : torch.Tensor
        ``(N, E)`` or ``(N, 1, E)``: the utterances of the trials.
    pairs : sequence or torch.Tensor
        Trials as for ``cosine_scores``.
    cohort : torch.Tensor
        ``(M, E)`` or ``(M, 1, E)`` embeddings of cohort utterances (speakers
        other than the trials' ones).
    top_n : int
        Cohort scores kept per utterance (all when the cohort is smaller).
    chunk_size : int
        Utterances scored against the cohort at once.

    Returns
    -------
    torch.Tensor
        ``(P,)`` normalised scores.

    Example
    -------
    >>> embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    >>> cohort = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    >>> adaptive_snorm(embeddings, [(0, 1)], cohort, top_n=2)
    tensor([-1.2044])
    """
    unit = F.normalize(torch.as_tensor(embeddings).reshape(len(embeddings), -1).float(), dim=1)
    cohort = F.normalize(torch.as_tensor(cohort).reshape(len(cohort), -1).float(), dim=1)
    top = min(top_n, len(cohort))
    means, stds = [], []
    for chunk in unit.split(chunk_size):
        best = (chunk @ cohort.to(chunk.device).T).topk(top, dim=1).values
        means.append(best.mean(dim=1))
        stds.append(best.std(dim=1, unbiased=False).clamp(min=1e-6))
    mean, std = torch.cat(means), torch.cat(stds)
    index = torch.as_tensor(pairs, dtype=torch.long, device=unit.device)
    scores = cosine_scores(unit, index)
    i, j = index[:, 0], index[:, 1]
    return ((scores - mean[i]) / std[i] + (scores - mean[j]) / std[j]) / 2
