"""Embeddings of waveforms and audio files with a model's modules.

``load_utterance`` reads a file as a model takes it: checked (``AudioError``
naming the file, :func:`dmha_modules.io.audio.read_checked_audio`), channels
averaged, the rate converted to the model's, audio shorter than ``MIN_SECONDS``
repeated up to it (a warning says so). ``embed_waveforms`` runs the feature,
normalisation and embedding modules on a padded batch with each utterance's own
frame count; ``embed_files`` embeds files in bulk, in batches of similar length.
``dmha_modules.inference``'s classifiers use these, and so do model folders'
noise checks and the ONNX export.
"""

import concurrent.futures
import logging
import os

import torch
from tqdm import tqdm

from dmha_modules.io.audio import AudioError, audio_info, read_checked_audio, resample
from dmha_modules.nn.waveform import waveform_model

logger = logging.getLogger(__name__)

MIN_SECONDS = 0.25

def load_utterance(path, sample_rate, min_seconds=MIN_SECONDS):
    """Reads an audio file for a model: checked, mono, at ``sample_rate``.

    Arguments
    ---------
    path : str
        Audio file in any format libsndfile reads.
    sample_rate : int
        The model's sample rate; other rates are resampled.
    min_seconds : float
        Shorter audio is repeated up to this length (and a warning logged).

    Returns
    -------
    torch.Tensor
        The waveform ``(samples,)``, float32.

    Raises
    ------
    AudioError
        For a missing, empty, non-audio, truncated, silent or NaN-holding file.

    Example
    -------
    >>> import os, tempfile, numpy as np, soundfile
    >>> path = os.path.join(tempfile.mkdtemp(), "short.wav")
    >>> soundfile.write(path, np.full((4000, 2), 0.1), 8000)  # stereo, 0.5 s
    >>> load_utterance(path, 16000).shape
    torch.Size([8000])
    >>> soundfile.write(path, np.zeros(8000), 8000)
    >>> load_utterance(path, 16000)
    Traceback (most recent call last):
    ...
    dmha_modules.io.audio.AudioError: ...short.wav: silent (every sample is below one 16-bit step)
    """
    wav, rate = read_checked_audio(path)
    if rate != sample_rate:
        wav = resample(wav, rate, sample_rate)
    minimum = int(min_seconds * sample_rate)
    if len(wav) < minimum:
        logger.warning(
            "%s: %.3f s is shorter than %.2f s; repeated up to it",
            path, len(wav) / sample_rate, min_seconds,
        )
        wav = wav.repeat(-(-minimum // len(wav)))[:minimum]
    return wav


def embed_waveforms(modules, wavs, lengths=None):
    """Embeddings ``(B, 1, E)`` of padded waveforms, each with its exact frame count.

    Arguments
    ---------
    modules : torch.nn.ModuleDict
        ``compute_features``, ``mean_var_norm`` and ``embedding_model``, in
        either model-folder layout (:func:`dmha_modules.nn.waveform.waveform_model`).
    wavs : torch.Tensor
        Waveforms ``(B, samples)`` at the model's rate.
    lengths : torch.Tensor, optional
        Relative lengths ``(B,)``; None for all full.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    >>> from dmha_modules.nn.models import EmbeddingModel
    >>> modules = torch.nn.ModuleDict(dict(
    ...     compute_features=LogMelFeatures(), mean_var_norm=UtteranceNorm(),
    ...     embedding_model=EmbeddingModel(channels=16, heads=4, emb_dim=32).eval()))
    >>> embed_waveforms(modules, torch.rand(2, 16000) - 0.5, torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 1, 32])
    """
    return waveform_model(modules)(wavs, lengths)


def pad_batch(wavs):
    """Zero-padded batch ``(B, max_samples)`` and relative lengths ``(B,)`` of 1-D waveforms."""
    if len(wavs) == 1:  # no copy of a long file
        return wavs[0][None], torch.ones(1)
    longest = max(len(wav) for wav in wavs)
    batch = torch.zeros(len(wavs), longest)
    for row, wav in zip(batch, wavs):
        row[: len(wav)] = wav
    lengths = torch.tensor([len(wav) / longest for wav in wavs])
    return batch, lengths


def length_batches(durations, batch_seconds, max_batch_size):
    """Indices grouped longest first into batches of at most ``batch_seconds`` padded audio."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches, batch = [], []
    for index in order:
        longest = durations[batch[0]] if batch else durations[index]
        if batch and (longest * (len(batch) + 1) > batch_seconds or len(batch) == max_batch_size):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


def embed_files(
    embed,
    paths,
    sample_rate,
    batch_seconds=120.0,
    max_batch_size=64,
    progress=True,
):
    """Embeds audio files in length-sorted batches; bad files are reported, not fatal.

    Files are read in a background thread while the previous batch is embedded.

    Arguments
    ---------
    embed : callable
        ``embed(wavs, lengths)`` -> embeddings ``(B, E)`` of a padded batch.
    paths : list of str
        Audio files.
    sample_rate : int
        The model's sample rate.
    batch_seconds : float
        Most padded audio per batch, in seconds (a longer file is alone).
    max_batch_size : int
        Most files per batch.
    progress : bool
        Show a progress bar (on stderr).

    Yields
    ------
    tuple
        ``(index in paths, embedding (E,) or AudioError)``, in batch order.

    Example
    -------
    >>> import os, tempfile, numpy as np, soundfile
    >>> folder = tempfile.mkdtemp()
    >>> paths = [os.path.join(folder, f"{n}.wav") for n in ("a", "b", "bad")]
    >>> for path, seconds in zip(paths, (1.0, 2.0)):
    ...     soundfile.write(path, np.random.rand(int(16000 * seconds)) - 0.5, 16000)
    >>> _ = open(paths[2], "w").write("not audio")
    >>> mean_of = lambda wavs, lengths: wavs.mean(dim=1, keepdim=True)
    >>> sorted((i, type(e).__name__) for i, e in embed_files(mean_of, paths, 16000, progress=False))
    [(0, 'Tensor'), (1, 'Tensor'), (2, 'AudioError')]
    """
    durations = []
    readable = []
    for index, path in enumerate(paths):
        try:
            info = audio_info(path)
        except AudioError as error:
            yield index, error
            continue
        durations.append(max(info.frames / info.samplerate, MIN_SECONDS))
        readable.append(index)
    batches = [
        [readable[i] for i in batch]
        for batch in length_batches(durations, batch_seconds, max_batch_size)
    ]

    with tqdm(total=len(paths), disable=not progress, unit="file", desc="Embedding") as bar, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        bar.update(len(paths) - len(readable))
        pending = reader.submit(_load_batch, paths, batches[0], sample_rate) if batches else None
        for number in range(len(batches)):
            loaded = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(_load_batch, paths, batches[number + 1], sample_rate)
            yield from _embed_loaded(embed, loaded)
            bar.update(len(loaded))


def _load_batch(paths, batch, sample_rate):
    """``(index, waveform or AudioError)`` for each index of ``batch`` into ``paths``."""
    loaded = []
    for index in batch:
        try:
            loaded.append((index, load_utterance(paths[index], sample_rate)))
        except AudioError as error:
            loaded.append((index, error))
    return loaded


def _embed_loaded(embed, loaded):
    """Yields ``_load_batch``'s errors, then the embeddings of its waveforms as one batch."""
    good = [(index, wav) for index, wav in loaded if isinstance(wav, torch.Tensor)]
    for index, wav in loaded:
        if not isinstance(wav, torch.Tensor):
            yield index, wav
    if good:
        wavs, lengths = pad_batch([wav for _, wav in good])
        with torch.inference_mode():
            embeddings = embed(wavs, lengths).float().cpu()
        for (index, _), embedding in zip(good, embeddings):
            yield index, embedding
