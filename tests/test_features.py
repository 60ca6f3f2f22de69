"""Log-mel features against independent librosa implementations of the original's recipe (docs/original-model.md).

Both framings: ``"window"`` (windows from sample 0, the project's default)
against ``librosa_log_mel``, and ``"original"`` against ``original_mfsc``,
librosa called exactly as the original's ``featureExtractor.mfsc``.
"""

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm


def librosa_log_mel(y, sr, n_mels=80):
    """docs/original-model.md "Features", steps 1-5, with numpy and librosa, in float64.

    Frames are ``win`` samples starting every ``hop`` samples, no centring.
    librosa's ``center=False`` STFT frames ``n_fft`` samples with the window
    centred in them, so padding ``(n_fft - win) / 2`` zeros on each side gives
    exactly those frames.
    """
    win, hop = int(0.025 * sr), int(0.010 * sr)
    n_fft = max(512, win)
    y = np.asarray(y, dtype=np.float64) * 32768
    y = np.concatenate([[y[0] * (1 - 0.97)], y[1:] - 0.97 * y[:-1]])
    side = (n_fft - win) // 2
    y = np.pad(y, (side, n_fft - win - side))
    magnitude = np.abs(
        librosa.stft(
            y,
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            window="hamming",
            center=False,
        )
    )
    mel = librosa.feature.melspectrogram(
        S=magnitude, sr=sr, n_mels=n_mels, fmin=0, fmax=sr / 2, norm=None
    )
    return np.log(np.maximum(1, mel)).T


def original_mfsc(y, sfr):
    """The original's ``featureExtractor.mfsc``, as it calls librosa: ``(80, frames)``.

    ``y`` is what ``soundfile.read`` gives (float64); it is copied, not
    scaled in place as there.
    """
    win_length, hop_length = int(sfr * 0.025), int(sfr * 0.010)
    y = y * 32768
    y[1:] = y[1:] - 0.97 * y[:-1]
    y[0] *= 1 - 0.97
    stft = librosa.stft(
        y,
        n_fft=512,
        hop_length=hop_length,
        win_length=win_length,
        window="hamming",
        center=False,
    )
    mel = librosa.feature.melspectrogram(
        S=np.abs(stft), sr=sfr, n_mels=80, fmin=0, fmax=sfr / 2, norm=None
    )
    return np.log(np.maximum(1, mel))


def real_speech(shared_data):
    """A few real utterances at 16 kHz (speechocean762) and 8 kHz (FSDD)."""
    scp = (
        (shared_data / "speechocean762" / "train" / "wav.scp")
        .read_text()
        .splitlines()[:3]
    )
    paths = [shared_data / "speechocean762" / line.split()[1] for line in scp]
    paths += sorted((shared_data / "fsdd" / "george").glob("*.flac"))[:3]
    return paths


def test_matches_librosa_on_real_speech(shared_data):
    rates = set()
    for path in real_speech(shared_data):
        y, sr = sf.read(path, dtype="float32")
        rates.add(sr)
        reference = librosa_log_mel(y, sr)
        ours = (
            LogMelFeatures(sample_rate=sr)(torch.from_numpy(y)[None])[0]
            .double()
            .numpy()
        )
        assert (
            ours.shape
            == reference.shape
            == (1 + (len(y) - int(0.025 * sr)) // int(0.01 * sr), 80)
        )
        assert np.abs(ours - reference).max() <= 1e-3, path
        # CMN and CMVN as step 6 of docs/original-model.md defines them.
        cmn = UtteranceNorm()(torch.from_numpy(ours)[None])[0].numpy()
        np.testing.assert_allclose(cmn, reference - reference.mean(axis=0), atol=1e-3)
        std = reference.std(axis=0)
        cmvn_ref = (reference - reference.mean(axis=0)) / np.where(std > 0.01, std, 1)
        cmvn = UtteranceNorm(std_norm=True)(torch.from_numpy(ours)[None])[0].numpy()
        np.testing.assert_allclose(cmvn, cmvn_ref, atol=1e-3)
    assert rates == {16000, 8000}


@pytest.mark.parametrize("sample_rate", [22050, 44100])
def test_matches_librosa_at_other_rates(sample_rate):
    # Above 20.48 kHz the 25 ms window exceeds 512 samples and n_fft grows to it.
    rng = np.random.default_rng(0)
    t = np.arange(int(0.7 * sample_rate)) / sample_rate
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    ours = (
        LogMelFeatures(sample_rate=sample_rate)(torch.from_numpy(y)[None])[0]
        .double()
        .numpy()
    )
    assert np.abs(ours - librosa_log_mel(y, sample_rate)).max() <= 1e-3


def test_original_framing_matches_the_original_on_real_speech(shared_data):
    rates = set()
    for path in real_speech(shared_data):
        y, sr = sf.read(path)
        rates.add(sr)
        reference = original_mfsc(y, sr).T
        ours = LogMelFeatures(sample_rate=sr, framing="original")(
            torch.from_numpy(y).float()[None]
        )[0].double().numpy()
        assert ours.shape == reference.shape == (1 + (len(y) - 512) // int(0.01 * sr), 80)
        assert np.abs(ours - reference).max() <= 1e-3, path
    assert rates == {16000, 8000}


@pytest.mark.parametrize("framing", ["window", "original"])
def test_padding_in_a_batch_changes_nothing(framing):
    torch.manual_seed(0)
    short, long = torch.randn(12345) * 0.1, torch.randn(3 * 12345) * 0.1
    batch = torch.zeros(2, long.numel())
    batch[0, : short.numel()], batch[1] = short, long
    lengths = torch.tensor([short.numel() / long.numel(), 1.0])

    compute = LogMelFeatures(16000, framing=framing)
    norm = UtteranceNorm(std_norm=True)
    alone = norm(compute(short[None]))[0]
    frame_lengths = compute.frame_lengths(lengths, batch.shape[1])
    padded = norm(compute(batch, lengths), frame_lengths)[0]

    n = alone.shape[0]
    assert n == 1 + (12345 - compute.frame_length) // 160
    assert torch.round(frame_lengths[0] * padded.shape[0]).item() == n
    torch.testing.assert_close(padded[:n], alone, atol=1e-4, rtol=0)
    assert padded[n:].abs().max() == 0


@pytest.mark.parametrize("framing, samples", [("window", 400), ("original", 512)])
def test_too_short_waveform_is_refused_clearly(framing, samples):
    with pytest.raises(ValueError, match=f"shorter than one {samples}-sample frame"):
        LogMelFeatures(16000, framing=framing)(torch.zeros(1, samples - 1))
    assert LogMelFeatures(16000, framing=framing)(torch.zeros(1, samples)).shape == (1, 1, 80)


@pytest.mark.parametrize("framing, frames", [("window", 298), ("original", 297)])
def test_features_computed_in_chunks_equal_one_pass(framing, frames):
    torch.manual_seed(0)
    wavs = torch.rand(2, 48000) - 0.5
    lengths = torch.tensor([1.0, 0.6])
    one_pass = LogMelFeatures(chunk_frames=None, framing=framing)(wavs, lengths)
    chunked = LogMelFeatures(chunk_frames=77, framing=framing)(wavs, lengths)
    assert chunked.shape == one_pass.shape == (2, frames, 80)
    assert torch.equal(chunked, one_pass)


def test_framing_defaults_to_window_for_existing_model_folders():
    # Model folders written before the option build LogMelFeatures without it.
    assert LogMelFeatures().framing == "window"
    with pytest.raises(ValueError, match="Unknown framing 'centre'"):
        LogMelFeatures(framing="centre")
