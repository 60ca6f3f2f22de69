"""Class decisions from a classifier's cosines: the original code's rules (``argmax``, and
``ordinal`` for its sigmoid age models), used by ``AgeClassifier`` for imported models."""

import torch


def decide(cosines, decision):
    """Class indices from the classifier's cosines ``(..., C)``, as the original decided.

    ``"argmax"``: the class of the highest cosine. ``"ordinal"``
    (``train_ordinal.py``): ``(sigmoid(cos) > 0.5).cumprod().sum() - 1``, the
    number of leading classes above one half minus one; -1 when the first
    class is below.

    Example
    -------
    >>> cosines = torch.tensor([[0.3, 0.2, -0.1, 0.4], [-0.2, 0.5, 0.6, 0.1]])
    >>> decide(cosines, "argmax"), decide(cosines, "ordinal")
    (tensor([3, 2]), tensor([ 1, -1]))
    """
    if decision == "argmax":
        return cosines.argmax(dim=-1)
    if decision == "ordinal":
        above = torch.sigmoid(cosines) > 0.5
        return above.long().cumprod(dim=-1).sum(dim=-1) - 1
    raise ValueError(f"Unknown decision {decision!r}; expected 'argmax' or 'ordinal'")
