"""The embedding models: front-end, attention pooling and the 400-d embedding block
(the original's), ECAPA-TDNN exact on padded batches, and Double MHA pooling on
ECAPA-TDNN's frame layers."""

import torch
from speechbrain.lobes.models.ECAPA_TDNN import (
    ECAPA_TDNN,
    BatchNorm1d,
    Conv1d,
    SERes2NetBlock,
)

from dmha_modules.nn.front_ends import VGG3L, VGG4L, ResNet
from dmha_modules.nn.masks import frame_mask, relative_to_steps
from dmha_modules.nn.pooling import AttentionPooling, DoubleMHAPooling, MHAPooling

FRONT_ENDS = {"VGG3L": VGG3L, "VGG4L": VGG4L, "ResNet": ResNet}


def time_average(x, lengths=None):
    """Mean of ``x`` ``(B, T, D)`` over the steps within relative ``lengths``: ``(B, 1, D)``.

    Example
    -------
    >>> time_average(torch.tensor([[[1.0], [3.0], [0.0]]]), torch.tensor([2 / 3]))
    tensor([[[2.]]])
    """
    if lengths is None:
        return x.mean(dim=1, keepdim=True)
    mask = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)


class EmbeddingModel(torch.nn.Module):
    """Speaker (or age) embedding model of the original code, SpeechBrain-style.

    ``c = pooling(front_end(feats))``, ``e1 = ReLU(Linear(c))``,
    ``e2 = BN(ReLU(Linear(e1)))``; the embedding is ``e2``. In training,
    dropout (``dropout``; the age variant used 0.5) follows e1 and e2.

    Every size is a constructor argument, so a YAML file can build each row of
    the paper's table (e.g. ``front_end="VGG4L", channels=1024,
    pooling="DoubleMHA", heads=16``).

    With ``collapse_time`` the front-end's output is averaged over the valid
    time steps before pooling, leaving one step per utterance: the age
    variant's ``resnet`` did this (``AdaptiveAvgPool2d((1, 1))`` over time and
    frequency), so ``front_end="ResNet", collapse_time=True`` computes its
    embeddings. Attention over a single step then passes it through.

    Arguments
    ---------
    input_size : int
        Features per frame.
    front_end : str
        ``"VGG3L"``, ``"VGG4L"`` or ``"ResNet"``.
    channels : int
        Channels ``k`` of the front-end.
    pooling : str
        ``"Attention"``, ``"MHA"`` or ``"DoubleMHA"``.
    heads : int
        Attention heads (MHA and DoubleMHA).
    mask_prob : float
        Head-drop probability of DoubleMHA in training.
    emb_dim : int
        Embedding size.
    dropout : float
        Dropout after e1 and e2 in training.
    collapse_time : bool
        Average the front-end's output over time (one step per utterance).
    batch_norm : bool
        BatchNorm after every convolution of a VGG front-end (not in the
        original; the ResNet always has it).

    Example
    -------
    >>> model = EmbeddingModel(front_end="VGG3L", channels=16, heads=4, emb_dim=32)
    >>> model.eval()(torch.rand(3, 50, 80), torch.tensor([1.0, 0.8, 0.5])).shape
    torch.Size([3, 1, 32])
    >>> model = EmbeddingModel(front_end="ResNet", channels=16, heads=4, collapse_time=True)
    >>> _, (time_weights, _) = model.eval()(torch.rand(3, 50, 80), return_weights=True)
    >>> time_weights.shape  # one step per utterance
    torch.Size([3, 1, 4])
    """

    def __init__(
        self,
        input_size=80,
        front_end="VGG4L",
        channels=1024,
        pooling="DoubleMHA",
        heads=16,
        mask_prob=0.3,
        emb_dim=400,
        dropout=0.0,
        collapse_time=False,
        batch_norm=False,
    ):
        super().__init__()
        if front_end not in FRONT_ENDS:
            raise ValueError(
                f"Unknown front_end {front_end!r}; expected one of {list(FRONT_ENDS)}"
            )
        options = {} if front_end == "ResNet" else {"batch_norm": batch_norm}
        self.front_end = FRONT_ENDS[front_end](
            channels=channels, input_size=input_size, **options
        )
        size = self.front_end.output_size
        if pooling == "Attention":
            self.pooling = AttentionPooling(size)
        elif pooling == "MHA":
            self.pooling = MHAPooling(size, heads)
        elif pooling == "DoubleMHA":
            self.pooling = DoubleMHAPooling(size, heads, mask_prob)
        else:
            raise ValueError(
                f"Unknown pooling {pooling!r}; expected Attention, MHA or DoubleMHA"
            )
        self.fc1 = torch.nn.Linear(self.pooling.output_size, emb_dim)
        self.fc2 = torch.nn.Linear(emb_dim, emb_dim)
        self.norm = torch.nn.BatchNorm1d(emb_dim)
        self.dropout = torch.nn.Dropout(dropout)
        self.collapse_time = collapse_time

    def forward(self, feats, lengths=None, return_weights=False):
        """Embeds features.

        Arguments
        ---------
        feats : torch.Tensor
            Features ``(B, T, input_size)``, padded frames zero.
        lengths : torch.Tensor, optional
            Relative lengths ``(B,)`` in frames.
        return_weights : bool
            Also return the pooling's attention weights (for plots).

        Returns
        -------
        torch.Tensor
            Embeddings ``(B, 1, emb_dim)`` (and the weights, if asked).
        """
        encoded = self.front_end(feats, lengths)
        if lengths is not None:
            lengths = self.front_end.output_lengths(lengths, feats.shape[1])
        if self.collapse_time:
            encoded, lengths = time_average(encoded, lengths), None
        pooled = self.pooling(encoded, lengths, return_weights=return_weights)
        if return_weights:
            pooled, weights = pooled
        e1 = self.dropout(torch.relu(self.fc1(pooled)))
        e2 = self.dropout(self.norm(torch.relu(self.fc2(e1))))
        embeddings = e2.unsqueeze(1)
        return (embeddings, weights) if return_weights else embeddings


def reflection_indices(steps, length, pad):
    """Time indices ``(B, length + 2 pad)`` that pad each sequence by reflection at its own ends.

    Index ``t`` of a sequence of ``steps[b]`` valid steps reads step ``|t - pad|``
    reflected at its last valid step, as ``F.pad(mode="reflect")`` pads a
    sequence alone; indices a valid output never reads are clamped into range.

    Example
    -------
    >>> reflection_indices(torch.tensor([4, 3]), 4, 2)
    tensor([[2, 1, 0, 1, 2, 3, 2, 1],
            [2, 1, 0, 1, 2, 1, 0, 0]])
    """
    index = torch.arange(-pad, length + pad, device=steps.device).abs().unsqueeze(0)
    last = (steps - 1).unsqueeze(1)
    return torch.where(index > last, 2 * last - index, index).clamp(0, length - 1)


def same_conv(conv, x, steps):
    """SpeechBrain's "same" ``Conv1d`` on ``(B, C, T)``, each sequence reflect-padded at its end.

    SpeechBrain pads the batch, so a shorter sequence's last outputs would read
    the padding; here they read the reflection of its own steps, as alone.
    ``steps`` None: SpeechBrain's own padding.
    """
    pad = conv.dilation * (conv.kernel_size - 1) // 2
    if steps is None or pad == 0:
        return conv(x)
    index = reflection_indices(steps, x.shape[-1], pad)
    return conv.conv(x.gather(2, index.unsqueeze(1).expand(-1, x.shape[1], -1)))


def tdnn_block(block, x, steps):
    """``TDNNBlock.forward`` with :func:`same_conv`."""
    return block.dropout(block.norm(block.activation(same_conv(block.conv, x, steps))))


def se_res2net_block(block, x, steps):
    """``SERes2NetBlock.forward`` with :func:`same_conv` and the exact mask of ``steps``."""
    residual = x if block.shortcut is None else block.shortcut(x)
    x = tdnn_block(block.tdnn1, x, steps)
    res2net = block.res2net_block
    outputs = []
    for i, x_i in enumerate(torch.chunk(x, res2net.scale, dim=1)):
        if i > 0:
            x_i = tdnn_block(res2net.blocks[i - 1], x_i if i == 1 else x_i + outputs[-1], steps)
        outputs.append(x_i)
    x = tdnn_block(block.tdnn2, torch.cat(outputs, dim=1), steps)
    return block.se_block(x, speechbrain_lengths(steps, x.shape[-1])) + residual


def speechbrain_lengths(steps, length):
    """Relative lengths whose SpeechBrain mask (``t < lengths * length``) holds ``steps`` steps.

    Half a step short of ``steps``, so rounding error in the product never
    adds or drops a step. None stays None.

    Example
    -------
    >>> speechbrain_lengths(torch.tensor([3]), 7) * 7
    tensor([2.5000])
    """
    return None if steps is None else (steps - 0.5) / length


class ExactECAPA(ECAPA_TDNN):
    """SpeechBrain's ECAPA-TDNN, giving each utterance of a padded batch its embedding alone.

    SpeechBrain's layers pad their "same" convolutions by reflection at the
    ends of the padded batch, so a shorter utterance's last frames read its
    padding (worst cosine 0.997 against alone on real speech), and its masks
    compare ``lengths * T`` unrounded. Here every convolution reflects each
    utterance at its own end (:func:`same_conv`, a gather instead of the
    padding copy) and the squeeze-excitation means and the pooling count
    exactly ``round(lengths * T)`` frames. Same modules and state_dict keys as
    ``ECAPA_TDNN``; on full-length batches (training crops) the same values.

    Arguments are those of SpeechBrain's ``ECAPA_TDNN``.

    Example
    -------
    >>> model = ExactECAPA(80, channels=[32, 32, 32, 32, 96], lin_neurons=16).eval()
    >>> feats = torch.randn(2, 40, 80)
    >>> batched = model(torch.cat([feats[:1], feats[1:].masked_fill(
    ...     torch.arange(40)[:, None] >= 25, 0.0)]), torch.tensor([1.0, 25 / 40]))
    >>> torch.allclose(batched[1], model(feats[1:, :25])[0], atol=1e-5)
    True
    """

    def forward(self, x, lengths=None):
        """Embeddings ``(B, 1, lin_neurons)`` of features ``(B, T, input_size)``."""
        steps = None if lengths is None else relative_to_steps(lengths, x.shape[1])
        x = x.transpose(1, 2)
        outputs = []
        for layer in self.blocks:
            if isinstance(layer, SERes2NetBlock):
                x = se_res2net_block(layer, x, steps)
            else:
                x = tdnn_block(layer, x, steps)
            outputs.append(x)
        x = tdnn_block(self.mfa, torch.cat(outputs[1:], dim=1), steps)
        x = self.asp_bn(self.pool(x, steps))
        return self.fc(x).transpose(1, 2)

    def pool(self, x, steps):
        """Attentive statistics of frames ``(B, C, T)`` over their first ``steps``: ``(B, P, 1)``."""
        return self.asp(x, lengths=speechbrain_lengths(steps, x.shape[-1]))


def with_exact_padding(model):
    """``model``, made exact on padded batches when it is SpeechBrain's ``ECAPA_TDNN``.

    Model folders written before :class:`ExactECAPA` name SpeechBrain's class;
    it becomes ``ExactECAPA`` in place (same modules and weights, only the
    forward differs). Any other model is returned as it is.

    Example
    -------
    >>> type(with_exact_padding(ECAPA_TDNN(80, channels=[8, 8, 8, 8, 24]))).__name__
    'ExactECAPA'
    """
    if type(model) is ECAPA_TDNN:
        model.__class__ = ExactECAPA
    return model


class ChannelsFirstPooling(torch.nn.Module):
    """A ``(B, T, D)`` pooling used on ECAPA-TDNN's channels-first frames ``(B, D, T)``.

    Arguments
    ---------
    pooling : torch.nn.Module
        Pools ``(B, T, D)`` with relative lengths into ``(B, P)``.

    Example
    -------
    >>> pool = ChannelsFirstPooling(DoubleMHAPooling(8, heads=2, mask_prob=0.0))
    >>> pool(torch.rand(3, 8, 5), lengths=torch.tensor([1.0, 0.6, 0.2])).shape
    torch.Size([3, 4, 1])
    """

    def __init__(self, pooling):
        super().__init__()
        self.pooling = pooling

    def forward(self, x, lengths=None):
        """Pools ``(B, D, T)`` into ``(B, P, 1)``, as ECAPA-TDNN's own pooling returns."""
        return self.pooling(x.transpose(1, 2), lengths).unsqueeze(-1)


class ECAPADoubleMHA(ExactECAPA):
    """ECAPA-TDNN's frame layers with Double Multi-Head Attention pooling.

    :class:`ExactECAPA` (SpeechBrain's ``ECAPA_TDNN``, exact on padded batches) with its attentive statistics pooling (output
    ``2 C``) replaced by :class:`~dmha_modules.nn.pooling.DoubleMHAPooling` over
    the ``C = channels[-1]`` channels of its multi-layer aggregation (output
    ``C / heads``), then ECAPA's BatchNorm and linear layer to ``lin_neurons``:
    the paper's pooling on a current frame-level network.

    Arguments
    ---------
    input_size : int
        Features per frame.
    channels : list of int
        ECAPA-TDNN's channels (the last one: the aggregated frames' size).
    lin_neurons : int
        Embedding size.
    heads : int
        Attention heads; ``channels[-1]`` must be a multiple of it.
    mask_prob : float
        Head-drop probability in training.
    with_std : bool
        The pooling also keeps each head's attentive standard deviation
        (output ``2 C / heads``; see :class:`~dmha_modules.nn.pooling.DoubleMHAPooling`).

    Example
    -------
    >>> model = ECAPADoubleMHA(channels=[32, 32, 32, 32, 96], lin_neurons=16, heads=4)
    >>> model.eval()(torch.rand(2, 50, 80), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 16])
    """

    def __init__(self, input_size=80, channels=(512, 512, 512, 512, 1536), lin_neurons=192,
                 heads=4, mask_prob=0.0, with_std=False):
        super().__init__(input_size, channels=list(channels), lin_neurons=lin_neurons)
        pooling = DoubleMHAPooling(channels[-1], heads, mask_prob, with_std)
        self.asp = ChannelsFirstPooling(pooling)
        self.asp_bn = BatchNorm1d(input_size=pooling.output_size)
        self.fc = Conv1d(in_channels=pooling.output_size, out_channels=lin_neurons, kernel_size=1)

    def pool(self, x, steps):
        """Double MHA pooling of frames ``(B, C, T)`` over their first ``steps``: ``(B, P, 1)``."""
        return self.asp(x, None if steps is None else steps / x.shape[-1])
