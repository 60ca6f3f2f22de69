"""Losses against their published formulas, written out per sample."""

import math

import pytest
import torch

from dmha_modules.nn.heads import AgeRegressionHead
from dmha_modules.nn.losses import (
    AgeRegressionLoss,
    AMSoftmaxLoss,
    ClassWeightedCrossEntropy,
    OrdinalRegressionLoss,
)

COSINES = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.0, 0.9]])
TARGETS = torch.tensor([0, 2, 1])


def am_softmax_reference(cosines, targets, m, s, alpha=0.0):
    """-log e^{s psi_y} / (e^{s psi_y} + sum_{j != y} e^{s cos_j}), psi_y = (cos_y - m + alpha cos_y) / (1 + alpha)."""
    total = 0.0
    for row, y in zip(cosines.tolist(), targets.tolist()):
        target_logit = s * (row[y] - m + alpha * row[y]) / (1 + alpha)
        others = [s * c for j, c in enumerate(row) if j != y]
        total += -target_logit + math.log(
            math.exp(target_logit) + sum(math.exp(o) for o in others)
        )
    return total / len(targets)


def test_am_softmax_matches_formula():
    loss = AMSoftmaxLoss(margin=0.4, scale=30.0)
    value = loss(COSINES.unsqueeze(1), TARGETS.unsqueeze(1))
    assert value.item() == pytest.approx(
        am_softmax_reference(COSINES, TARGETS, 0.4, 30.0), rel=1e-5
    )


def test_am_softmax_annealing_follows_its_schedule():
    loss = AMSoftmaxLoss(margin=0.4, scale=30.0, annealing=True).train()
    for step in range(3):
        alpha = max(0.0, 1000.0 / (1.0 + 1e-4 * step) ** 2)
        expected = am_softmax_reference(COSINES, TARGETS, 0.4, 30.0, alpha)
        assert loss(COSINES, TARGETS).item() == pytest.approx(expected, rel=1e-5)
    assert loss.step.item() == 3


def test_am_softmax_margin_warm_up_rises_linearly_then_holds():
    loss = AMSoftmaxLoss(margin=0.4, scale=30.0, margin_warmup_epochs=1.5).train()
    loss.steps_per_epoch = 4  # warm-up over 6 training calls
    for call in range(1, 9):
        margin = 0.4 * min(call, 6) / 6
        expected = am_softmax_reference(COSINES, TARGETS, margin, 30.0)
        assert loss(COSINES, TARGETS).item() == pytest.approx(expected, rel=1e-5), call
    # Evaluation calls neither count nor move the margin.
    loss.eval()
    assert loss(COSINES, TARGETS).item() == pytest.approx(
        am_softmax_reference(COSINES, TARGETS, 0.4, 30.0), rel=1e-5
    )
    assert loss.step.item() == 8


def test_am_softmax_margin_warm_up_needs_the_epoch_length():
    loss = AMSoftmaxLoss(margin=0.4, margin_warmup_epochs=1)
    with pytest.raises(RuntimeError, match="steps_per_epoch"):
        loss(COSINES, TARGETS)


def test_class_weighted_cross_entropy_matches_formula():
    counts = [50, 30, 20]
    loss = ClassWeightedCrossEntropy()
    loss.set_class_counts(counts)
    weights = [1 - n / sum(counts) for n in counts]  # 0.5, 0.7, 0.8
    logits = COSINES * 5
    # PyTorch's weighted mean: sum_i w_{y_i} nll_i / sum_i w_{y_i}.
    nll = [
        -torch.log_softmax(row, 0)[y].item() for row, y in zip(logits, TARGETS.tolist())
    ]
    w = [weights[y] for y in TARGETS.tolist()]
    expected = sum(wi * li for wi, li in zip(w, nll)) / sum(w)
    assert loss(logits.unsqueeze(1), TARGETS).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_label_smoothing_spreads_the_weighted_target():
    counts = [50, 30, 20]
    smoothing, classes = 0.3, 3
    loss = ClassWeightedCrossEntropy(label_smoothing=smoothing)
    loss.set_class_counts(counts)
    weights = [1 - n / sum(counts) for n in counts]
    logits = COSINES * 5
    # Target 1 - e + e / C on the label, e / C elsewhere; each log-probability
    # weighted by its class's weight; the sum over the batch divided by the
    # labels' weights, as PyTorch's weighted mean.
    total = 0.0
    for row, y in zip(logits, TARGETS.tolist()):
        log_p = torch.log_softmax(row, 0).tolist()
        for c in range(classes):
            target = (1 - smoothing) * (c == y) + smoothing / classes
            total -= weights[c] * target * log_p[c]
    expected = total / sum(weights[y] for y in TARGETS.tolist())
    assert loss(logits.unsqueeze(1), TARGETS).item() == pytest.approx(
        expected, rel=1e-5
    )
    unsmoothed = ClassWeightedCrossEntropy()
    unsmoothed.set_class_counts(counts)
    assert unsmoothed(logits.unsqueeze(1), TARGETS).item() < expected


def test_ordinal_regression_matches_formula_and_decodes():
    logits = torch.tensor([[2.0, 0.5, -1.0, -3.0], [1.0, -0.2, 0.3, -2.0]])
    targets = torch.tensor([1, 3])
    cumulative = [[1, 1, 0, 0], [1, 1, 1, 1]]  # [1]*(y+1) + [0]*(C-y-1)
    expected = (
        sum(
            sum((1 / (1 + math.exp(-z)) - t) ** 2 for z, t in zip(row, target))
            for row, target in zip(logits.tolist(), cumulative)
        )
        / 2
    )
    assert OrdinalRegressionLoss()(logits, targets).item() == pytest.approx(
        expected, rel=1e-6
    )
    # Leading outputs above 0.5: two in the first row, one in the second (a gap stops it).
    assert OrdinalRegressionLoss.predict(logits).tolist() == [1, 0]



def test_age_regression_head_and_losses_in_years():
    head = AgeRegressionHead(input_size=3)
    head.set_age_stats(mean=20.0, std=5.0)
    x = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]])
    expected = 20.0 + 5.0 * (x[:, 0] @ head.linear.weight[0] + head.linear.bias)
    torch.testing.assert_close(head(x), expected)

    predicted, true = torch.tensor([25.0, 18.5, 40.0]), torch.tensor([20.0, 20.0, 39.0])
    assert AgeRegressionLoss("l1")(predicted, true).item() == pytest.approx(
        (5 + 1.5 + 1) / 3
    )
    # Huber with beta 2: |e| - beta/2 above beta, e^2 / (2 beta) below.
    huber = (5 - 1) + (1.5**2 / 4) + (1 / 4)
    assert AgeRegressionLoss("smooth_l1", beta=2.0)(
        predicted, true
    ).item() == pytest.approx(huber / 3)
