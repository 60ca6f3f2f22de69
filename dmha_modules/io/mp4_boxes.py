"""The audio track of an MP4 file from its boxes alone: samples and sample rate, no decoder.

Preparing VoxCeleb2 dev reads 1.1 M ``.m4a`` headers. Opening each with
PyAV costs about 1 ms; walking the boxes here costs a tenth of that
(docs/loading.md). The result is the one FFmpeg's demuxer gives, hence
what :func:`dmha_modules.io.mp4_audio.read_mp4` decodes: the edit list's
duration (the encoder's priming and padding left out) at the track's rate.
Only the plain case is decided here: an AAC (``mp4a``) sound track whose
media timescale is its sample rate, with at most one edit. Anything else
(HE-AAC whose sample entry names half the rate, several edits, other
codecs) gives None, and the caller asks PyAV.

Example
-------
>>> import io
>>> def box(kind, payload):
...     return struct.pack(">I4s", 8 + len(payload), kind) + payload
>>> mvhd = box(b"mvhd", struct.pack(">4x8xII", 1000, 2500) + bytes(80))
>>> mdhd = box(b"mdhd", struct.pack(">4x8xII", 16000, 41984) + bytes(4))
>>> hdlr = box(b"hdlr", bytes(8) + b"soun" + bytes(12))
>>> entry = box(b"mp4a", bytes(16) + struct.pack(">HH4xI", 1, 16, 16000 << 16))
>>> stsd = box(b"stsd", struct.pack(">4xI", 1) + entry)
>>> elst = box(b"elst", struct.pack(">4xIIiI", 1, 2500, 1024, 1 << 16))
>>> mdia = box(b"mdia", mdhd + hdlr + box(b"minf", box(b"stbl", stsd)))
>>> trak = box(b"trak", box(b"edts", elst) + mdia)
>>> data = box(b"ftyp", b"M4A ") + box(b"moov", mvhd + trak)
>>> mp4_audio_track(io.BytesIO(data), len(data))
(40000, 16000, 1)
"""

import struct


def _boxes(audio, start, end):
    """Yields (type, payload offset, box end) of the MP4 boxes in a range."""
    position = start
    while position + 8 <= end:
        audio.seek(position)
        box_size, box_type = struct.unpack(">I4s", audio.read(8))
        header = 8
        if box_size == 1:
            box_size = struct.unpack(">Q", audio.read(8))[0]
            header = 16
        elif box_size == 0:
            box_size = end - position
        if box_size < header:
            return
        yield box_type, position + header, min(position + box_size, end)
        position += box_size


def _child(audio, payload, end, *path):
    """``(payload, end)`` of the box at ``path`` below a box, or None."""
    for kind in path:
        found = next(((p, e) for t, p, e in _boxes(audio, payload, end) if t == kind), None)
        if found is None:
            return None
        payload, end = found
    return payload, end


def _timescale_duration(audio, payload):
    """``(timescale, duration)`` of an ``mvhd`` or ``mdhd`` box."""
    audio.seek(payload)
    if audio.read(4)[:1] == b"\x01":
        return struct.unpack(">16xIQ", audio.read(28))
    return struct.unpack(">8xII", audio.read(16))


def _edits(audio, trak, trak_end):
    """``[(segment duration, media time)]`` of a track's edit list; [] without one."""
    found = _child(audio, trak, trak_end, b"edts", b"elst")
    if found is None:
        return []
    audio.seek(found[0])
    version = audio.read(4)[:1]
    count = struct.unpack(">I", audio.read(4))[0]
    layout = ">Qq4x" if version == b"\x01" else ">Ii4x"
    size = struct.calcsize(layout)
    return [struct.unpack(layout, audio.read(size)) for _ in range(min(count, 2))]


def _sound_track(audio, trak, trak_end):
    """``(timescale, duration, channels, rate, codec)`` of a sound track, or None."""
    handler = _child(audio, trak, trak_end, b"mdia", b"hdlr")
    if handler is None:
        return None
    audio.seek(handler[0] + 8)
    if audio.read(4) != b"soun":
        return None
    mdia = _child(audio, trak, trak_end, b"mdia")
    mdhd = _child(audio, *mdia, b"mdhd")
    stsd = _child(audio, *mdia, b"minf", b"stbl", b"stsd")
    if mdhd is None or stsd is None:
        return None
    timescale, duration = _timescale_duration(audio, mdhd[0])
    audio.seek(stsd[0] + 8)  # version, flags, entry count
    codec = audio.read(8)[4:]
    channels, _, rate = struct.unpack(">16xHH4xI", audio.read(28))
    return timescale, duration, channels, rate >> 16, codec


def mp4_audio_track(audio, size):
    """``(samples, sample rate, channels)`` of an MP4 file's first sound track, or None.

    Arguments
    ---------
    audio : file
        The file, open in binary mode.
    size : int
        Its size in bytes.

    Returns
    -------
    tuple or None
        None when the file is not the plain case this module decides.

    Raises
    ------
    struct.error
        A box cut short by the end of the file.
    """
    moov = _child(audio, 0, size, b"moov")
    mvhd = moov and _child(audio, *moov, b"mvhd")
    if mvhd is None:
        return None
    movie_timescale, _ = _timescale_duration(audio, mvhd[0])
    for kind, trak, trak_end in _boxes(audio, *moov):
        track = _sound_track(audio, trak, trak_end) if kind == b"trak" else None
        if track is None:
            continue
        timescale, duration, channels, rate, codec = track
        edits = _edits(audio, trak, trak_end)
        if codec != b"mp4a" or not rate or timescale != rate or len(edits) > 1 or not (
            movie_timescale or not edits
        ) or any(media_time < 0 for _, media_time in edits):
            return None
        if edits:
            return round(edits[0][0] * rate / movie_timescale), rate, channels
        return duration, rate, channels
    return None
