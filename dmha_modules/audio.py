"""Reading audio as the models take it: mono float32, at a chosen sample rate."""

import soundfile
import torch
import torchaudio


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
    wav = torch.from_numpy(audio.mean(axis=1))
    if sample_rate is not None and rate != sample_rate:
        wav = torchaudio.functional.resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate
