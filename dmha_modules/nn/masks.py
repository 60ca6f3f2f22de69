"""Masks from SpeechBrain's relative lengths and from step counts."""

import torch


def relative_to_steps(lengths, max_len):
    """Number of valid steps ``(B,)`` for relative ``lengths`` of a batch of ``max_len`` steps."""
    return torch.round(lengths * max_len).long()


def steps_mask(steps, max_len):
    """Boolean mask ``(B, max_len)``, True where ``t < steps[b]``."""
    return torch.arange(max_len, device=steps.device) < steps.unsqueeze(1)


def frame_mask(lengths, max_len):
    """Boolean mask ``(B, max_len)`` of the steps inside each relative length.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths ``(B,)`` in [0, 1].
    max_len : int
        Number of steps of the padded batch.

    Returns
    -------
    torch.Tensor
        ``mask[b, t]`` is True where ``t < round(lengths[b] * max_len)``.

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    return steps_mask(relative_to_steps(lengths, max_len), max_len)


def mask_time(x, steps):
    """Zeroes the time steps ``>= steps[b]`` of ``x`` ``(B, C, T, F)``; no-op when ``steps`` is None."""
    if steps is None:
        return x
    mask = steps_mask(steps, x.shape[2]).to(x.dtype)
    return x * mask[:, None, :, None]
