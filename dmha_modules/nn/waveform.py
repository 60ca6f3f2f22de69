"""Embedding models that take waveforms: exact padded batches through SpeechBrain's own API.

SpeechBrain's ``EncoderClassifier.encode_batch(wavs, wav_lens)`` runs
``compute_features(wavs)``, then ``mean_var_norm(feats, wav_lens)`` and
``embedding_model(feats, wav_lens)`` with the same relative lengths: those of
the waveforms. The normalisation and the embedding model count frames, and a
waveform's relative length is not its relative length in frames (the last
window ends before the waveform does), so padded utterances' embeddings
shifted: worst cosine to the file alone 0.977 to 0.9995 on real speech,
depending on the model.

A model folder therefore gives SpeechBrain a ``PassThrough`` as
``compute_features`` and ``mean_var_norm`` and a :class:`WaveformEmbedding` as
``embedding_model``: it takes the waveforms and their relative lengths,
computes the features, turns the lengths into each utterance's exact frame
count (``LogMelFeatures.frame_lengths``), normalises and embeds. The feature,
normalisation and embedding modules are unchanged inside it, and the folder's
``embedding_model.ckpt`` is loaded into the embedding module itself, so the
checkpoint files are those of folders written before.
"""

import torch


class PassThrough(torch.nn.Module):
    """Returns its input unchanged: a model folder's ``compute_features`` and ``mean_var_norm``.

    Example
    -------
    >>> wavs = torch.rand(2, 16000)
    >>> PassThrough()(wavs, torch.tensor([1.0, 0.5])) is wavs
    True
    """

    def forward(self, x, lengths=None):
        """Returns ``x``."""
        return x


class WaveformEmbedding(torch.nn.Module):
    """Embeddings of padded waveforms, each utterance with its own exact frame count.

    Arguments
    ---------
    compute_features : torch.nn.Module
        ``compute_features(wavs, lengths)`` -> ``(B, frames, F)``, with
        ``frame_lengths(lengths, samples)``: relative waveform lengths to
        relative frame lengths (``LogMelFeatures``).
    mean_var_norm : torch.nn.Module
        ``mean_var_norm(feats, frame_lengths)``.
    embedding_model : torch.nn.Module
        ``embedding_model(feats, frame_lengths)`` -> ``(B, 1, E)``.

    Example
    -------
    >>> from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    >>> from dmha_modules.nn.models import EmbeddingModel
    >>> model = WaveformEmbedding(LogMelFeatures(), UtteranceNorm(),
    ...                           EmbeddingModel(channels=16, heads=4, emb_dim=32)).eval()
    >>> wavs = torch.rand(2, 16000) - 0.5
    >>> wavs[1, 9000:] = 0  # the second utterance: 9000 samples, padded
    >>> batched = model(wavs, torch.tensor([1.0, 9000 / 16000]))
    >>> batched.shape
    torch.Size([2, 1, 32])
    >>> torch.allclose(batched[1], model(wavs[1:, :9000])[0], atol=1e-5)
    True
    """

    def __init__(self, compute_features, mean_var_norm, embedding_model):
        super().__init__()
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, wavs, lengths=None):
        """Embeddings ``(B, 1, E)`` of waveforms ``(B, samples)``, relative ``lengths`` ``(B,)``."""
        if lengths is None:
            lengths = torch.ones(len(wavs), device=wavs.device)
        frame_lens = self.compute_features.frame_lengths(lengths, wavs.shape[1])
        feats = self.compute_features(wavs, lengths)
        feats = self.mean_var_norm(feats, frame_lens)
        return self.embedding_model(feats, frame_lens)


def waveform_model(modules):
    """The :class:`WaveformEmbedding` of a model's ``modules``, in either folder layout.

    Folders written before this module name the features, normalisation and
    embedding model as SpeechBrain's ``compute_features``, ``mean_var_norm``
    and ``embedding_model`` modules; those written since name a
    ``WaveformEmbedding`` holding them as ``embedding_model`` (see the module
    docstring). Either way, the result takes waveforms, and its
    ``compute_features``, ``mean_var_norm`` and ``embedding_model`` are the
    feature, normalisation and embedding modules.

    Arguments
    ---------
    modules : dict or torch.nn.ModuleDict
        ``embedding_model``, and ``compute_features`` and ``mean_var_norm``
        unless ``embedding_model`` is a ``WaveformEmbedding``.

    Returns
    -------
    WaveformEmbedding

    Example
    -------
    >>> from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    >>> features, norm, model = LogMelFeatures(), UtteranceNorm(), torch.nn.Identity()
    >>> old = waveform_model(dict(compute_features=features, mean_var_norm=norm,
    ...                           embedding_model=model))
    >>> new = WaveformEmbedding(features, norm, model)
    >>> waveform_model(dict(compute_features=PassThrough(), mean_var_norm=PassThrough(),
    ...                     embedding_model=new)) is new, old.embedding_model is model
    (True, True)
    """
    model = modules["embedding_model"]
    if isinstance(model, WaveformEmbedding):
        return model
    return WaveformEmbedding(modules["compute_features"], modules["mean_var_norm"], model)
