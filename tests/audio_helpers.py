"""Audio files the tests write in formats soundfile cannot: AAC in MP4 (``.m4a``).

Written with PyAV's own AAC encoder (FFmpeg's ``aac``), independently of the
reader under test (which decodes): the samples given are what a test compares
the decoded audio with.
"""

import av
import numpy as np

# FFmpeg's AAC encoder takes frames of this many samples.
AAC_FRAME = 1024


def write_m4a(path, samples, rate, bit_rate=None, video=False, faststart=False):
    """Encodes ``samples`` to AAC in an MP4 file at ``path``.

    Arguments
    ---------
    path : str or Path
        The file to write (any name: the container is MP4 whatever the extension).
    samples : numpy.ndarray
        ``(samples,)`` mono or ``(samples, channels)``, floats in [-1, 1].
    rate : int
        Sample rate in Hz.
    bit_rate : int, optional
        Bits per second; None for FFmpeg's default.
    video : bool
        Also write a small black MPEG-4 video stream before the audio, as a video file has.
    faststart : bool
        Movie header (``moov``) before the audio data, as streamed files have;
        by default FFmpeg writes it at the end.

    Returns
    -------
    path
    """
    samples = np.asarray(samples, dtype=np.float32)
    planar = samples[None] if samples.ndim == 1 else np.ascontiguousarray(samples.T)
    layout = "mono" if len(planar) == 1 else "stereo"
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        pictures = container.add_stream("mpeg4", rate=10) if video else None
        stream = container.add_stream("aac", rate=rate, layout=layout)
        if video:  # every stream is declared before the first packet
            _write_black_video(container, pictures, len(planar[0]) / rate, 10)
        if bit_rate:
            stream.bit_rate = bit_rate
        for start in range(0, len(planar[0]), AAC_FRAME):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + AAC_FRAME]), "fltp", layout
            )
            # With timestamps, the encoder's priming samples get an edit list.
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _write_black_video(container, stream, seconds, fps):
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for index in range(max(1, int(seconds * fps))):
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_video_only_mp4(path, seconds=1.0):
    """An MP4 file with a video stream and no audio."""
    with av.open(str(path), "w", format="mp4") as container:
        _write_black_video(container, container.add_stream("mpeg4", rate=10), seconds, 10)
    return path


def snr_db(reference, decoded, lag=0):
    """SNR in dB of ``decoded`` against ``reference``, ``decoded`` shifted back by ``lag`` samples.

    Over the samples both hold; ``lag`` > 0 means ``decoded`` starts late.
    """
    reference = np.asarray(reference, np.float64)[max(0, -lag):]
    decoded = np.asarray(decoded, np.float64)[max(0, lag):]
    n = min(len(reference), len(decoded))
    error = np.sum((reference[:n] - decoded[:n]) ** 2)
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / max(error, 1e-30)))


def best_lag(reference, decoded, max_lag=2 * AAC_FRAME):
    """The shift (in samples, within ``max_lag``) of ``decoded`` that gives the best :func:`snr_db`.

    A reader that kept the encoder's priming samples would show 1024 here.
    """
    return max(range(-max_lag, max_lag + 1), key=lambda lag: snr_db(reference, decoded, lag))
