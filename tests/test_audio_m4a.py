"""AAC in MP4 (``.m4a``, VoxCeleb2's format) read like every other format.

The files are encoded here with PyAV's own AAC encoder from known samples
(generated, and real speech when ``DMHA_DATA`` has it); the reference is
those samples. AAC is lossy, so the decoded audio is compared by its SNR
against them after finding the best alignment: FFmpeg's encoder at its
default bit rate gives 30-38 dB on speech (measured 2026-12-08), and a
reader that kept the encoder's 1024 priming samples, or lost a frame, would
be misaligned by >= 1024 samples (SNR near 0 dB at lag 0). So the tests ask
for lag 0, SNR > 20 dB, and exactly the encoded number of samples.
"""

import os

import av
import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from tests.audio_helpers import best_lag, snr_db, write_m4a, write_video_only_mp4
from tests.test_inference import voice

from dmha_modules.io.audio import AudioError, audio_info, read_audio, read_checked_audio
from dmha_modules.io.audio_headers import read_audio_header
from dmha_modules.io.mp4_audio import mp4_header
from dmha_modules.io.mp4_boxes import mp4_audio_track

MIN_SNR_DB = 20.0


def speech(shared_data, seconds=8.0):
    """The first LibriSpeech test-other utterance of at least ``seconds``, float32 at 16 kHz."""
    folder = shared_data / "librispeech-test-other-10spk"
    for path in sorted(folder.rglob("*.flac")):
        samples, rate = soundfile.read(path, dtype="float32")
        if len(samples) >= seconds * rate:
            return samples, rate
    pytest.skip(f"no utterance of {seconds} s in {folder}")


def joined_speech(shared_data, samples):
    """The first ``samples`` of LibriSpeech test-other utterances joined, float32 at 16 kHz."""
    folder = shared_data / "librispeech-test-other-10spk"
    paths = sorted(folder.rglob("*.flac"))[:20]
    joined = np.concatenate([soundfile.read(path, dtype="float32")[0] for path in paths])
    assert len(joined) >= samples
    return joined[:samples]


def assert_decodes_to(path, samples, rate):
    wav, file_rate = read_checked_audio(path)
    assert file_rate == rate
    assert len(wav) == len(samples)
    decoded = wav.numpy()
    assert best_lag(samples[: 2 * rate], decoded[: 2 * rate]) == 0
    assert snr_db(samples, decoded) > MIN_SNR_DB


@pytest.mark.parametrize("rate,seconds", [(16000, 2.3), (44100, 1.0), (8000, 3.0)])
def test_generated_m4a_decodes_to_its_samples(tmp_path, rate, seconds):
    samples = voice(seconds, rate, 140)
    path = write_m4a(tmp_path / "a.m4a", samples, rate)
    assert_decodes_to(path, samples, rate)
    assert audio_info(path) == (len(samples), rate, 1)
    assert read_audio_header(path) == pytest.approx((len(samples) / rate, rate))


def test_real_speech_m4a_decodes_to_its_samples(shared_data, tmp_path):
    samples, rate = speech(shared_data)
    for name, options in [("default.m4a", {}), ("faststart.m4a", {"faststart": True})]:
        path = write_m4a(tmp_path / name, samples, rate, **options)
        assert_decodes_to(path, samples, rate)
        assert read_audio_header(path) == pytest.approx((len(samples) / rate, rate))


def test_stereo_m4a_is_averaged_and_resampled(tmp_path):
    left = voice(1.5, 48000, 130, seed=1)
    right = voice(1.5, 48000, 190, seed=2)
    path = write_m4a(tmp_path / "stereo.m4a", np.stack([left, right], axis=1), 48000)
    assert audio_info(path).channels == 2
    wav, rate = read_audio(path, sample_rate=16000)
    expected = torchaudio.functional.resample(torch.from_numpy((left + right) / 2), 48000, 16000)
    assert rate == 16000 and len(wav) == len(expected)
    assert snr_db(expected.numpy(), wav.numpy()) > MIN_SNR_DB


def test_m4a_crops_are_the_samples_of_the_whole_file(tmp_path):
    samples = voice(4.0, 16000, 150)
    path = write_m4a(tmp_path / "a.m4a", samples, 16000)
    whole, _ = read_audio(path)
    for start, stop in [(0, 100), (5000, 16000), (9000, 70000)]:  # decoded from the start
        crop, rate = read_audio(path, None, start, stop)
        np.testing.assert_array_equal(crop.numpy(), whole.numpy()[start:stop])
        assert len(crop) == min(stop, len(samples)) - start


@pytest.mark.parametrize("rate", [16000, 44100])
def test_late_m4a_crops_decoded_after_a_seek_are_aligned(tmp_path, shared_data, rate):
    # Real speech, 30 s: crops far into it are decoded from a seek. AAC's noise
    # substitution draws its noise afresh, so they are not bit-identical to
    # the whole file decoded; aligned to the sample and as close to the
    # encoded audio as the whole decode is, they are the same audio.
    samples = joined_speech(shared_data, 30 * 16000)
    if rate != 16000:
        samples = torchaudio.functional.resample(torch.from_numpy(samples), 16000, rate).numpy()
    path = write_m4a(tmp_path / "long.m4a", samples, rate)
    whole = read_audio(path)[0].numpy()
    crop_length = int(3.5 * rate)
    for start in [rate + 7, 10 * rate + 333, 26 * rate + 1, len(samples) - crop_length]:
        crop = read_audio(path, None, start, start + crop_length)[0].numpy()
        assert len(crop) == crop_length
        reference = samples[start : start + crop_length]
        assert best_lag(reference[:rate], crop[:rate]) == 0
        assert snr_db(reference, crop) > min(MIN_SNR_DB, snr_db(reference, whole[start:]) - 1)
        assert snr_db(whole[start : start + crop_length], crop) > MIN_SNR_DB


def test_audio_of_a_video_file_is_read(tmp_path):
    samples = voice(2.0, 16000, 120)
    path = write_m4a(tmp_path / "clip.mp4", samples, 16000, video=True)
    assert_decodes_to(path, samples, 16000)


def bad_m4a_files(folder):
    """Bad MP4 files of each kind; returns {path: words its error must hold}."""
    folder.mkdir()
    samples = voice(3.0, 16000, 140)
    whole = write_m4a(folder / "whole.m4a", samples, 16000).read_bytes()
    streamed = write_m4a(folder / "streamed.m4a", samples, 16000, faststart=True).read_bytes()
    # The movie header is at the end: cut, the file has none.
    (folder / "cut.m4a").write_bytes(whole[: len(whole) // 2])
    # The movie header is first: cut, the audio data ends early.
    (folder / "cut_streamed.m4a").write_bytes(streamed[: len(streamed) * 2 // 3])
    (folder / "ftyp_only.m4a").write_bytes(whole[:32])
    (folder / "text.m4a").write_text("not audio at all\n" * 20, encoding="utf-8")
    (folder / "empty.m4a").write_bytes(b"")
    write_video_only_mp4(folder / "video_only.mp4")
    write_m4a(folder / "silent.m4a", np.zeros(16000, np.float32), 16000)
    return {
        folder / "cut.m4a": "not a readable MP4 audio file",
        folder / "cut_streamed.m4a": "",  # truncated or corrupt: FFmpeg decides which
        folder / "ftyp_only.m4a": "not a readable MP4 audio file",
        folder / "text.m4a": "not a readable audio file",
        folder / "empty.m4a": "empty file (0 bytes)",
        folder / "video_only.mp4": "no audio stream in this MP4 file (video)",
        folder / "silent.m4a": "silent",
    }


def test_bad_m4a_files_are_one_clear_error_naming_the_file(tmp_path):
    for path, words in bad_m4a_files(tmp_path / "bad").items():
        with pytest.raises(AudioError) as raised:
            read_checked_audio(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and words in message
        assert "\n" not in message
        if "cut_streamed" in path.name:
            assert "truncated" in message or "corrupt" in message


def test_bad_m4a_headers_are_refused_by_data_preparation(tmp_path):
    for path, words in bad_m4a_files(tmp_path / "bad").items():
        if path.name in ("silent.m4a", "cut_streamed.m4a"):
            continue  # their headers are whole; their audio is not used
        with pytest.raises(ValueError) as raised:
            read_audio_header(path)
        assert "\n" not in str(raised.value)
    assert os.path.getsize(tmp_path / "bad" / "empty.m4a") == 0


@pytest.mark.parametrize(
    "samples,rate,options",
    [(32007, 16000, {}), (33023, 16000, {"faststart": True}), (44177, 44100, {}),
     (24005, 8000, {"video": True}), (48000, 48000, {"channels": 2})],
)
def test_mp4_boxes_give_what_pyav_and_the_decoder_give(tmp_path, samples, rate, options):
    channels = options.pop("channels", 1)
    audio = voice(samples / rate + 0.01, rate, 140)[:samples]
    path = write_m4a(tmp_path / "a.m4a", np.stack([audio] * channels, axis=-1).squeeze(),
                     rate, **options)
    with open(path, "rb") as file:
        from_boxes = mp4_audio_track(file, os.path.getsize(path))
    assert from_boxes == mp4_header(path)  # FFmpeg's demuxer, through PyAV
    assert from_boxes[1:] == (rate, channels)
    decoded, _ = read_audio(path)
    assert len(decoded) == from_boxes[0]
    # The edit list is in the movie's timescale, 1/1000 s in FFmpeg's files.
    assert abs(from_boxes[0] - samples) <= rate / 1000
    assert read_audio_header(path) == pytest.approx((from_boxes[0] / rate, rate))


def test_lossless_alac_m4a_decodes_exactly(tmp_path):
    pcm = np.round(voice(1.0, 16000, 140) * 32767).astype(np.int16)
    path = tmp_path / "alac.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("alac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None], "s16p", "mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with open(path, "rb") as file:
        assert mp4_audio_track(file, os.path.getsize(path)) is None  # left to PyAV
    wav, rate = read_checked_audio(path)
    np.testing.assert_array_equal(wav.numpy(), pcm / np.float32(32768))
    assert read_audio_header(path) == (1.0, 16000)
