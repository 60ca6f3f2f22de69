"""The embedding models: front-end, attention pooling and the 400-d embedding block
(the original's), and Double MHA pooling on ECAPA-TDNN's frame layers."""

import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, BatchNorm1d, Conv1d

from dmha_modules.front_ends import VGG3L, VGG4L, ResNet
from dmha_modules.masks import frame_mask
from dmha_modules.pooling import AttentionPooling, DoubleMHAPooling, MHAPooling

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


class ECAPADoubleMHA(ECAPA_TDNN):
    """ECAPA-TDNN's frame layers with Double Multi-Head Attention pooling.

    SpeechBrain's ``ECAPA_TDNN`` with its attentive statistics pooling (output
    ``2 C``) replaced by :class:`~dmha_modules.pooling.DoubleMHAPooling` over
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
        (output ``2 C / heads``; see :class:`~dmha_modules.pooling.DoubleMHAPooling`).

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
