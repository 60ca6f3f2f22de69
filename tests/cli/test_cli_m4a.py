"""``dmha`` verbs on AAC ``.m4a`` files: the same results as on the same audio in WAV.

``dmha features`` is checked against the original code's features (librosa) of that audio.

The reference WAV is the ``.m4a`` decoded here, directly with PyAV (every
frame, cut to the encoded length), written as float WAV: ``dmha`` reading
the ``.m4a`` must give the embedding of that WAV file (issue 28,
acceptance 1: cosine >= 0.999).
"""

import av
import numpy as np
import pytest
import soundfile
from tests.audio_helpers import write_m4a
from tests.cli.cli_helpers import cosine, run_cli
from tests.cli.test_cli_age import read_age_csv
from tests.cli.test_cli_verify import verify
from tests.test_feature_files import check_features
from tests.test_inference import voice


def decoded_to_wav(m4a, wav, samples):
    """The audio of ``m4a`` decoded by PyAV alone, cut to ``samples``, written to ``wav``."""
    with av.open(str(m4a)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        decoded = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(stream)])
    soundfile.write(wav, decoded[:samples], rate, subtype="FLOAT")
    return wav


def embed(capsys, model, out, *paths):
    status, stdout, stderr = run_cli(capsys, "embed", "--model", model, "--out", out,
                                     "--no_progress", *paths)
    assert status == 0, stderr
    saved = np.load(out)
    return [saved[key] for key in saved.files]


def m4a_and_wav(folder, name, samples, rate):
    m4a = write_m4a(folder / f"{name}.m4a", samples, rate)
    (folder / "wav").mkdir(exist_ok=True)
    return m4a, decoded_to_wav(m4a, folder / "wav" / f"{name}.wav", len(samples))


def test_embed_m4a_equals_the_same_audio_in_wav(models, tmp_path, capsys):
    pairs = [m4a_and_wav(tmp_path, f"v{seed}", voice(1.0 + seed, rate, 110 + 40 * seed, seed), rate)
             for seed, rate in enumerate((16000, 8000, 44100))]
    from_m4a = embed(capsys, models["speaker"], tmp_path / "m4a.npz", *[m for m, _ in pairs])
    from_wav = embed(capsys, models["speaker"], tmp_path / "wav.npz", *[w for _, w in pairs])
    for ours, theirs in zip(from_m4a, from_wav):
        assert cosine(ours, theirs) >= 0.999


def test_real_speech_m4a_through_embed_verify_and_age(shared_data, models, tmp_path, capsys):
    libri = shared_data / "librispeech-test-other-10spk"
    files = [sorted((libri / speaker).glob("*.flac"))[0]
             for speaker in sorted(p.name for p in libri.iterdir() if p.is_dir())[:3]]
    pairs = []
    for index, path in enumerate(files):
        samples, rate = soundfile.read(path, dtype="float32")
        pairs.append(m4a_and_wav(tmp_path, f"u{index}", samples, rate))
    from_m4a = embed(capsys, models["speaker"], tmp_path / "m4a.npz", *[m for m, _ in pairs])
    from_wav = embed(capsys, models["speaker"], tmp_path / "wav.npz", *[w for _, w in pairs])
    for ours, theirs in zip(from_m4a, from_wav):
        assert cosine(ours, theirs) >= 0.999
    (m4a_a, wav_a), (m4a_b, wav_b) = pairs[:2]
    from_m4a = verify(capsys, models["speaker"], m4a_a, m4a_b)
    from_wav = verify(capsys, models["speaker"], wav_a, wav_b)
    assert from_m4a[0] == pytest.approx(from_wav[0], abs=2e-3)
    status, _, stderr = run_cli(capsys, "age", "--model", models["age"], "--out",
                                tmp_path / "ages.csv", "--no_progress", m4a_a, wav_a)
    assert status == 0, stderr
    header, rows = read_age_csv(tmp_path / "ages.csv")
    years = [float(row[header.index("age_years")]) for row in rows]
    assert years[0] == pytest.approx(years[1], abs=0.05)


def test_features_of_an_m4a_are_those_of_its_decoded_audio(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "spk1").mkdir(parents=True)
    samples = voice(1.5, 16000, 150)
    m4a = write_m4a(data / "spk1" / "a.m4a", samples, 16000)
    wav = decoded_to_wav(m4a, tmp_path / "a.wav", len(samples))
    listing = data / "files.lst"
    listing.write_text("spk1/a.m4a\n", encoding="utf-8")
    status, stdout, stderr = run_cli(capsys, "features", "-i", listing, "--data_dir", data,
                                     "--jobs", "1")
    assert status == 0, stderr
    decoded = soundfile.read(wav, dtype="float32")[0]
    check_features(data / "spk1" / "a.npy", decoded, 16000)
