"""A CPU training step end to end: features, model, AM-Softmax, backward, Adam."""

import torch

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.nn.heads import Classifier
from dmha_modules.nn.losses import AMSoftmaxLoss
from dmha_modules.nn.models import EmbeddingModel


def training_step(mask_prob):
    torch.manual_seed(0)
    compute_features, norm = LogMelFeatures(16000), UtteranceNorm()
    model = EmbeddingModel(
        front_end="VGG4L",
        channels=32,
        pooling="DoubleMHA",
        heads=4,
        mask_prob=mask_prob,
    ).train()
    classifier = Classifier(input_size=400, n_classes=3)
    loss_fn = AMSoftmaxLoss(margin=0.4, scale=30.0)
    params = list(model.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-3)
    before = [p.detach().clone() for p in params]

    wavs = torch.randn(4, 24000) * 0.1
    lengths = torch.tensor([1.0, 0.9, 0.7, 0.5])
    frame_lengths = compute_features.frame_lengths(lengths, wavs.shape[1])
    feats = norm(compute_features(wavs, lengths), frame_lengths)
    embeddings = model(feats, frame_lengths)
    loss = loss_fn(classifier(embeddings), torch.tensor([0, 1, 2, 0]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(embeddings).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in params)
    changed = [not torch.equal(b, p) for b, p in zip(before, params)]
    return changed


def test_training_step_with_head_dropout_updates_every_parameter():
    assert all(training_step(mask_prob=0.3))


def test_training_step_with_every_head_dropped_is_finite():
    assert all(training_step(mask_prob=1.0))
