"""Classification and regression heads on top of an embedding.

- ``Classifier``: the original's ``e3 = Linear(400, 400)(e2)`` followed by a
  cosine (AM-Softmax) or linear output layer, ``(B, 1, C)`` as SpeechBrain's
  classifiers.
- ``AgeRegressionHead``: age in years, which the original did not have.

The losses that train them are in :mod:`dmha_modules.nn.losses`.
"""

import torch
import torch.nn.functional as F


class Classifier(torch.nn.Module):
    """Pre-layer ``e3 = Linear(e2)`` and a cosine or linear output layer.

    With ``cosine`` (for AM-Softmax) the output is the cosine between ``e3``
    and each class weight (Xavier-normal, as the original); otherwise plain
    logits ``e3 W + b`` (for cross-entropy and ordinal losses).

    Arguments
    ---------
    input_size : int
        Embedding size.
    n_classes : int
        Number of classes.
    hidden_size : int
        Size of the pre-layer ``e3``.
    cosine : bool
        Output cosines instead of logits.

    Example
    -------
    >>> classifier = Classifier(input_size=8, n_classes=3, hidden_size=8)
    >>> cosines = classifier(torch.rand(4, 1, 8))
    >>> cosines.shape, bool((cosines.abs() <= 1).all())
    (torch.Size([4, 1, 3]), True)
    """

    def __init__(self, input_size=400, n_classes=2, hidden_size=400, cosine=True):
        super().__init__()
        self.pre_layer = torch.nn.Linear(input_size, hidden_size)
        self.weight = torch.nn.Parameter(
            torch.nn.init.xavier_normal_(torch.empty(hidden_size, n_classes))
        )
        self.bias = None if cosine else torch.nn.Parameter(torch.zeros(n_classes))
        self.cosine = cosine

    def forward(self, embeddings):
        """Maps embeddings ``(B, 1, E)`` or ``(B, E)`` to ``(B, 1, n_classes)``."""
        hidden = self.pre_layer(embeddings.reshape(embeddings.shape[0], -1))
        if self.cosine:
            out = F.normalize(hidden, dim=1) @ F.normalize(self.weight, dim=0)
        else:
            out = hidden @ self.weight + self.bias
        return out.unsqueeze(1)


class AgeRegressionHead(torch.nn.Module):
    """Age in years from an embedding: ``mean + std * Linear(e2)``.

    ``mean`` and ``std`` (buffers) are the training ages' statistics, so the
    linear layer works on a unit scale; set them with ``set_age_stats``.

    Arguments
    ---------
    input_size : int
        Embedding size.

    Example
    -------
    >>> head = AgeRegressionHead(input_size=8)
    >>> head.set_age_stats(mean=25.0, std=10.0)
    >>> head(torch.rand(4, 1, 8)).shape
    torch.Size([4])
    """

    def __init__(self, input_size=400):
        super().__init__()
        self.linear = torch.nn.Linear(input_size, 1)
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def set_age_stats(self, mean, std):
        """Sets the training ages' mean and standard deviation (years)."""
        self.mean.fill_(float(mean))
        self.std.fill_(max(float(std), 1e-3))

    def forward(self, embeddings):
        """Ages in years ``(B,)`` from embeddings ``(B, 1, E)`` or ``(B, E)``."""
        unit = self.linear(embeddings.reshape(embeddings.shape[0], -1)).squeeze(1)
        return self.mean + self.std * unit
