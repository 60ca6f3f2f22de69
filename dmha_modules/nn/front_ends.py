"""Convolutional front-ends: log-mel frames ``(B, T, F)`` to sequences ``(B, T', D)``.

Each front-end tells its output size (``output_size``) and how input lengths map
to output lengths (``output_lengths``). Padded frames are zeroed after every
layer whose receptive field could carry them into valid frames, so an utterance
gives the same output alone or padded in a batch (eval mode).

Convolutions run channels-last: oneDNN's direct convolution in that layout is
markedly faster on CPU than the default one (``bench/speed.py``).
"""

import torch
import torch.nn.functional as F

from dmha_modules.nn.masks import mask_time, relative_to_steps


class ConvFrontEnd(torch.nn.Module):
    """Base of the front-ends: length bookkeeping and padding masks.

    Subclasses set ``output_size``, ``time_stride`` (input frames per output
    step) and ``context_frames`` (how far, in input frames, the receptive field
    of an output step reaches on either side), implement ``output_steps``
    (valid input steps to valid output steps) and ``encode`` (a 4-D
    channels-last batch ``(B, 1, T, F)`` to the flattened sequence ``(B, T', D)``).

    In eval mode, inputs longer than ``chunk_frames`` are encoded a chunk at a
    time, each with ``context_frames`` of context on both sides, and only the
    chunk's own outputs kept: the result is the one-pass one, and an hour of
    audio needs memory for its output sequence, not for its activations. Set
    ``chunk_frames = None`` to always encode in one pass (for ONNX export).

    Example
    -------
    >>> front_end = VGG4L(channels=16)  # halves time four times, ceil
    >>> front_end.output_steps(40), front_end.output_steps(20)
    (3, 2)
    >>> front_end.output_lengths(torch.tensor([1.0, 0.5]), 40)
    tensor([1.0000, 0.6667])
    """

    output_size = None
    time_stride = None
    context_frames = None
    chunk_frames = 3000

    def output_steps(self, steps):
        """Number of output steps for ``steps`` input frames (int or tensor)."""
        raise NotImplementedError

    def output_lengths(self, lengths, num_frames):
        """Relative output lengths for relative input ``lengths`` of a ``num_frames`` batch."""
        steps = self.output_steps(relative_to_steps(lengths, num_frames))
        return steps.float() / self.output_steps(num_frames)

    def forward(self, x, lengths=None):
        """Encodes features ``(B, T, F)`` with relative ``lengths`` into ``(B, T', output_size)``."""
        steps = None
        if lengths is not None and bool((lengths < 1).any()):
            steps = relative_to_steps(lengths, x.shape[1])
        if (
            self.training
            or self.chunk_frames is None
            or x.shape[1] <= self.chunk_frames + 2 * self.context_frames
        ):
            return self.encode_frames(x, steps)
        return self.encode_chunked(x, steps)

    def encode_frames(self, x, steps):
        """Encodes features ``(B, T, F)`` in one pass; ``steps`` are valid frames or None."""
        x = x.unsqueeze(1).contiguous(memory_format=torch.channels_last)
        return self.encode(mask_time(x, steps), steps)

    def encode_chunked(self, x, steps):
        """Encodes features ``(B, T, F)`` a chunk of ``chunk_frames`` at a time."""
        total = x.shape[1]
        stride = self.time_stride
        # Chunks and their context start on output-step boundaries, so a
        # chunk's output steps are the one-pass ones, shifted.
        chunk = max(self.chunk_frames // stride, 1) * stride
        margin = -(-self.context_frames // stride) * stride
        total_out = self.output_steps(total)
        outputs = []
        for begin in range(0, total, chunk):
            start, end = max(0, begin - margin), min(total, begin + chunk + margin)
            local_steps = None if steps is None else (steps - start).clamp(0, end - start)
            encoded = self.encode_frames(x[:, start:end], local_steps)
            first = (begin - start) // stride
            count = min(chunk // stride, total_out - begin // stride)
            outputs.append(encoded[:, first : first + count])
        return torch.cat(outputs, dim=1)

    def encode(self, x, steps):
        """Encodes a channels-last batch ``(B, 1, T, F)``; ``steps`` are valid frames or None."""
        raise NotImplementedError


class VGGBlock(torch.nn.Module):
    """Two 3x3 convolutions with ReLU, then 2x2 max-pooling (ceil mode).

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels of both convolutions.
    batch_norm : bool
        BatchNorm between each convolution and its ReLU (not in the original;
        see ``VGG``).

    Example
    -------
    >>> block = VGGBlock(1, 8)
    >>> block(torch.rand(2, 1, 7, 80), None).shape
    torch.Size([2, 8, 4, 40])
    >>> len(VGGBlock(1, 8, batch_norm=True).norms)
    2
    """

    def __init__(self, in_channels, out_channels, batch_norm=False):
        super().__init__()
        # A bias before BatchNorm would be cancelled by its mean.
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        # He initialisation: with PyTorch's default one, which the original
        # kept, the scale of the activations drops ~180x through the eight
        # unnormalised layers of VGG4L and training barely moves on CPU budgets.
        for conv in (self.conv1, self.conv2):
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                torch.nn.init.zeros_(conv.bias)
        self.norms = torch.nn.ModuleList(
            torch.nn.BatchNorm2d(out_channels) for _ in range(2 if batch_norm else 0)
        )

    def forward(self, x, steps):
        """Applies the block to ``(B, C, T, F)``; ``steps`` are the valid frames or None."""
        for index, conv in enumerate((self.conv1, self.conv2)):
            x = conv(x)
            if self.norms:
                x = self.norms[index](x)
            x = mask_time(torch.relu(x), steps)
        # Padded steps are zero and valid ones non-negative, so pooling keeps
        # padding at zero: no mask needed after it.
        return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class VGG(ConvFrontEnd):
    """VGG front-end of the original code with ``n_blocks`` blocks.

    Channels double per block and reach ``channels`` in the last one; time
    and frequency are halved per block (ceil). The output flattens channels and
    frequency bins per time step, channel-major as in the original:
    ``(B, ceil(T / 2**n_blocks), channels * ceil(input_size / 2**n_blocks))``.

    Arguments
    ---------
    channels : int
        Channels of the last block (the paper's ``k``).
    n_blocks : int
        Number of blocks.
    input_size : int
        Number of input features per frame.
    batch_norm : bool
        BatchNorm after every convolution. The original has none, and its
        eight unnormalised convolutions train slowly on small budgets
        (``bench/tune.py``); the project's YAMLs turn it on, imports of the
        original's checkpoints keep it off.

    Example
    -------
    >>> front_end = VGG(channels=32, n_blocks=2)
    >>> front_end(torch.rand(2, 9, 80)).shape
    torch.Size([2, 3, 640])
    >>> front_end.output_size
    640
    """

    def __init__(self, channels=1024, n_blocks=4, input_size=80, batch_norm=False):
        super().__init__()
        widths = [channels // 2 ** (n_blocks - 1 - i) for i in range(n_blocks)]
        self.blocks = torch.nn.ModuleList(
            VGGBlock(c_in, c_out, batch_norm)
            for c_in, c_out in zip([1] + widths[:-1], widths)
        )
        self.n_blocks = n_blocks
        self.output_size = channels * self.output_steps(input_size)
        self.time_stride = 2**n_blocks
        # Per block at scale s: two 3x3 convs reach 2 s, the 2x2 pooling s.
        self.context_frames = 3 * (2**n_blocks - 1)
        self.to(memory_format=torch.channels_last)

    def output_steps(self, steps):
        """Number of output steps for ``steps`` input frames (int or tensor)."""
        for _ in range(self.n_blocks):
            steps = (steps + 1) // 2
        return steps

    def encode(self, x, steps):
        """Encodes a channels-last batch ``(B, 1, T, F)``; ``steps`` are valid frames or None."""
        for block in self.blocks:
            x = block(x, steps)
            if steps is not None:
                steps = (steps + 1) // 2
        batch, channels, time, freq = x.shape
        return x.permute(0, 2, 1, 3).reshape(batch, time, channels * freq)


class VGG3L(VGG):
    """Three-block VGG front-end: channels k/4, k/2, k; output ``(B, ceil(T/8), 10 k)``.

    Arguments
    ---------
    channels : int
        Channels of the last block (``k``).
    input_size : int
        Number of input features per frame.
    batch_norm : bool
        BatchNorm after every convolution (see ``VGG``).

    Example
    -------
    >>> front_end = VGG3L(channels=16)
    >>> front_end(torch.rand(1, 20, 80)).shape
    torch.Size([1, 3, 160])
    """

    def __init__(self, channels=1024, input_size=80, batch_norm=False):
        super().__init__(
            channels=channels, n_blocks=3, input_size=input_size, batch_norm=batch_norm
        )


class VGG4L(VGG):
    """Four-block VGG front-end: channels k/8 .. k; output ``(B, ceil(T/16), 5 k)``.

    Arguments
    ---------
    channels : int
        Channels of the last block (``k``; the paper's best model uses 1024).
    input_size : int
        Number of input features per frame.
    batch_norm : bool
        BatchNorm after every convolution (see ``VGG``).

    Example
    -------
    >>> front_end = VGG4L(channels=16)
    >>> front_end(torch.rand(1, 20, 80)).shape
    torch.Size([1, 2, 80])
    """

    def __init__(self, channels=1024, input_size=80, batch_norm=False):
        super().__init__(
            channels=channels, n_blocks=4, input_size=input_size, batch_norm=batch_norm
        )


class BasicBlock(torch.nn.Module):
    """ResNet basic block: two 3x3 conv + BN, identity or 1x1 conv + BN shortcut.

    Arguments
    ---------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels; a projection shortcut is used when they differ.

    Example
    -------
    >>> block = BasicBlock(4, 8)
    >>> block(torch.rand(2, 4, 5, 6), None).shape
    torch.Size([2, 8, 5, 6])
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(
            in_channels, out_channels, 3, padding=1, bias=False
        )
        self.bn1 = torch.nn.BatchNorm2d(out_channels)
        self.conv2 = torch.nn.Conv2d(
            out_channels, out_channels, 3, padding=1, bias=False
        )
        self.bn2 = torch.nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, bias=False),
                torch.nn.BatchNorm2d(out_channels),
            )

    def forward(self, x, steps):
        """Applies the block to ``(B, C, T, F)``; ``steps`` are the valid frames or None."""
        residual = x if self.shortcut is None else self.shortcut(x)
        out = mask_time(torch.relu(self.bn1(self.conv1(x))), steps)
        out = self.bn2(self.conv2(out))
        return mask_time(torch.relu(out + residual), steps)


class ResNet(ConvFrontEnd):
    """ResNet front-end of the age variant, keeping the time axis.

    A 3x3 conv (no bias) + BN + ReLU + 3x3 max-pool with stride 2, then three
    stages of ``blocks_per_stage`` basic blocks with channels k/8, k/4, k/2
    (stride 1). The original averaged over time and frequency, leaving a single
    frame; here only frequency is averaged, giving ``(B, ceil(T / 2), k / 2)``.

    Arguments
    ---------
    channels : int
        The ``k`` of the original code; the output size is ``k / 2``.
    input_size : int
        Number of input features per frame (kept for a uniform interface;
        frequency is averaged out).
    blocks_per_stage : int
        Basic blocks per stage.

    Example
    -------
    >>> front_end = ResNet(channels=32)
    >>> front_end(torch.rand(2, 9, 80)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, channels=1024, input_size=80, blocks_per_stage=2):
        super().__init__()
        widths = [channels // 8, channels // 4, channels // 2]
        self.conv = torch.nn.Conv2d(1, widths[0], 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(widths[0])
        self.stages = torch.nn.ModuleList()
        for c_in, c_out in zip(widths[:1] + widths[:-1], widths):
            blocks = [BasicBlock(c_in, c_out)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(blocks_per_stage - 1)]
            self.stages.append(torch.nn.ModuleList(blocks))
        self.output_size = widths[-1]
        self.time_stride = 2
        # The stem conv and pooling reach 1 frame each; every basic block's two
        # convs reach 2 steps of 2 frames after the pooling.
        self.context_frames = 2 + 4 * 3 * blocks_per_stage
        self.to(memory_format=torch.channels_last)

    def output_steps(self, steps):
        """Number of output steps for ``steps`` input frames (int or tensor)."""
        return (steps + 1) // 2

    def encode(self, x, steps):
        """Encodes a channels-last batch ``(B, 1, T, F)``; ``steps`` are valid frames or None."""
        x = mask_time(torch.relu(self.bn(self.conv(x))), steps)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        if steps is not None:
            steps = self.output_steps(steps)
        # The pooling window straddles the end of an utterance: mask again.
        x = mask_time(x, steps)
        for stage in self.stages:
            for block in stage:
                x = block(x, steps)
        return x.mean(dim=3).transpose(1, 2)
