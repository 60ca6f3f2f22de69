"""The audio of MP4 files (VoxCeleb2's AAC ``.m4a``), through PyAV.

libsndfile reads no MP4, so files whose first box is ``ftyp`` are read here
with PyAV, whose wheels carry their own FFmpeg (no system FFmpeg needed).
This module imports neither torch nor soundfile: data preparation reads MP4
headers with it in its header-reading processes.

Sample counts follow the container: FFmpeg's MP4 demuxer applies the edit
list, so the encoder's priming samples (1024 for AAC) are dropped at the
start, and the decoded audio is cut to the stream's duration, which drops
the padding the encoder adds to fill its last frame. A file written with
PyAV's (FFmpeg's) AAC encoder thus decodes to exactly as many samples as
were encoded, aligned with them (tests/test_audio_m4a.py).

Example
-------
>>> import os, tempfile, numpy
>>> path = os.path.join(tempfile.mkdtemp(), "a.m4a")
>>> samples = 0.1 * numpy.sin(numpy.arange(16000) * 0.05)
>>> with av.open(path, "w", format="mp4") as container:
...     stream = container.add_stream("aac", rate=16000, layout="mono")
...     frame = av.AudioFrame.from_ndarray(samples[None].astype("float32"), "fltp", "mono")
...     frame.sample_rate, frame.pts = 16000, 0
...     for packet in [*stream.encode(frame), *stream.encode(None)]:
...         container.mux(packet)
>>> mp4_header(path)
(16000, 16000, 1)
>>> wav, rate = read_mp4(path, 100, 200)
>>> wav.shape, wav.dtype, rate
((100,), dtype('float32'), 16000)
"""

import av
import numpy

# The first box of every MP4 / QuickTime / 3GP file is ``ftyp``.
MP4_MAGIC = b"ftyp"

# Crops starting later than this many samples are decoded from a seek, with
# this many samples decoded before them to settle the decoder (AAC frames
# overlap by one frame of 1024).
SEEK_FROM, SEEK_PREROLL = 16384, 4096
# Integer sample formats and the value of full scale.
_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 2.0**63}


class Mp4Error(ValueError):
    """An MP4 file whose audio cannot be read; the message says why, without the path.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.m4a")
    >>> _ = open(path, "wb").write(b"\\0\\0\\0\\x10ftypM4A \\0\\0\\0\\0")
    >>> mp4_header(path)
    Traceback (most recent call last):
    ...
    dmha_modules.io.mp4_audio.Mp4Error: not a readable MP4 audio file (...)
    """


def is_mp4(path):
    """Whether ``path`` starts like an MP4 file (``ftyp`` box), whatever its name.

    False for a file that cannot be opened: its reader says what is wrong.
    """
    try:
        with open(path, "rb") as audio:
            return audio.read(8)[4:8] == MP4_MAGIC
    except OSError:
        return False


def _open(path):
    """``(container, audio stream)`` of ``path``; ``Mp4Error`` if either is missing."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise Mp4Error(f"not a readable MP4 audio file ({_reason(error)})") from None
    if not container.streams.audio:
        kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
        container.close()
        raise Mp4Error(f"no audio stream in this MP4 file ({', '.join(kinds)})")
    return container, container.streams.audio[0]


def _reason(error):
    """FFmpeg's words for ``error``, without the path PyAV repeats."""
    return getattr(error, "strerror", None) or str(error)


def _frames(container, stream):
    """Samples the container says the audio stream holds (after its edit list), or None."""
    rate = stream.codec_context.sample_rate
    if stream.duration is not None and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if container.duration is not None:  # in AV_TIME_BASE (microseconds)
        return round(container.duration * rate / av.time_base)
    return None


def mp4_header(path):
    """``(samples, sample rate, channels)`` of an MP4 file's audio, from its metadata.

    Nothing is decoded: the sample count is the stream's duration after its
    edit list, which is what :func:`read_mp4` returns.

    Raises
    ------
    Mp4Error
        No readable container, no audio stream, no sample rate or no duration.
    """
    container, stream = _open(path)
    with container:
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        frames = _frames(container, stream)
    if not rate:
        raise Mp4Error("the audio stream has no sample rate")
    if frames is None:
        raise Mp4Error("the audio stream has no duration")
    if frames <= 0:
        raise Mp4Error("the audio has no samples (zero length)")
    return frames, rate, channels


def _mono(frame):
    """One decoded frame as mono float32 ``(samples,)``: channels averaged, full scale 1."""
    if frame.format.name == "fltp":  # AAC's: the planes as they are, 20 % faster
        planes = [numpy.frombuffer(plane, numpy.float32, frame.samples) for plane in frame.planes]
        if len(planes) == 1:
            return planes[0]
        return numpy.mean(planes, axis=0, dtype=numpy.float64).astype(numpy.float32)
    samples = frame.to_ndarray()
    if not frame.format.is_planar:  # interleaved: (1, samples * channels)
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    name = frame.format.name.rstrip("p")
    if name in _FULL_SCALE:
        offset = 128.0 if name == "u8" else 0.0
        samples = (samples.astype(numpy.float64) - offset) / _FULL_SCALE[name]
    if len(samples) == 1:
        return samples[0].astype(numpy.float32, copy=False)
    return samples.mean(axis=0, dtype=numpy.float64).astype(numpy.float32)


def read_mp4(path, start=0, stop=None):
    """Decodes samples ``start:stop`` of an MP4 file's first audio stream, as mono float32.

    Decoding stops once ``stop`` is reached. A crop starting past
    ``SEEK_FROM`` samples is decoded from a seek to ``SEEK_PREROLL`` samples
    before it (AAC frames depend on the one before), so a 3.5 s crop of a
    long file costs about what one of a short file does. AAC's noise
    substitution (PNS) draws fresh noise after a seek, so such a crop is not
    bit-identical to the same samples of the whole file decoded, only the
    same audio (30-35 dB apart on speech, as far as the encoding is from its
    source). Video streams are not decoded.

    Arguments
    ---------
    path : str
        The MP4 file.
    start, stop : int, optional
        Sample range in the file's rate; ``stop`` None reads to the end.

    Returns
    -------
    tuple
        The waveform ``(samples,)`` numpy float32, and its sample rate.
        Fewer samples than asked for if the file is shorter than its header says.

    Raises
    ------
    Mp4Error
        No readable container or audio stream, or corrupt audio data.
    """
    container, stream = _open(path)
    with container:
        rate = stream.codec_context.sample_rate
        if not rate:
            raise Mp4Error("the audio stream has no sample rate")
        total = _frames(container, stream)
        end = total if stop is None else stop if total is None else min(stop, total)
        try:
            origin = _seek(container, stream, start - SEEK_PREROLL) if start > SEEK_FROM else 0
            if origin is None or origin > start:  # no usable timestamps: from the start
                container.seek(0, stream=stream)
                origin = 0
            wav = _decode(container, stream, end if end is None else end - origin)
        except av.error.FFmpegError as error:
            raise Mp4Error(f"corrupt audio data ({_reason(error)})") from None
    return wav[start - origin : None if end is None else end - origin], rate


def _seek(container, stream, sample):
    """Seeks to the frame holding ``sample`` or before; returns its first sample (None: no pts)."""
    to_stream = 1 / (stream.time_base * stream.codec_context.sample_rate)
    container.seek(int(sample * to_stream), stream=stream, backward=True)
    packet = next((p for p in container.demux(stream) if p.pts is not None), None)
    if packet is None:
        return None
    container.seek(packet.pts, stream=stream, backward=True)
    return round(packet.pts / to_stream)


def _decode(container, stream, samples):
    """The next ``samples`` (None: all) of the stream, decoded, as mono float32."""
    pieces, filled = [], 0
    for frame in container.decode(stream):
        pieces.append(_mono(frame))
        filled += frame.samples
        if samples is not None and filled >= samples:
            break
    return numpy.concatenate(pieces) if pieces else numpy.zeros(0, numpy.float32)
