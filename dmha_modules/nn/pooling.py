"""Attention poolings over time: sequences ``(B, T, D)`` to vectors ``(B, D')``.

``AttentionPooling``, ``MHAPooling`` and ``DoubleMHAPooling`` follow
``docs/original-model.md`` ("Poolings"). Padded steps get zero attention;
scores are computed directly with einsum rather than through the original's
``(B*T, H, H)`` product and diagonal. Each pooling can also return its
attention weights, for plots.
"""

import math

import torch

from dmha_modules.nn.masks import frame_mask


def learned_vector(*shape):
    """A parameter of ``shape`` with Xavier-normal initialisation, as the original's vectors."""
    return torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(*shape)))


def masked_softmax(scores, lengths, dim=1):
    """Softmax of ``scores`` ``(B, T, ...)`` over time, padded steps weighted zero."""
    if lengths is not None:
        valid = frame_mask(lengths, scores.shape[1])
        valid = valid.view(valid.shape + (1,) * (scores.dim() - 2))
        scores = scores.masked_fill(~valid, float("-inf"))
    return torch.softmax(scores, dim=dim)


class AttentionPooling(torch.nn.Module):
    """Single-vector attention: ``a = softmax_t(h w)``, output ``sum_t a_t h_t``.

    Arguments
    ---------
    input_size : int
        Size ``D`` of each step.

    Example
    -------
    >>> pooling = AttentionPooling(6)
    >>> pooled, weights = pooling(torch.rand(2, 5, 6), torch.tensor([1.0, 0.6]), return_weights=True)
    >>> pooled.shape, weights.shape
    (torch.Size([2, 6]), torch.Size([2, 5]))
    >>> weights[1, 3:].sum().item()
    0.0
    """

    def __init__(self, input_size):
        super().__init__()
        self.attention = learned_vector(1, input_size)
        self.output_size = input_size

    def forward(self, x, lengths=None, return_weights=False):
        """Pools ``x`` ``(B, T, D)`` into ``(B, D)``; weights ``(B, T)`` if asked."""
        weights = masked_softmax(x @ self.attention[0], lengths)
        pooled = torch.einsum("bt,btd->bd", weights, x)
        return (pooled, weights) if return_weights else pooled


class MHAPooling(torch.nn.Module):
    """Multi-head attention pooling with one learned query per head.

    ``D`` is split into ``heads`` slices of size ``d``; head ``j`` scores step
    ``t`` by ``<h_tj, q_j> / sqrt(heads)`` (the original scales by the square
    root of the number of heads, not of the head size), normalises over time
    and pools its slice. Output: the heads' contexts concatenated, ``(B, D)``.

    Arguments
    ---------
    input_size : int
        Size ``D`` of each step; a multiple of ``heads``.
    heads : int
        Number of heads.

    Example
    -------
    >>> pooling = MHAPooling(8, heads=4)
    >>> pooled, weights = pooling(torch.rand(2, 5, 8), return_weights=True)
    >>> pooled.shape, weights.shape
    (torch.Size([2, 8]), torch.Size([2, 5, 4]))
    """

    def __init__(self, input_size, heads):
        super().__init__()
        if input_size % heads:
            raise ValueError(
                f"input_size {input_size} is not a multiple of heads {heads}"
            )
        self.heads = heads
        self.head_size = input_size // heads
        self.queries = learned_vector(heads, self.head_size)
        self.output_size = input_size

    def head_contexts(self, x, lengths=None):
        """Per-head contexts ``(B, H, d)`` and time weights ``(B, T, H)`` of ``x`` ``(B, T, D)``."""
        batch, time, _ = x.shape
        x = x.reshape(batch, time, self.heads, self.head_size)
        scores = torch.einsum("bthd,hd->bth", x, self.queries) / math.sqrt(self.heads)
        weights = masked_softmax(scores, lengths)
        return torch.einsum("bth,bthd->bhd", weights, x), weights

    def head_stds(self, x, weights, contexts, variance_floor):
        """Per-head attentive standard deviations ``(B, H, d)`` around ``contexts``.

        ``weights`` ``(B, T, H)`` and ``contexts`` ``(B, H, d)`` are those of
        :meth:`head_contexts`; variances below ``variance_floor`` are raised to it.
        """
        batch, time, _ = x.shape
        deviations = x.reshape(batch, time, self.heads, self.head_size) - contexts.unsqueeze(1)
        variances = torch.einsum("bth,bthd->bhd", weights, deviations.square())
        return variances.clamp(min=variance_floor).sqrt()

    def forward(self, x, lengths=None, return_weights=False):
        """Pools ``x`` ``(B, T, D)`` into ``(B, D)``; weights ``(B, T, H)`` if asked."""
        contexts, weights = self.head_contexts(x, lengths)
        pooled = contexts.flatten(1)
        return (pooled, weights) if return_weights else pooled


class DoubleMHAPooling(torch.nn.Module):
    """Double multi-head attention: MHA pooling, then attention over its heads.

    The ``H`` head contexts ``c_j`` (size ``d = D / H``) are weighted by
    ``b = softmax_j <c_j, u>`` and summed: output ``(B, d)``. With ``with_std``
    (not in the paper) each head also pools its attentive standard deviation
    ``s_j = sqrt(sum_t a_tj (h_tj - c_j)^2)``, weighted by the same ``b``, and
    the output is ``[sum_j b_j c_j, sum_j b_j s_j]``, ``(B, 2 d)``: the second-
    order statistics that x-vector and ECAPA-TDNN poolings keep. In training each
    head is dropped (score set to -inf) with probability ``mask_prob``, on any
    device. A row whose heads are all dropped keeps them all, so the output is
    never NaN. (The original drew ``randint(0, int(1 / p))`` and dropped zeros,
    so its 0.3 dropped a third of the heads: pass 1/3 to reproduce it.)

    Arguments
    ---------
    input_size : int
        Size ``D`` of each step; a multiple of ``heads``.
    heads : int
        Number of heads.
    mask_prob : float
        Probability of dropping each head in training.
    with_std : bool
        Also pool each head's attentive standard deviation (output ``2 D / H``).

    Example
    -------
    >>> pooling = DoubleMHAPooling(8, heads=4, mask_prob=0.3)
    >>> pooled, (time_weights, head_weights) = pooling(torch.rand(2, 5, 8), return_weights=True)
    >>> pooled.shape, time_weights.shape, head_weights.shape
    (torch.Size([2, 2]), torch.Size([2, 5, 4]), torch.Size([2, 4]))
    >>> DoubleMHAPooling(8, heads=4, with_std=True)(torch.rand(2, 5, 8)).shape
    torch.Size([2, 4])
    """

    # Keeps sqrt's gradient finite on constant frames (padding-only heads, silence).
    VARIANCE_FLOOR = 1e-5

    def __init__(self, input_size, heads, mask_prob=0.3, with_std=False):
        super().__init__()
        self.mha = MHAPooling(input_size, heads)
        self.head_attention = learned_vector(1, self.mha.head_size)
        self.mask_prob = mask_prob
        self.with_std = with_std
        self.output_size = self.mha.head_size * (2 if with_std else 1)

    def forward(self, x, lengths=None, return_weights=False):
        """Pools ``x`` ``(B, T, D)`` into ``(B, P)``; weights ``((B, T, H), (B, H))`` if asked."""
        contexts, time_weights = self.mha.head_contexts(x, lengths)
        scores = contexts @ self.head_attention[0]
        if self.training and self.mask_prob > 0:
            dropped = torch.rand(scores.shape, device=scores.device) < self.mask_prob
            dropped &= ~dropped.all(dim=1, keepdim=True)
            scores = scores.masked_fill(dropped, float("-inf"))
        head_weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bh,bhd->bd", head_weights, contexts)
        if self.with_std:
            stds = self.mha.head_stds(x, time_weights, contexts, self.VARIANCE_FLOOR)
            pooled = torch.cat([pooled, torch.einsum("bh,bhd->bd", head_weights, stds)], dim=1)
        return (pooled, (time_weights, head_weights)) if return_weights else pooled
