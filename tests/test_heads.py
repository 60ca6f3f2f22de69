"""Heads against their formulas, written out per sample."""

import pytest
import torch

from dmha_modules.nn.heads import Classifier


def test_classifier_outputs_cosines_of_the_pre_layer():
    torch.manual_seed(0)
    classifier = Classifier(input_size=6, n_classes=4, hidden_size=5)
    x = torch.randn(3, 1, 6)
    hidden = classifier.pre_layer(x[:, 0])
    out = classifier(x)
    for b in range(3):
        for c in range(4):
            w = classifier.weight[:, c]
            expected = (hidden[b] @ w) / (hidden[b].norm() * w.norm())
            assert out[b, 0, c].item() == pytest.approx(expected.item(), abs=1e-6)
    linear = Classifier(input_size=6, n_classes=4, hidden_size=5, cosine=False)
    torch.testing.assert_close(
        linear(x)[:, 0], linear.pre_layer(x[:, 0]) @ linear.weight + linear.bias
    )
