"""Reading audio as the models take it: mono float32, at a chosen sample rate.

:func:`read_checked_audio` is the one audio check of every command that reads
samples (``dmha embed``, ``age``, ``verify``, ``score``, ``features``):
missing, empty, non-audio, truncated, silent and NaN- or Inf-holding files
raise an :class:`AudioError` naming the file.

libsndfile reads WAV, FLAC, MP3, Ogg and the like; MP4 files (VoxCeleb2's
AAC ``.m4a``), recognised by their first bytes, are decoded by PyAV
(:mod:`dmha_modules.io.mp4_audio`). Both give the same mono float32 samples
at the file's rate, then the same down-mix and resampling.
"""

import collections
import os
import struct

import numpy
import soundfile
import torch
import torchaudio

# The one list of audio extensions lives with the header parsers, which
# data preparation imports without torch.
from dmha_modules.io.audio_headers import AUDIO_EXTENSIONS, file_problem, riff_chunks  # noqa: F401
from dmha_modules.io.mp4_audio import Mp4Error, is_mp4, mp4_header, read_mp4
from dmha_modules.io.mp4_boxes import mp4_audio_track


class AudioInfo(collections.namedtuple("AudioInfo", "frames samplerate channels")):
    """What :func:`audio_info` tells of a file from its header, whatever its format.

    Example
    -------
    >>> info = AudioInfo(frames=8000, samplerate=16000, channels=1)
    >>> info.frames / info.samplerate
    0.5
    """

    __slots__ = ()


# Frames read at a time from multichannel files, which are down-mixed block by block.
_BLOCK_FRAMES = 1 << 18


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file.

    Example
    -------
    >>> audio_info("missing.wav")
    Traceback (most recent call last):
    ...
    dmha_modules.io.audio.AudioError: missing.wav: no such file
    """


def audio_info(path):
    """The :class:`AudioInfo` of ``path`` from its header; an ``AudioError`` says what is wrong.

    Example
    -------
    >>> import tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "a.flac")
    >>> soundfile.write(path, numpy.zeros((800, 2)), 8000)
    >>> audio_info(path)
    AudioInfo(frames=800, samplerate=8000, channels=2)
    """
    problem = file_problem(path)
    if problem is not None:
        raise AudioError(f"{path}: {problem}")
    try:
        if is_mp4(path):
            info = AudioInfo(*(_mp4_track(path) or mp4_header(path)))
        else:
            header = soundfile.info(path)
            info = AudioInfo(header.frames, header.samplerate, header.channels)
    except Mp4Error as error:
        raise AudioError(f"{path}: {error}") from None
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: not a readable audio file ({error})") from None
    except OSError as error:
        raise AudioError(f"{path}: {error.strerror or error}") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: no samples")
    return info


def _mp4_track(path):
    """What the boxes of an MP4 file say of its audio (10x faster than opening it with PyAV).

    None where they do not settle it, or are cut short: PyAV then decides.
    """
    with open(path, "rb") as audio:
        try:
            return mp4_audio_track(audio, os.fstat(audio.fileno()).st_size)
        except struct.error:
            return None


def read_checked_audio(path):
    """Reads a whole audio file as :func:`read_audio` does, refusing unusable audio.

    Arguments
    ---------
    path : str
        Audio file in any format libsndfile reads, or MP4 (AAC ``.m4a``).

    Returns
    -------
    tuple
        The mono waveform ``(samples,)`` float32 and its sample rate.

    Raises
    ------
    AudioError
        For a missing, empty, non-audio, truncated, silent (no sample above one
        16-bit step) or NaN- or Inf-holding file.

    Example
    -------
    >>> import tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "inf.wav")
    >>> soundfile.write(path, numpy.array([0.1, numpy.inf, 0.2]), 8000, subtype="FLOAT")
    >>> read_checked_audio(path)
    Traceback (most recent call last):
    ...
    dmha_modules.io.audio.AudioError: ...inf.wav: 1 samples are NaN or infinite
    """
    info = audio_info(path)
    missing = wav_bytes_missing(path)
    if missing:
        raise AudioError(f"{path}: truncated ({missing} bytes of audio data missing)")
    try:
        wav, rate = read_audio(path)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: corrupt audio ({error})") from None
    if len(wav) < info.frames:
        raise AudioError(f"{path}: truncated (header says {info.frames} samples, read {len(wav)})")
    if not bool(torch.isfinite(wav).all()):
        raise AudioError(f"{path}: {int((~torch.isfinite(wav)).sum())} samples are NaN or infinite")
    if max(float(wav.max()), -float(wav.min())) < 1 / 32768:
        raise AudioError(f"{path}: silent (every sample is below one 16-bit step)")
    return wav, rate


def read_audio(path, sample_rate=None, start=0, stop=None):
    """Reads samples ``start:stop`` of ``path``, channels averaged to mono.

    Multichannel audio is read and averaged a block at a time into the mono
    waveform, so it takes little more memory than the mono waveform itself.
    MP4 files are decoded by :func:`dmha_modules.io.mp4_audio.read_mp4`.

    Arguments
    ---------
    path : str
        Audio file (any format libsndfile reads, or MP4 such as AAC ``.m4a``).
    sample_rate : int, optional
        Resample to this rate; None keeps the file's.
    start, stop : int, optional
        Sample range in the file's own rate; ``stop`` None reads to the end.

    Returns
    -------
    tuple
        The waveform ``(samples,)`` as float32 in [-1, 1], and its sample rate.

    Raises
    ------
    AudioError
        An MP4 file that cannot be decoded (other formats raise libsndfile's errors).

    Example
    -------
    >>> import os, tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "stereo.wav")
    >>> soundfile.write(path, numpy.full((800, 2), [0.5, -0.25]), 8000)
    >>> wav, rate = read_audio(path, sample_rate=16000)
    >>> wav.shape, rate, round(wav[800].item(), 3)
    (torch.Size([1600]), 16000, 0.125)
    """
    if is_mp4(path):
        try:
            mono, rate = read_mp4(path, start, stop)
        except Mp4Error as error:
            raise AudioError(f"{path}: {error}") from None
    else:
        mono, rate = _read_soundfile(path, start, stop)
    wav = torch.from_numpy(mono)
    if sample_rate is not None and rate != sample_rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate


def _read_soundfile(path, start, stop):
    """Samples ``start:stop`` of ``path`` through libsndfile: mono float32 numpy, and the rate."""
    with soundfile.SoundFile(path) as audio:
        rate = audio.samplerate
        if start:
            audio.seek(start)
        frames = -1 if stop is None else max(0, stop - start)
        if audio.channels == 1:
            mono = audio.read(frames, dtype="float32")
        else:
            left = max(0, audio.frames - start)
            total = left if frames < 0 else min(frames, left)
            if total >= 2**40:  # libsndfile's count for a stream of unknown length
                raise RuntimeError("unknown length")
            mono = numpy.empty(total, numpy.float32)
            filled = 0
            for block in audio.blocks(_BLOCK_FRAMES, frames=total, dtype="float32",
                                      always_2d=True):
                numpy.mean(block, axis=1, out=mono[filled : filled + len(block)])
                filled += len(block)
            mono = mono[:filled]  # a file shorter than its header says
    return mono, rate


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
