"""Losses for speakers and age (the heads they train are in :mod:`dmha_modules.nn.heads`).

- ``AMSoftmaxLoss``: additive-margin softmax on cosines, optional margin warm-up
  or the original's annealing.
- ``ClassWeightedCrossEntropy``: cross-entropy weighting class ``c`` by
  ``1 - n_c / N``.
- ``OrdinalRegressionLoss``: cumulative targets with squared error.
- ``AgeRegressionLoss``: age in years (L1 or smooth-L1), which the original
  did not have.
"""

import torch
import torch.nn.functional as F

# Model folders written before the heads had their own module name them here.
from dmha_modules.nn.heads import AgeRegressionHead, Classifier  # noqa: F401


def batch_scores(x):
    """Scores ``(B, 1, C)`` (SpeechBrain's layout) or ``(B, C)`` as ``(B, C)``."""
    return x.reshape(x.shape[0], -1)


def batch_targets(y):
    """Targets ``(B, 1)`` (SpeechBrain's layout) or ``(B,)`` as ``(B,)``."""
    return y.reshape(-1)


class AMSoftmaxLoss(torch.nn.Module):
    """Additive-margin softmax: cross-entropy of ``s * (cos - m * onehot)``.

    With ``annealing``, the margin cosine is mixed with the plain one as
    ``(cos_m + alpha cos) / (1 + alpha)``, ``alpha = max(0, 1000 / (1 +
    1e-4 step)^2)``, where ``step`` counts the training calls (a buffer, so it
    is checkpointed). That schedule was made for the original's days of
    training: over a few hundred steps ``alpha`` stays near 1000 and the margin
    near 0. ``margin_warmup_epochs`` is the schedule for short runs: the margin
    rises linearly from ``margin / steps`` at the first call to ``margin`` after
    ``margin_warmup_epochs`` epochs, so the first epochs learn to separate the
    classes before they are asked to separate them by a margin. Its epoch
    length must be set in ``steps_per_epoch`` (training calls per epoch) before
    the first call, as :class:`dmha_modules.recipe.brains.DMHABrain` does.

    Arguments
    ---------
    margin : float
        Additive margin ``m``.
    scale : float
        Scale ``s``.
    annealing : bool
        Start from plain cosine softmax and anneal towards the margin (the original's).
    margin_warmup_epochs : float
        Epochs over which the margin rises linearly to ``margin`` (0: none).

    Example
    -------
    >>> loss = AMSoftmaxLoss(margin=0.4, scale=30.0)
    >>> cosines = torch.tensor([[[0.9, 0.1]]])
    >>> round(loss(cosines, torch.tensor([0])).item(), 4)  # log(1 + exp(30 * (0.1 - 0.5)))
    0.0
    >>> round(loss(cosines, torch.tensor([1])).item(), 2)  # log(1 + exp(30 * (0.9 - (0.1 - 0.4))))
    36.0
    >>> warming = AMSoftmaxLoss(margin=0.4, margin_warmup_epochs=2)
    >>> warming.steps_per_epoch = 2
    >>> margins = []
    >>> for step in range(5):  # training calls so far
    ...     _ = warming.step.fill_(step)
    ...     margins.append(round(warming.current_margin(), 2))
    >>> margins
    [0.1, 0.2, 0.3, 0.4, 0.4]
    """

    def __init__(self, margin=0.4, scale=30.0, annealing=False, margin_warmup_epochs=0.0):
        super().__init__()
        self.margin = margin
        self.scale = scale
        self.annealing = annealing
        self.margin_warmup_epochs = margin_warmup_epochs
        self.steps_per_epoch = None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_margin(self):
        """The margin of the next training call (``margin`` once warmed up)."""
        if not self.margin_warmup_epochs:
            return self.margin
        if self.steps_per_epoch is None:
            raise RuntimeError("AMSoftmaxLoss: margin warm-up needs steps_per_epoch")
        warmup = max(1.0, self.margin_warmup_epochs * self.steps_per_epoch)
        return self.margin * min(1.0, (self.step.item() + 1) / warmup)

    def logits(self, cosines, targets):
        """Margin logits ``(B, C)`` from cosines ``(B, 1, C)`` and class indices ``(B,)``."""
        cosines = batch_scores(cosines)
        onehot = F.one_hot(batch_targets(targets), cosines.shape[1]).to(cosines.dtype)
        margin_cosines = cosines - self.current_margin() * onehot
        if self.annealing:
            alpha = max(0.0, 1000.0 / (1.0 + 1e-4 * self.step.item()) ** 2)
            margin_cosines = (margin_cosines + alpha * cosines) / (1 + alpha)
        return self.scale * margin_cosines

    def forward(self, cosines, targets):
        """Loss of cosines ``(B, 1, C)`` for class indices ``(B,)`` or ``(B, 1)``."""
        logits = self.logits(cosines, targets)
        if self.training:
            self.step += 1
        return F.cross_entropy(logits, batch_targets(targets))


class ClassWeightedCrossEntropy(torch.nn.Module):
    """Cross-entropy with class ``c`` weighted by ``1 - n_c / N``.

    The weights are set from the training label counts by
    ``set_class_counts`` and live in a buffer (checkpointed with the model);
    until then the loss is plain cross-entropy. With ``label_smoothing``
    ``e``, the target of ``C`` classes is ``1 - e + e / C`` on the labelled
    class and ``e / C`` on each other one (PyTorch's definition, weights
    included).

    Arguments
    ---------
    label_smoothing : float
        Share ``e`` of the target spread evenly over the classes (0: one-hot).

    Example
    -------
    >>> loss = ClassWeightedCrossEntropy()
    >>> loss.set_class_counts([30, 10])
    >>> loss.weight
    tensor([0.2500, 0.7500])
    >>> scores = torch.tensor([[[1.0, 3.0]]]).log()  # probabilities 1/4, 3/4
    >>> smoothed = ClassWeightedCrossEntropy(label_smoothing=0.2)
    >>> round(smoothed(scores, torch.tensor([1])).item(), 4)  # -(0.1 log 1/4 + 0.9 log 3/4)
    0.3975
    """

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", torch.ones(0))

    def set_class_counts(self, counts):
        """Sets the weights from per-class training counts ``n_c``."""
        counts = torch.as_tensor(counts, dtype=torch.float, device=self.weight.device)
        self.weight = 1 - counts / counts.sum()

    def forward(self, logits, targets):
        """Loss of logits ``(B, 1, C)`` for class indices ``(B,)`` or ``(B, 1)``."""
        weight = self.weight if self.weight.numel() else None
        return F.cross_entropy(
            batch_scores(logits),
            batch_targets(targets),
            weight=weight,
            label_smoothing=self.label_smoothing,
        )


class OrdinalRegressionLoss(torch.nn.Module):
    """Ordinal regression of the age variant: class ``y`` of ``C`` targets
    ``[1] * (y + 1) + [0] * (C - y - 1)``, squared error against
    ``sigmoid(logits)`` summed over outputs and averaged over the batch.

    Example
    -------
    >>> loss = OrdinalRegressionLoss()
    >>> logits = torch.tensor([[[9.0, 9.0, -9.0]]])
    >>> loss(logits, torch.tensor([1])).item() < 1e-6
    True
    >>> OrdinalRegressionLoss.predict(logits)
    tensor([1])
    """

    def forward(self, logits, targets):
        """Loss of logits ``(B, 1, C)`` for class indices ``(B,)`` or ``(B, 1)``."""
        logits = batch_scores(logits)
        steps = torch.arange(logits.shape[1], device=logits.device)
        cumulative = (steps <= batch_targets(targets).unsqueeze(1)).to(logits.dtype)
        return ((torch.sigmoid(logits) - cumulative) ** 2).sum(dim=1).mean()

    @staticmethod
    def predict(logits):
        """Class indices ``(B,)``: leading outputs above 0.5, minus one (at least 0)."""
        above = (batch_scores(logits) > 0).long()
        return (above.cumprod(dim=1).sum(dim=1) - 1).clamp(min=0)


class AgeRegressionLoss(torch.nn.Module):
    """L1 or smooth-L1 (Huber, ``beta`` years) between predicted and true ages.

    Arguments
    ---------
    kind : str
        ``"l1"`` or ``"smooth_l1"``.
    beta : float
        Smooth-L1 threshold in years.

    Example
    -------
    >>> loss = AgeRegressionLoss("smooth_l1", beta=2.0)
    >>> loss(torch.tensor([30.0, 21.0]), torch.tensor([20.0, 20.0])).item()  # (9 + 0.25) / 2
    4.625
    """

    def __init__(self, kind="l1", beta=1.0):
        super().__init__()
        if kind not in ("l1", "smooth_l1"):
            raise ValueError(f"Unknown kind {kind!r}; expected 'l1' or 'smooth_l1'")
        self.kind = kind
        self.beta = beta

    def forward(self, predicted, target):
        """Mean loss of predicted ages ``(B,)`` against true ages ``(B,)`` or ``(B, 1)``."""
        target = batch_targets(target).to(predicted.dtype)
        if self.kind == "l1":
            return F.l1_loss(predicted, target)
        return F.smooth_l1_loss(predicted, target, beta=self.beta)
