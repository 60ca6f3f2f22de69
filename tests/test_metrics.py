"""Metrics against independent references.

Classification metrics are checked against scikit-learn. Verification metrics
are checked against SpeechBrain's ``EER`` and ``minDCF`` (whose conventions
they reproduce), against the published definitions written out here, and on
hand-computed cases.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
)
from speechbrain.utils.metric_stats import EER, minDCF

from dmha_modules.scoring.metrics import (
    classification_metrics,
    cosine_scores,
    operating_points,
    rates_at_threshold,
    trial_pairs,
    verification_metrics,
)

# ---------------------------------------------------------------- classification


def random_classification(seed):
    """Targets that miss some classes, predictions that include some targets lack."""
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 9))
    n = int(rng.integers(1, 200))
    present = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
    target = rng.choice(present, size=n)
    noise = rng.integers(0, n_classes, size=n)
    predicted = np.where(rng.random(n) < 0.6, target, noise)
    return predicted, target, n_classes


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(30))
def test_classification_matches_sklearn(seed):
    predicted, target, n_classes = random_classification(seed)
    metrics = classification_metrics(predicted, target, n_classes)
    assert metrics["macro_f1"] == pytest.approx(f1_score(target, predicted, average="macro"))
    assert metrics["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(target, predicted)
    )
    assert metrics["accuracy"] == pytest.approx(accuracy_score(target, predicted))
    assert metrics["confusion"] == confusion_matrix(
        target, predicted, labels=range(n_classes)
    ).tolist()


def test_classification_hand_computed():
    # Class 2 is only predicted (F1 0), class 3 occurs nowhere (left out).
    metrics = classification_metrics([0, 2, 1, 1], [0, 0, 1, 1], n_classes=4)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["accuracy"] == 0.75
    assert metrics["confusion"] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_classification_accepts_tensors_arrays_and_lists_and_gives_json():
    predicted, target, n_classes = random_classification(0)
    from_lists = classification_metrics(predicted.tolist(), target.tolist(), n_classes)
    from_arrays = classification_metrics(
        predicted.astype(np.int32), target.astype(np.uint8), n_classes
    )
    from_tensors = classification_metrics(
        torch.from_numpy(predicted), torch.from_numpy(target), n_classes
    )
    assert from_lists == from_arrays == from_tensors
    assert json.loads(json.dumps(from_tensors)) == from_tensors
    assert all(type(count) is int for row in from_tensors["confusion"] for count in row)


@pytest.mark.parametrize(
    "predicted, target, message",
    [
        ([0, 3], [0, 1], "outside"),
        ([0, -1], [0, 1], "outside"),
        ([0, 1, 1], [0, 1], "3 predictions for 2 targets"),
        ([], [], "no examples"),
        ([0.0, 1.0], [0, 1], "integer"),
        ([[0, 1]], [[0, 1]], "1-D"),
    ],
)
def test_classification_rejects_bad_input(predicted, target, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(predicted, target, n_classes=3)


# ---------------------------------------------------------------- verification


def reference_rates(scores, labels):
    """P_miss and P_fa, accepting ``score > t``, for t below every score and at each score.

    Every operating point of the trials is among these thresholds.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    thresholds = np.array([-math.inf] + sorted(set(scores.tolist())))[:, None]
    p_miss = (scores[labels] <= thresholds).mean(axis=1)
    p_fa = (scores[~labels] > thresholds).mean(axis=1)
    return thresholds[:, 0], p_miss, p_fa


def reference_eer(scores, labels):
    """Where the FAR and FRR curves, joined linearly between thresholds, cross."""
    _, p_miss, p_fa = reference_rates(scores, labels)
    # p_miss rises from 0 and p_fa falls to 0: find the first point with
    # p_miss >= p_fa; the crossing is on the segment that ends there.
    b = int(np.argmax(p_miss >= p_fa))
    a = b - 1
    gap_a, gap_b = p_fa[a] - p_miss[a], p_fa[b] - p_miss[b]
    s = gap_a / (gap_a - gap_b)
    return p_fa[a] + s * (p_fa[b] - p_fa[a])


def reference_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """min over thresholds of the detection cost, over that of the best trivial system."""
    _, p_miss, p_fa = reference_rates(scores, labels)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return cost.min() / min(c_miss * p_target, c_fa * (1 - p_target))


def random_trials(seed, n_target=None, n_nontarget=None):
    rng = np.random.default_rng(seed)
    n_target = n_target or int(rng.integers(5, 300))
    n_nontarget = n_nontarget or int(rng.integers(5, 2000))
    separation = rng.uniform(0, 4)
    scores = np.concatenate(
        [rng.normal(separation, 1, n_target), rng.normal(0, 1, n_nontarget)]
    )
    labels = np.arange(n_target + n_nontarget) < n_target
    order = rng.permutation(len(scores))
    return scores[order], labels[order]


@pytest.mark.parametrize("seed", range(20))
def test_eer_within_half_a_step_of_the_crossing(seed):
    scores, labels = random_trials(seed)
    n_target, n_nontarget = labels.sum(), (~labels).sum()
    metrics = verification_metrics(scores, labels)
    # With distinct scores the rates move by 1/n_target or 1/n_nontarget from
    # one threshold to the next; SpeechBrain's convention reports the mean of
    # the two rates at the threshold nearest the crossing, which is at most
    # half such a step away from the crossing itself.
    tolerance = max(1 / n_target, 1 / n_nontarget) / 2
    assert abs(metrics["eer"] - reference_eer(scores, labels)) <= tolerance + 1e-12


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    "p_target, c_miss, c_fa",
    [(0.01, 1.0, 1.0), (0.05, 1.0, 1.0), (0.5, 1.0, 1.0), (0.01, 10.0, 1.0)],
)
def test_min_dcf_matches_definition(seed, p_target, c_miss, c_fa):
    scores, labels = random_trials(seed)
    metrics = verification_metrics(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    expected = reference_min_dcf(scores, labels, p_target, c_miss, c_fa)
    # Both sweep every operating point: no discretisation between them.
    assert metrics["min_dcf"] == pytest.approx(expected, abs=1e-12)
    # The threshold is one that reaches it, accepting scores above it.
    t = metrics["min_dcf_threshold"]
    p_miss = np.mean(scores[labels] <= t)
    p_fa = np.mean(scores[~labels] > t)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    assert cost / min(c_miss * p_target, c_fa * (1 - p_target)) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(10))
def test_eer_threshold_gives_the_eer(seed):
    scores, labels = random_trials(seed)
    metrics = verification_metrics(scores, labels)
    t = metrics["eer_threshold"]
    p_miss = np.mean(scores[labels] <= t)
    p_fa = np.mean(scores[~labels] > t)
    assert metrics["eer"] == pytest.approx((p_miss + p_fa) / 2)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("p_target", [0.01, 0.5])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_speechbrain(seed, p_target, ties):
    # 64 and 256 trials make every rate exact in SpeechBrain's float32.
    scores, labels = random_trials(seed, n_target=64, n_nontarget=256)
    if ties:
        scores = np.round(scores, 1)
    scores = torch.tensor(scores, dtype=torch.float32)
    labels = torch.tensor(labels)
    metrics = verification_metrics(scores, labels, p_target=p_target)
    eer, eer_threshold = EER(scores[labels], scores[~labels])
    dcf, dcf_threshold = minDCF(scores[labels], scores[~labels], p_target=p_target)
    assert metrics["eer"] == pytest.approx(eer, abs=1e-12)
    assert metrics["eer_threshold"] == eer_threshold
    assert metrics["min_dcf"] * min(p_target, 1 - p_target) == pytest.approx(dcf, rel=1e-6)
    assert metrics["min_dcf_threshold"] == dcf_threshold


HAND_SCORES = [0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1]
HAND_LABELS = [1, 1, 1, 0, 0, 0, 0]


def test_hand_computed_case():
    # Accepting score > t, (P_miss, P_fa) at t = 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.9:
    # (0, 3/4) (0, 2/4) (0, 1/4) (1/3, 1/4) (2/3, 1/4) (2/3, 0) (1, 0).
    metrics = verification_metrics(HAND_SCORES, HAND_LABELS)
    # |P_fa - P_miss| is smallest (1/12) at 0.4.
    assert metrics["eer"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert metrics["eer_threshold"] == 0.4
    # p_target 0.01: normalised cost P_miss + 99 P_fa, smallest (2/3) at 0.7.
    assert metrics["min_dcf"] == pytest.approx(2 / 3)
    assert metrics["min_dcf_threshold"] == 0.7
    # p_target 0.5: normalised cost P_miss + P_fa, smallest (1/4) at 0.3.
    balanced = verification_metrics(HAND_SCORES, HAND_LABELS, p_target=0.5)
    assert balanced["min_dcf"] == pytest.approx(0.25)
    assert balanced["min_dcf_threshold"] == 0.3


def test_hand_computed_operating_points():
    thresholds, p_miss, p_fa = operating_points(HAND_SCORES, HAND_LABELS)
    assert thresholds.tolist() == [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.9]
    assert p_miss.tolist() == pytest.approx([0, 0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert p_fa.tolist() == pytest.approx([3 / 4, 2 / 4, 1 / 4, 1 / 4, 1 / 4, 0, 0])


def test_rates_at_a_threshold_are_those_of_the_operating_points():
    thresholds, p_miss, p_fa = operating_points(HAND_SCORES, HAND_LABELS)
    for threshold, miss, false_alarm in zip(thresholds, p_miss, p_fa):
        assert rates_at_threshold(HAND_SCORES, HAND_LABELS, threshold) == pytest.approx(
            (miss, false_alarm))
    # Between scores, and beyond them: accept all, reject all.
    assert rates_at_threshold(HAND_SCORES, HAND_LABELS, 0.65) == pytest.approx((2 / 3, 1 / 4))
    assert rates_at_threshold(HAND_SCORES, HAND_LABELS, -1.0) == (0.0, 1.0)
    assert rates_at_threshold(HAND_SCORES, HAND_LABELS, 5.0) == (1.0, 0.0)
    with pytest.raises(ValueError, match="need target and non-target"):
        rates_at_threshold([0.1, 0.2], [1, 1], 0.0)


def test_perfectly_separated_scores():
    metrics = verification_metrics([0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3], [1, 1, 1, 1, 0, 0, 0])
    assert metrics == {
        "eer": 0.0,
        "eer_threshold": 0.3,
        "min_dcf": 0.0,
        "min_dcf_threshold": 0.3,
    }


def test_perfectly_inverted_scores():
    metrics = verification_metrics([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])
    assert metrics["eer"] == 1.0
    assert metrics["min_dcf"] == 1.0  # no better than rejecting every trial


def test_equal_scores_are_chance():
    metrics = verification_metrics(torch.full((5,), 0.5), torch.tensor([1, 1, 0, 0, 0]))
    assert metrics["eer"] == 0.5
    assert metrics["min_dcf"] == 1.0


def test_verification_accepts_tensors_and_gives_json():
    scores, labels = random_trials(3)
    from_arrays = verification_metrics(scores, labels)
    from_tensors = verification_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    from_lists = verification_metrics(scores.tolist(), labels.astype(int).tolist())
    assert from_arrays == from_tensors == from_lists
    assert json.loads(json.dumps(from_arrays)) == from_arrays


@pytest.mark.parametrize(
    "scores, labels, kwargs, message",
    [
        ([0.1, 0.2], [1, 1], {}, "need target and non-target"),
        ([0.1, 0.2], [0, 0], {}, "need target and non-target"),
        ([0.1, math.nan], [1, 0], {}, "finite"),
        ([0.1, 0.2], [1, 2], {}, "labels must be 1"),
        ([0.1, 0.2, 0.3], [1, 0], {}, "equally long"),
        ([0.1, 0.2], [1, 0], {"p_target": 0}, "p_target"),
        ([0.1, 0.2], [1, 0], {"p_target": 1}, "p_target"),
        ([0.1, 0.2], [1, 0], {"c_fa": 0}, "costs"),
    ],
)
def test_verification_rejects_bad_input(scores, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        verification_metrics(scores, labels, **kwargs)


# ---------------------------------------------------------------- trials


def all_pairs(speakers):
    pairs = itertools.combinations(range(len(speakers)), 2)
    return [(i, j, speakers[i] == speakers[j]) for i, j in pairs]


def test_trial_pairs_are_every_pair_without_a_limit():
    speakers = ["b", "a", "b", "c", "a", "a"]
    assert trial_pairs(speakers) == all_pairs(speakers)
    assert trial_pairs(torch.tensor([2, 1, 2, 3, 1, 1])) == all_pairs(speakers)
    assert trial_pairs(speakers, max_pairs=15) == all_pairs(speakers)


def test_trial_pairs_keep_every_same_speaker_pair_that_fits():
    rng = np.random.default_rng(0)
    speakers = rng.integers(0, 30, size=200).tolist()
    everything = all_pairs(speakers)
    same = [pair for pair in everything if pair[2]]
    pairs = trial_pairs(speakers, max_pairs=5000, seed=1)
    assert len(pairs) == 5000
    assert pairs == sorted(pairs)
    assert set(pairs) <= set(everything)
    assert len(set(pairs)) == len(pairs)
    assert [pair for pair in pairs if pair[2]] == same  # ~660 of them
    assert trial_pairs(speakers, max_pairs=5000, seed=1) == pairs
    assert trial_pairs(speakers, max_pairs=5000, seed=2) != pairs


@pytest.mark.parametrize(
    "speakers, max_pairs, n_same, n_different",
    [
        # Two speakers, 90 same and 100 different pairs: half the budget each.
        (["a"] * 10 + ["b"] * 10, 50, 25, 25),
        (["a"] * 10 + ["b"] * 10, 51, 25, 26),
        # Only 10 different pairs: all of them, same-speaker pairs fill the rest.
        (["a"] * 10 + ["b"], 30, 20, 10),
        # One speaker: only same-speaker pairs.
        (["a"] * 10, 7, 7, 0),
    ],
)
def test_trial_pairs_split_the_budget(speakers, max_pairs, n_same, n_different):
    pairs = trial_pairs(speakers, max_pairs=max_pairs)
    assert set(pairs) <= set(all_pairs(speakers))
    assert sum(same for _, _, same in pairs) == n_same
    assert sum(not same for _, _, same in pairs) == n_different


def test_trial_pairs_reject_a_zero_budget():
    with pytest.raises(ValueError, match="max_pairs"):
        trial_pairs(["a", "b"], max_pairs=0)


# ---------------------------------------------------------------- cosine scores


def reference_cosines(embeddings, pairs):
    embeddings = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    return [
        a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        for a, b in ((embeddings[i], embeddings[j]) for i, j, *_ in pairs)
    ]


def test_cosine_scores_match_reference():
    torch.manual_seed(0)
    embeddings = torch.randn(40, 1, 16)
    pairs = trial_pairs(list(range(40)), max_pairs=300)
    expected = reference_cosines(embeddings, pairs)
    scores = cosine_scores(embeddings, pairs)
    assert scores.shape == (300,)
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    # (N, E) embeddings, (i, j) pairs, a pair tensor, small chunks: same scores.
    index = torch.tensor([(i, j) for i, j, _ in pairs])
    assert torch.allclose(cosine_scores(embeddings[:, 0], index), scores)
    assert torch.allclose(cosine_scores(embeddings, [(i, j) for i, j, _ in pairs]), scores)
    assert torch.allclose(cosine_scores(embeddings, pairs, chunk_size=7), scores)


def test_cosine_scores_edge_cases():
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    assert cosine_scores(embeddings, [(0, 1), (1, 2)]).tolist() == [0.0, -1.0]
    assert cosine_scores(embeddings, []).shape == (0,)
    with pytest.raises(ValueError, match="embeddings"):
        cosine_scores(torch.zeros(3, 2, 2), [(0, 1)])
    with pytest.raises(ValueError, match="pairs"):
        cosine_scores(embeddings, [0, 1])
