"""Checked audio for the models: ``load_utterance`` and resampling.

The references share no code path with what they check: resampled tones are
checked against the tone itself, and resampling in pieces against
torchaudio in one pass. The commands that use models (``dmha embed``,
``age``, ``verify``, ``score``, ``import-original``) are tested in
``tests/cli/``; they use the signals and bad files written here.
"""

import os

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from dmha_modules.io import audio
from dmha_modules.io.audio import read_audio, resample
from dmha_modules.inference import MIN_SECONDS, AudioError, load_utterance

# ---------------------------------------------------------------- signals


def voice(seconds, rate, f0, seed=0, channels=1):
    """A buzz with vibrato, syllable-like loudness and a little noise, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    frequency = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + seed))
    phase = 2 * np.pi * np.cumsum(frequency) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 8) if k * f0 * 1.1 < rate / 2)
    envelope = 0.2 + np.sin(2 * np.pi * 2.3 * t + seed) ** 2
    wav = 0.1 * buzz * envelope + 0.003 * rng.standard_normal(t.size)
    if channels == 2:
        wav = np.stack([wav, 0.5 * wav + 0.01 * rng.standard_normal(t.size)], axis=1)
    return wav.astype(np.float32)


def write_bad_files(folder):
    """Bad files of each kind; returns {path: words its error must hold}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    (folder / "empty.wav").write_bytes(b"")
    soundfile.write(folder / "zero.wav", np.zeros(0), 16000)
    soundfile.write(folder / "silent.wav", np.zeros(16000), 16000, subtype="PCM_16")
    with_nan = 0.1 * rng.standard_normal(16000)
    with_nan[[10, 500, 9000]] = np.nan
    soundfile.write(folder / "nan.wav", with_nan, 16000, subtype="FLOAT")
    soundfile.write(folder / "truncated.wav", 0.1 * rng.standard_normal(16000), 16000,
                    subtype="PCM_16")
    os.truncate(folder / "truncated.wav", os.path.getsize(folder / "truncated.wav") - 1000)
    soundfile.write(folder / "cut.flac", 0.1 * rng.standard_normal(32000), 16000)
    os.truncate(folder / "cut.flac", os.path.getsize(folder / "cut.flac") // 2)
    (folder / "text.wav").write_text("id path\nnot audio at all\n" * 20, encoding="utf-8")
    with_inf = 0.1 * rng.standard_normal(16000)
    with_inf[[3, 4]] = [np.inf, -np.inf]
    soundfile.write(folder / "inf.wav", with_inf, 16000, subtype="FLOAT")
    (folder / "folder.wav").mkdir()
    os.symlink(folder / "loop.wav", folder / "loop.wav")
    os.symlink(folder / "gone.wav", folder / "broken.wav")
    return {
        folder / "empty.wav": "empty file (0 bytes)",
        folder / "zero.wav": "no samples",
        folder / "silent.wav": "silent",
        folder / "nan.wav": "3 samples are NaN",
        folder / "truncated.wav": "truncated (1000 bytes of audio data missing)",
        folder / "cut.flac": "corrupt audio",
        folder / "text.wav": "not a readable audio file",
        folder / "inf.wav": "2 samples are NaN or infinite",
        folder / "folder.wav": "a folder, not an audio file",
        folder / "loop.wav": "symbolic link loop",
        folder / "broken.wav": "broken symbolic link",
        folder / "missing.wav": "no such file",
    }


# ---------------------------------------------------------------- load_utterance


BAD_NAMES = ["empty.wav", "zero.wav", "silent.wav", "nan.wav", "truncated.wav", "cut.flac",
             "text.wav", "inf.wav", "folder.wav", "loop.wav", "broken.wav", "missing.wav"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_audio_raises_an_error_naming_the_file_and_the_problem(tmp_path, name):
    expected = {path.name: words for path, words in write_bad_files(tmp_path).items()}
    path = tmp_path / name
    with pytest.raises(AudioError) as error:
        load_utterance(str(path), 16000)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert expected[name] in message


def test_stereo_is_averaged_to_mono(tmp_path):
    signal = voice(1.0, 16000, 150)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([signal, -0.5 * signal], axis=1), 16000, subtype="FLOAT")
    wav = load_utterance(str(path), 16000)
    assert wav.dtype == torch.float32
    np.testing.assert_allclose(wav.numpy(), 0.25 * signal, rtol=0, atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_rates_are_resampled_to_the_model_rate(tmp_path, rate):
    seconds, tone = 1.5, 1000.0
    signal = (0.5 * np.sin(2 * np.pi * tone * np.arange(int(seconds * rate)) / rate))
    signal = signal.astype(np.float32)
    path = tmp_path / f"tone{rate}.wav"
    soundfile.write(path, signal, rate, subtype="FLOAT")
    wav = load_utterance(str(path), 16000).numpy()
    assert wav.shape == (24000,)  # 1.5 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    assert np.fft.rfftfreq(len(wav), 1 / 16000)[spectrum.argmax()] == pytest.approx(tone)
    # The same tone sampled at 16 kHz, in phase (away from the edges the filter sees).
    tone_at_16k = 0.5 * np.sin(2 * np.pi * tone * np.arange(24000) / 16000)
    middle = slice(1000, -1000)
    np.testing.assert_allclose(wav[middle], tone_at_16k[middle], rtol=0, atol=1e-3)


@pytest.mark.parametrize("rate", [16000, 8000])
def test_short_audio_is_repeated_up_to_the_minimum(tmp_path, rate, caplog):
    signal = voice(0.1, rate, 200)
    path = tmp_path / "short.wav"
    soundfile.write(path, signal, rate, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        wav = load_utterance(str(path), 16000).numpy()
    once = torchaudio.functional.resample(torch.from_numpy(signal), rate, 16000).numpy()
    assert len(once) == 1600
    minimum = int(MIN_SECONDS * 16000)
    assert len(wav) == minimum > 2 * len(once)
    np.testing.assert_allclose(wav, np.tile(once, 3)[:minimum], rtol=0, atol=1e-7)
    assert str(path) in caplog.text and "repeated" in caplog.text


@pytest.mark.parametrize(
    "rate, seconds, extra, piece_seconds",
    [(48000, 180, 1234, 60), (44100, 10, 7, 2), (8000, 10, 3, 2)],
)
def test_resampling_in_pieces_equals_one_pass(rate, seconds, extra, piece_seconds):
    generator = torch.Generator().manual_seed(rate)
    wav = 0.1 * torch.randn(seconds * rate + extra, generator=generator)
    assert len(wav) > 2 * piece_seconds * rate  # so it is cut into pieces
    pieces = resample(wav, rate, 16000, piece_seconds=piece_seconds)
    one_pass = torchaudio.functional.resample(wav, rate, 16000)
    assert pieces.shape == one_pass.shape
    torch.testing.assert_close(pieces, one_pass, rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_audio_is_down_mixed_in_blocks_as_in_one_pass(tmp_path, monkeypatch,
                                                                   channels):
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 1000)  # several blocks and a partial one
    rng = np.random.default_rng(channels)
    path = tmp_path / "many.wav"
    soundfile.write(path, 0.1 * rng.standard_normal((4321, channels)), 48000, subtype="FLOAT")
    whole = soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    wav, rate = read_audio(str(path))
    assert rate == 48000 and wav.dtype == torch.float32
    np.testing.assert_array_equal(wav.numpy(), whole)
    part, _ = read_audio(str(path), start=1500, stop=3700)
    np.testing.assert_array_equal(part.numpy(), whole[1500:3700])
    resampled, _ = read_audio(str(path), sample_rate=16000)
    expected = torchaudio.functional.resample(torch.from_numpy(whole), 48000, 16000)
    torch.testing.assert_close(resampled, expected, rtol=0, atol=1e-6)
