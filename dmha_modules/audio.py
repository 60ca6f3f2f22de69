"""Reading audio as the models take it: mono float32, at a chosen sample rate."""

import os

import soundfile
import torch
import torchaudio

# The one list of audio extensions lives with the header parsers, which
# data preparation imports without torch.
from dmha_modules.audio_headers import AUDIO_EXTENSIONS, riff_chunks  # noqa: F401


def read_audio(path, sample_rate=None, start=0, stop=None):
    """Reads samples ``start:stop`` of ``path``, channels averaged to mono.

    Arguments
    ---------
    path : str
        Audio file (any format libsndfile reads).
    sample_rate : int, optional
        Resample to this rate; None keeps the file's.
    start, stop : int, optional
        Sample range in the file's own rate; ``stop`` None reads to the end.

    Returns
    -------
    tuple
        The waveform ``(samples,)`` as float32 in [-1, 1], and its sample rate.

    Example
    -------
    >>> import os, tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "stereo.wav")
    >>> soundfile.write(path, numpy.full((800, 2), [0.5, -0.25]), 8000)
    >>> wav, rate = read_audio(path, sample_rate=16000)
    >>> wav.shape, rate, round(wav[800].item(), 3)
    (torch.Size([1600]), 16000, 0.125)
    """
    audio, rate = soundfile.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1))
    if sample_rate is not None and rate != sample_rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate


def resample(wav, rate, sample_rate, piece_seconds=60):
    """Resamples ``wav`` ``(samples,)`` from ``rate`` to ``sample_rate`` in bounded memory.

    Audio longer than two pieces is resampled a piece at a time, each with a
    second of real context on both sides (the resampling filter reaches a few
    milliseconds), so the result is the one-pass one.

    Example
    -------
    >>> wav = torch.sin(torch.arange(48000 * 3) * 0.01)
    >>> one_pass = resample(wav, 48000, 16000, piece_seconds=10)
    >>> pieces = resample(wav, 48000, 16000, piece_seconds=1)
    >>> one_pass.shape == pieces.shape, bool((one_pass - pieces).abs().max() < 1e-5)
    (True, True)
    """
    step = piece_seconds * rate
    if len(wav) <= 2 * step:
        return torchaudio.functional.resample(wav, rate, sample_rate)
    total = -(-len(wav) * sample_rate // rate)
    pieces = []
    for begin in range(0, len(wav), step):
        start, end = max(0, begin - rate), min(len(wav), begin + step + rate)
        piece = torchaudio.functional.resample(wav[start:end], rate, sample_rate)
        skip = (begin - start) * sample_rate // rate
        pieces.append(piece[skip : skip + step * sample_rate // rate])
    return torch.cat(pieces)[:total]


def wav_bytes_missing(path):
    """Bytes of audio data a WAV file's header promises but the file lacks; 0 if complete.

    libsndfile reads a truncated WAV file without complaint, up to where it
    ends. Files that are not RIFF/WAVE, and streamed WAV files (data size 0
    or 0xFFFFFFFF), give 0.

    Example
    -------
    >>> import os, tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "cut.wav")
    >>> soundfile.write(path, numpy.zeros(1000), 8000, subtype="PCM_16")
    >>> os.truncate(path, os.path.getsize(path) - 100)
    >>> wav_bytes_missing(path)
    100
    """
    size = os.path.getsize(path)
    with open(path, "rb") as audio:
        for chunk_id, body, chunk_size in riff_chunks(audio, size):
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return 0
                return max(0, body + chunk_size - size)
    return 0
