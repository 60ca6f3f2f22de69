"""Poolings against loop-over-heads implementations of docs/original-model.md's formulas."""

import math

import pytest
import torch

from dmha_modules.nn.pooling import AttentionPooling, DoubleMHAPooling, MHAPooling

D, H = 24, 4  # head size 6: sqrt(H) = 2 differs from sqrt(d), so the scale is checked
STEPS = [7, 4, 1]  # valid steps of each utterance in a batch padded to 7


def padded_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(STEPS), max(STEPS), D, generator=gen) * 2
    lengths = torch.tensor(STEPS) / max(STEPS)
    return x, lengths


def softmax(scores):
    """Softmax of a 1-D list of scores, written out."""
    exps = torch.exp(scores - scores.max())
    return exps / exps.sum()


def reference_attention(h, w):
    """Attention: a = softmax_t(h w); c = sum_t a_t h_t, for one utterance h (T, D)."""
    a = softmax(torch.stack([h[t] @ w for t in range(len(h))]))
    return sum(a[t] * h[t] for t in range(len(h)))


def reference_head_contexts(h, queries):
    """MHA: per head j, s_t = <h_tj, q_j> / sqrt(H), softmax over t, c_j = sum_t a_t h_tj."""
    heads, d = queries.shape
    contexts = []
    for j in range(heads):
        slice_j = h[:, j * d : (j + 1) * d]
        scores = torch.stack(
            [slice_j[t] @ queries[j] for t in range(len(h))]
        ) / math.sqrt(heads)
        a = softmax(scores)
        contexts.append(sum(a[t] * slice_j[t] for t in range(len(h))))
    return contexts


def reference_double_mha(h, queries, u, kept=None):
    """DoubleMHA: b = softmax_j <c_j, u> over the kept heads; output sum_j b_j c_j."""
    contexts = reference_head_contexts(h, queries)
    kept = range(len(contexts)) if kept is None else kept
    b = softmax(torch.stack([contexts[j] @ u for j in kept]))
    return sum(b_j * contexts[j] for b_j, j in zip(b, kept))


def test_attention_matches_reference():
    x, lengths = padded_batch()
    pooling = AttentionPooling(D)
    out = pooling(x, lengths)
    for b, n in enumerate(STEPS):
        expected = reference_attention(x[b, :n], pooling.attention[0])
        assert (out[b] - expected).abs().max() <= 1e-5


def test_mha_matches_reference():
    x, lengths = padded_batch()
    pooling = MHAPooling(D, heads=H)
    out = pooling(x, lengths)
    assert out.shape == (len(STEPS), D)
    for b, n in enumerate(STEPS):
        expected = torch.cat(reference_head_contexts(x[b, :n], pooling.queries))
        assert (out[b] - expected).abs().max() <= 1e-5


def test_double_mha_matches_reference():
    x, lengths = padded_batch()
    pooling = DoubleMHAPooling(D, heads=H, mask_prob=0.3).eval()
    out = pooling(x, lengths)
    assert out.shape == (len(STEPS), D // H)
    for b, n in enumerate(STEPS):
        expected = reference_double_mha(
            x[b, :n], pooling.mha.queries, pooling.head_attention[0]
        )
        assert (out[b] - expected).abs().max() <= 1e-5


def reference_double_mha_with_std(h, queries, u, variance_floor):
    """DoubleMHA with per-head attentive stds s_j = sqrt(sum_t a_tj (h_tj - c_j)^2), elementwise,
    variances floored; output [sum_j b_j c_j, sum_j b_j s_j], b as without stds."""
    heads, d = queries.shape
    contexts, stds = [], []
    for j in range(heads):
        slice_j = h[:, j * d : (j + 1) * d]
        scores = torch.stack([slice_j[t] @ queries[j] for t in range(len(h))])
        a = softmax(scores / math.sqrt(heads))
        c = sum(a[t] * slice_j[t] for t in range(len(h)))
        variance = sum(a[t] * (slice_j[t] - c) ** 2 for t in range(len(h)))
        contexts.append(c)
        stds.append(torch.clamp(variance, min=variance_floor).sqrt())
    b = softmax(torch.stack([c @ u for c in contexts]))
    return torch.cat([sum(b[j] * contexts[j] for j in range(heads)),
                      sum(b[j] * stds[j] for j in range(heads))])


def test_double_mha_with_std_matches_reference():
    x, lengths = padded_batch()
    pooling = DoubleMHAPooling(D, heads=H, mask_prob=0.3, with_std=True).eval()
    out = pooling(x, lengths)
    assert out.shape == (len(STEPS), 2 * D // H)
    for b, n in enumerate(STEPS):
        expected = reference_double_mha_with_std(
            x[b, :n], pooling.mha.queries, pooling.head_attention[0], 1e-5
        )
        assert (out[b] - expected).abs().max() <= 1e-5
    # The one-step utterance has no spread: its stds are the floor's root.
    torch.testing.assert_close(out[2, D // H:], torch.full((D // H,), 1e-5 ** 0.5))


def test_double_mha_with_std_has_finite_gradients_on_constant_frames():
    x = torch.ones(2, 6, D, requires_grad=True)
    DoubleMHAPooling(D, heads=H, with_std=True)(x, torch.tensor([1.0, 0.5])).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_head_dropout_drops_the_given_fraction_and_attends_over_the_rest():
    torch.manual_seed(0)
    x = torch.randn(2000, 5, D)
    pooling = DoubleMHAPooling(D, heads=H, mask_prob=0.25).train()
    out, (_, head_weights) = pooling(x, return_weights=True)
    dropped = head_weights == 0
    # Rows where all heads were drawn are kept whole, so slightly fewer than 25 %.
    assert 0.22 <= dropped.float().mean() <= 0.26
    for b in range(20):
        kept = [j for j in range(H) if not dropped[b, j]]
        expected = reference_double_mha(
            x[b], pooling.mha.queries, pooling.head_attention[0], kept
        )
        assert (out[b] - expected).abs().max() <= 1e-5


def test_every_head_dropped_stays_finite():
    x, lengths = padded_batch()
    pooling = DoubleMHAPooling(D, heads=H, mask_prob=1.0)
    out = pooling.train()(x, lengths)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, pooling.eval()(x, lengths))


@pytest.mark.parametrize(
    "pooling",
    [AttentionPooling(D), MHAPooling(D, H), DoubleMHAPooling(D, H),
     DoubleMHAPooling(D, H, with_std=True)],
)
def test_padded_steps_get_no_attention(pooling):
    x, lengths = padded_batch()
    garbage = x.clone()
    for b, n in enumerate(STEPS):
        garbage[b, n:] = 1e4
    pooling.eval()
    torch.testing.assert_close(pooling(garbage, lengths), pooling(x, lengths))
