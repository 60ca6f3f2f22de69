"""Tests of ``read_audio_header``: each header parser agrees with libsndfile."""

import re
import struct

import numpy
import pytest
import soundfile
from tests.audio_helpers import write_m4a
from tests.prepare.prepare_helpers import mp4_bytes, write_audio

from dmha_modules.io import audio_headers


@pytest.mark.parametrize(
    "suffix, kwargs, sample_rate, channels, seconds",
    [
        (".wav", {"subtype": "PCM_16"}, 16000, 1, 0.1234),
        (".wav", {"subtype": "PCM_24"}, 8000, 2, 1.0),
        (".wav", {"subtype": "FLOAT"}, 44100, 1, 0.05),
        (".wav", {"format": "WAVEX", "subtype": "PCM_16"}, 16000, 3, 0.2),
        (".WAV", {"subtype": "PCM_16"}, 16000, 1, 0.3),
        (".flac", {}, 16000, 1, 0.2501),
        (".flac", {"subtype": "PCM_24"}, 48000, 2, 0.01),
        (".mp3", {}, 16000, 1, 1.0),
        (".ogg", {}, 16000, 1, 0.5),
    ],
)
def test_read_audio_header_agrees_with_soundfile(
    tmp_path, suffix, kwargs, sample_rate, channels, seconds
):
    path = tmp_path / f"a{suffix}"
    write_audio(path, seconds, sample_rate, channels, **kwargs)
    info = soundfile.info(path)
    duration, rate = audio_headers.read_audio_header(str(path))
    assert rate == info.samplerate == sample_rate
    assert duration == pytest.approx(info.frames / info.samplerate, abs=1e-9)


def test_read_audio_header_skips_extra_wav_chunks(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, 0.1)
    data = path.read_bytes()
    # A LIST chunk (odd size, padded) between "fmt " and "data".
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"
    patched = (
        data[:4]
        + struct.pack("<I", len(data) - 8 + len(extra))
        + data[8:36]
        + extra
        + data[36:]
    )
    path.write_bytes(patched)
    assert soundfile.info(path).frames == 1600
    assert audio_headers.read_audio_header(str(path)) == (0.1, 16000)


def test_read_audio_header_leaves_truncated_wav_to_libsndfile(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, 0.1)
    path.write_bytes(path.read_bytes()[:1044])  # data chunk claims 3200 bytes
    info = soundfile.info(path)
    assert audio_headers.read_audio_header(str(path)) == (info.frames / 16000, 16000)
    assert info.frames == 500


@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("faststart", [True, False])
def test_read_audio_header_reads_mp4_audio_track(tmp_path, rate, faststart):
    path = write_m4a(tmp_path / "a.m4a", numpy.zeros(int(2.5 * rate), numpy.float32), rate,
                     faststart=faststart)
    assert audio_headers.read_audio_header(str(path)) == (2.5, rate)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty (0 bytes)"),
        (b"this is not audio at all" * 10, "unreadable or corrupt"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unreadable or corrupt"),
        (b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00", "not a readable MP4 audio file"),
        (mp4_bytes(2500), "no audio stream in this MP4 file"),  # a movie header, no track
        (mp4_bytes(2500)[:-95], "corrupt header (truncated)"),
    ],
)
def test_read_audio_header_rejects_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(words)):
        audio_headers.read_audio_header(str(path))


def test_read_audio_header_rejects_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, numpy.zeros(0), 16000)
    with pytest.raises(ValueError, match="no samples"):
        audio_headers.read_audio_header(str(path))
