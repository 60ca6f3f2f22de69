"""Using model folders: checked audio, and ``dmha embed / age / verify / score / import-seed``.

The references share no code path with what they check: audio is read by
soundfile and resampled by torchaudio in the test (resampled tones are checked
against the tone itself); embeddings come from SpeechBrain's own
``EncoderClassifier``, one file at a time (exact for a batch of one); age
heads are rebuilt from the saved state dicts; EER and minDCF are
SpeechBrain's; s-norm is a loop written here. The model folders are tiny
random models, written once per module.
"""

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.utils.metric_stats import EER, minDCF

from dmha_modules import cli, encoders, inference
from dmha_modules.audio import resample
from dmha_modules.export import write_model_folder
from dmha_modules.features import LogMelFeatures, UtteranceNorm
from dmha_modules.inference import MIN_SECONDS, AudioError, load_utterance
from dmha_modules.losses import AgeRegressionHead, Classifier
from dmha_modules.models import EmbeddingModel

KWARGS = dict(channels=16, heads=4, emb_dim=32)
EMB = KWARGS["emb_dim"]
AGE_GROUPS = ["child", "teens", "twenties", "thirties+"]
GROUP_CENTRES = [9.5, 16.0, 24.5, 37.0]
SPEAKER_THRESHOLD = 0.5
AM_SCALE = 30.0
# Good files of the module's audio folder: (rate, seconds, f0, channels, format/subtype).
AUDIO = {
    "spk1/a.wav": (16000, 2.0, 120, 1, "PCM_16"),
    "spk1/b.flac": (16000, 1.3, 125, 1, "PCM_16"),
    "spk2/c.wav": (8000, 1.7, 210, 1, "PCM_16"),
    "spk2/d.wav": (44100, 0.9, 220, 2, "PCM_16"),
    "spk3/e.wav": (48000, 3.1, 160, 1, "FLOAT"),
    "spk3/f.wav": (16000, 0.6, 170, 1, "FLOAT"),
}


# ---------------------------------------------------------------- signals and models


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


def reference_wav(path, rate=16000):
    """The file as a model takes it, computed here: channel mean, torchaudio resampling."""
    audio, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.mean(axis=1))
    if file_rate != rate:
        wav = torchaudio.functional.resample(wav, file_rate, rate)
    return wav


def calibrated_modules(seed, n_classes, cosine=True, age_head=False):
    """Tiny random modules whose BatchNorm statistics centre the embeddings.

    Untrained, the embeddings of all inputs point the same way (cosines near
    1); with the statistics of a few inputs they differ, so the comparisons
    below can fail.
    """
    torch.manual_seed(seed)
    modules = dict(
        compute_features=LogMelFeatures(),
        mean_var_norm=UtteranceNorm(),
        embedding_model=EmbeddingModel(**KWARGS).eval(),
        classifier=Classifier(EMB, n_classes=n_classes, hidden_size=EMB, cosine=cosine),
    )
    model = modules["embedding_model"]
    captured = []
    hook = model.norm.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    with torch.no_grad():
        for i in range(8):
            wav = torch.from_numpy(voice(1.5, 16000, 100 + 25 * i, seed=i))[None]
            model(modules["mean_var_norm"](modules["compute_features"](wav)))
        hook.remove()
        stats = torch.cat(captured)
        model.norm.running_mean.copy_(stats.mean(0))
        model.norm.running_var.copy_(stats.var(0) + 1e-4)
    if age_head:
        modules["age_head"] = AgeRegressionHead(EMB)
        modules["age_head"].set_age_stats(24.0, 9.0)
    return modules


def encoder(labels):
    label_encoder = CategoricalEncoder()
    label_encoder.update_from_iterable(labels)
    return label_encoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model folders: ``speaker`` (threshold 0.5), ``age`` (years head, logits) and
    ``age_centres`` (no years head, cosine classifier at AM-Softmax scale)."""
    root = tmp_path_factory.mktemp("models")
    sample = torch.from_numpy(voice(1.0, 16000, 140))
    spec = ("dmha_modules.models.EmbeddingModel", KWARGS)
    folders = {name: root / name for name in ("speaker", "age", "age_centres")}
    write_model_folder(
        str(folders["speaker"]), calibrated_modules(0, 5), spec,
        encoder([f"s{i}" for i in range(5)]), sample,
        verification_threshold=SPEAKER_THRESHOLD,
    )
    write_model_folder(
        str(folders["age"]), calibrated_modules(1, 4, cosine=False, age_head=True), spec,
        encoder(AGE_GROUPS), sample, task="age",
        age_decoding=dict(group_posteriors="softmax", score_scale=1.0,
                          group_centres=GROUP_CENTRES),
    )
    write_model_folder(
        str(folders["age_centres"]), calibrated_modules(2, 4), spec, encoder(AGE_GROUPS),
        sample, task="age",
        age_decoding=dict(group_posteriors="softmax", score_scale=AM_SCALE,
                          group_centres=GROUP_CENTRES),
    )
    return folders


@pytest.fixture(scope="module")
def speechbrain(models, tmp_path_factory):
    """``speechbrain(name)``: the folder loaded by SpeechBrain's own EncoderClassifier."""
    savedir = tmp_path_factory.mktemp("speechbrain")
    loaded = {}

    def load(name):
        if name not in loaded:
            loaded[name] = EncoderClassifier.from_hparams(
                source=str(models[name]), savedir=str(savedir / name)
            )
        return loaded[name]

    return load


@pytest.fixture(scope="module")
def reference(speechbrain):
    """``reference(name, path)``: SpeechBrain's embedding ``(E,)`` of one file."""

    cache = {}

    def embed(name, path):
        if (name, str(path)) not in cache:
            with torch.no_grad():
                wav = reference_wav(path)[None]
                cache[name, str(path)] = speechbrain(name).encode_batch(wav)[0, 0].numpy()
        return cache[name, str(path)]

    return embed


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A folder of the good files of ``AUDIO`` (3 speakers, 4 rates, a stereo file)."""
    root = tmp_path_factory.mktemp("audio")
    for seed, (name, (rate, seconds, f0, channels, subtype)) in enumerate(AUDIO.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / name, voice(seconds, rate, f0, seed, channels), rate,
                        subtype=subtype)
    return root


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
    return {
        folder / "empty.wav": "empty file (0 bytes)",
        folder / "zero.wav": "no samples",
        folder / "silent.wav": "silent",
        folder / "nan.wav": "3 samples are NaN",
        folder / "truncated.wav": "truncated (1000 bytes of audio data missing)",
        folder / "cut.flac": "corrupt audio",
        folder / "text.wav": "not a readable audio file",
        folder / "missing.wav": "no such file",
    }


def run_cli(capsys, *args):
    """``dmha args`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def cosine(a, b):
    return float(F.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b), dim=0))


def assert_embeddings_equal(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- load_utterance


@pytest.mark.parametrize(
    "name",
    ["empty.wav", "zero.wav", "silent.wav", "nan.wav", "truncated.wav", "cut.flac",
     "text.wav", "missing.wav"],
)
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


def write_long(path, seconds, seed=0, rate=16000):
    """A buzz changing pitch every 7 s in fresh quiet noise, written a minute at a time."""
    rng = np.random.default_rng(seed)
    t = np.arange(60 * rate) / rate
    buzz = 0.05 * np.sin(2 * np.pi * np.cumsum(100 + 20 * (t // 7 % 9)) / rate)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as out:
        for start in range(0, seconds, 60):
            noise = rng.standard_normal(60 * rate, dtype=np.float32)
            block = (buzz * (1 + start % 420 / 420) + 0.02 * noise).astype(np.float32)
            out.write(block[: min(seconds - start, 60) * rate])


def test_ten_minutes_embedded_in_chunks_equal_one_pass(models, tmp_path, capsys, monkeypatch):
    path = tmp_path / "ten.wav"
    write_long(path, 600)
    calls = {"front_end": 0}
    chunked = encoders.ConvFrontEnd.encode_chunked

    def counting(self, x, steps):
        calls["front_end"] += 1
        return chunked(self, x, steps)

    monkeypatch.setattr(encoders.ConvFrontEnd, "encode_chunked", counting)
    status, out, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--out",
                             tmp_path / "ten.npy", "--no_progress", path)
    assert status == 0, out
    assert calls["front_end"] == 1  # the long file went through the chunked path
    ours = np.load(tmp_path / "ten.npy")[0]

    one_pass = EncoderClassifier.from_hparams(
        source=str(models["speaker"]), savedir=str(tmp_path / "one_pass")
    )
    one_pass.mods.compute_features.chunk_frames = None
    one_pass.mods.embedding_model.front_end.chunk_frames = None
    with torch.no_grad():
        theirs = one_pass.encode_batch(reference_wav(path)[None])[0, 0].numpy()
    assert calls["front_end"] == 1  # and the reference did not
    assert cosine(ours, theirs) >= 0.9999
    assert_embeddings_equal(ours, theirs)


def console_script():
    script = Path(sys.executable).parent / "dmha"
    if not script.exists():
        pytest.skip(f"{script}: the dmha console script is not installed (pip install -e .)")
    return script


def test_console_script_embeds_an_hour_of_audio_in_bounded_memory(models, tmp_path):
    """The installed ``dmha`` script; its peak memory is its own (``wait4``)."""
    script = console_script()
    path = tmp_path / "hour.wav"
    write_long(path, 3600, seed=1)
    assert os.path.getsize(path) > 115_000_000
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [str(script), "embed", "--model", str(models["speaker"]), "--out",
             str(tmp_path / "hour.npy"), "--no_progress", str(path)],
            stdout=stdout, stderr=stderr,
        )
        _, wait_status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(wait_status)
    assert process.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    assert f"1 embeddings written to {tmp_path / 'hour.npy'}" in (tmp_path / "stdout").read_text()
    peak_gb = usage.ru_maxrss * 1024 / 1e9  # KiB on Linux
    print(f"peak RSS of dmha embed on one hour of audio: {peak_gb:.2f} GB")
    # Measured: 1.25-1.45 GB, of which about 0.6 GB is torch and SpeechBrain and 0.7 GB
    # copies of the waveform; 3.4 GB with the log-mel spectra computed in one pass. (The
    # tiny model's front-end is too small for memory to tell its chunks: the ten-minute
    # test checks those.)
    assert peak_gb < 2.4
    embedding = np.load(tmp_path / "hour.npy")
    assert embedding.shape == (1, EMB) and np.isfinite(embedding).all()


# ---------------------------------------------------------------- dmha embed


@pytest.mark.parametrize("batch_seconds", ["120", "2.5"])
def test_embed_files_equal_speechbrain_one_at_a_time(
    models, audio, reference, tmp_path, capsys, batch_seconds
):
    paths = [audio / name for name in AUDIO]
    out = tmp_path / "emb.npz"
    status, stdout, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--out", out,
                                "--batch_seconds", batch_seconds, "--no_progress", *paths)
    assert status == 0
    assert f"{len(paths)} embeddings written to {out}" in stdout
    saved = np.load(out)
    assert sorted(saved.files) == sorted(os.path.splitext(str(p))[0] for p in paths)
    for path in paths:
        ours = saved[os.path.splitext(str(path))[0]]
        assert ours.dtype == np.float32 and ours.shape == (EMB,)
        assert_embeddings_equal(ours, reference("speaker", path))
    # The check is informative: the files' embeddings differ.
    assert cosine(saved[str(audio / "spk1/a")], saved[str(audio / "spk3/e")]) < 0.99


def test_embed_list_of_paths_and_of_ids_to_npy(models, audio, reference, tmp_path, capsys):
    listing = tmp_path / "wav.scp"
    listing.write_text(
        f"utt_c {audio / 'spk2/c.wav'}\n"
        f"{audio / 'spk1/a.wav'}\n"
        "\n"
        f"utt_e {audio / 'spk3/e.wav'}\n",
        encoding="utf-8",
    )
    out = tmp_path / "emb.npy"
    status, stdout, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--list",
                                listing, "--out", out, "--no_progress")
    assert status == 0
    ids = (tmp_path / "emb.txt").read_text(encoding="utf-8").splitlines()
    assert ids == ["utt_c", str(audio / "spk1/a"), "utt_e"]
    matrix = np.load(out)
    assert matrix.shape == (3, EMB) and matrix.dtype == np.float32
    for row, name in zip(matrix, ["spk2/c.wav", "spk1/a.wav", "spk3/e.wav"]):
        assert_embeddings_equal(row, reference("speaker", audio / name))


def test_embed_folder_to_kaldi_ark(models, audio, reference, tmp_path, capsys):
    out = tmp_path / "emb.ark"
    status, stdout, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--folder",
                                audio, "--out", out, "--no_progress")
    assert status == 0
    assert f"{out}, {tmp_path / 'emb.scp'}" in stdout
    expected = sorted(os.path.splitext(name)[0] for name in AUDIO)
    table = kaldiio.load_scp(str(tmp_path / "emb.scp"))
    assert sorted(table) == expected
    for name in AUDIO:
        ours = table[os.path.splitext(name)[0]]
        assert_embeddings_equal(ours, reference("speaker", audio / name))
    assert [key for key, _ in kaldiio.load_ark(str(out))] == expected


def test_embed_reports_bad_files_and_writes_the_others(
    models, audio, reference, tmp_path, capsys
):
    bad = write_bad_files(tmp_path / "bad")
    good = [audio / "spk1/a.wav", audio / "spk2/d.wav"]
    paths = [good[0], *bad, good[1]]
    out = tmp_path / "emb.npz"
    status, stdout, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--out",
                                     out, "--no_progress", *paths)
    assert status == 1
    assert f"2 embeddings written to {out}; {len(bad)} files failed" in stdout
    reported = [line for line in stderr.splitlines() if line.startswith("dmha: skipped ")]
    assert len(reported) == len(bad)
    for path, words in bad.items():
        line = next(line for line in reported if line.startswith(f"dmha: skipped {path}: "))
        assert words in line
    saved = np.load(out)
    assert sorted(saved.files) == sorted(os.path.splitext(str(p))[0] for p in good)
    for path in good:
        assert_embeddings_equal(saved[os.path.splitext(str(path))[0]], reference("speaker", path))


def test_embed_input_errors_are_reported_before_any_work(models, audio, tmp_path, capsys):
    model = models["speaker"]
    good = audio / "spk1/a.wav"
    listing = tmp_path / "three.lst"
    listing.write_text(f"{good}\nid {good} extra\n", encoding="utf-8")
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio/readme.txt").write_text("x")
    cases = [
        (["--out", tmp_path / "e.npz"], "no audio given"),
        (["--list", listing, "--out", tmp_path / "e.npz"], f"{listing}:2: expected 'path' or "),
        (["--list", tmp_path / "absent.lst", "--out", tmp_path / "e.npz"], "absent.lst"),
        ([good, good, "--out", tmp_path / "e.npz"], "repeated utterance ids"),
        (["--folder", tmp_path / "no_audio", "--out", tmp_path / "e.npz"], "no audio files"),
    ]
    for args, words in cases:
        status, _, stderr = run_cli(capsys, "embed", "--model", model, "--no_progress", *args)
        assert status == 1 and words in stderr, (args, stderr)
    status, _, stderr = run_cli(capsys, "embed", "--model", tmp_path, "--out",
                                tmp_path / "e.npz", good)
    assert status == 1 and f"{tmp_path}: not a model folder" in stderr
    assert not list(tmp_path.glob("e.*"))


def test_embed_refuses_outputs_it_cannot_write_before_embedding(
    models, tmp_path, capsys, monkeypatch
):
    spaced = tmp_path / "with space"
    spaced.mkdir()
    soundfile.write(spaced / "my file.wav", voice(0.5, 16000, 150), 16000)
    embedded = []
    real = inference.embed_files

    def spy(*args, **kwargs):
        embedded.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "embed_files", spy)
    for out, words in [(tmp_path / "emb.csv", "unknown embedding format"),
                       (tmp_path / "emb.ark", "whitespace")]:
        status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--folder",
                                    spaced, "--out", out, "--no_progress")
        assert status == 1 and words in stderr, stderr
    assert not embedded
    assert sorted(os.listdir(tmp_path)) == ["with space"]


# ---------------------------------------------------------------- dmha age


def read_age_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def reference_ages(models, name, embeddings, cosine_classifier, scale):
    """Probabilities (N, C) and the years head's output (N,) from the saved state dicts."""
    classifier = Classifier(EMB, n_classes=len(AGE_GROUPS), hidden_size=EMB,
                            cosine=cosine_classifier)
    classifier.load_state_dict(torch.load(models[name] / "classifier.ckpt", weights_only=True))
    embeddings = torch.as_tensor(np.stack(embeddings))
    with torch.no_grad():
        probabilities = torch.softmax(scale * classifier(embeddings)[:, 0], dim=1).numpy()
        if not (models[name] / "age_head.ckpt").exists():
            return probabilities, None
        head = AgeRegressionHead(EMB)
        head.load_state_dict(torch.load(models[name] / "age_head.ckpt", weights_only=True))
        return probabilities, head(embeddings).numpy()


def check_age_rows(header, rows, names, audio, probabilities):
    assert header == ["id", "path", "age_group", "age_years"] + [f"p_{g}" for g in AGE_GROUPS]
    assert [row[1] for row in rows] == [str(audio / name) for name in names]
    assert [row[0] for row in rows] == [os.path.splitext(str(audio / n))[0] for n in names]
    ours = np.array([[float(p) for p in row[4:]] for row in rows])
    np.testing.assert_allclose(ours, probabilities, rtol=0, atol=5.1e-5)
    np.testing.assert_allclose(ours.sum(axis=1), 1, rtol=0, atol=len(AGE_GROUPS) * 5e-5)
    for row, p in zip(rows, ours):
        assert row[2] == AGE_GROUPS[p.argmax()]
    assert [row[2] for row in rows] == [AGE_GROUPS[i] for i in probabilities.argmax(axis=1)]
    return ours, np.array([float(row[3]) for row in rows])


def test_age_csv_with_years_head(models, audio, reference, tmp_path, capsys):
    names = list(AUDIO)
    bad = tmp_path / "text.wav"
    bad.write_text("not audio")
    out = tmp_path / "ages.csv"
    status, stdout, stderr = run_cli(capsys, "age", "--model", models["age"], "--out", out,
                                     "--no_progress", *[audio / n for n in names[:3]], bad,
                                     *[audio / n for n in names[3:]])
    assert status == 1
    assert f"dmha: skipped {bad}: not a readable audio file" in stderr
    assert f"{len(names)} ages written to {out}; 1 files failed" in stdout
    embeddings = [reference("age", audio / name) for name in names]
    probabilities, years = reference_ages(models, "age", embeddings, False, 1.0)
    header, rows = read_age_csv(out)
    _, ours = check_age_rows(header, rows, names, audio, probabilities)
    np.testing.assert_allclose(ours, years, rtol=0, atol=5.1e-3)
    assert np.ptp(years) > 0.1  # the years depend on the audio
    assert not list(tmp_path.glob("*.tmp"))


def test_age_without_years_head_weights_the_group_centres(
    models, audio, reference, tmp_path, capsys
):
    names = list(AUDIO)
    out = tmp_path / "ages.csv"
    status, _, _ = run_cli(capsys, "age", "--model", models["age_centres"], "--out", out,
                           "--no_progress", *[audio / n for n in names])
    assert status == 0
    embeddings = [reference("age_centres", audio / name) for name in names]
    probabilities, years = reference_ages(models, "age_centres", embeddings, True, AM_SCALE)
    assert years is None
    header, rows = read_age_csv(out)
    ours_p, ours_years = check_age_rows(header, rows, names, audio, probabilities)
    expected = [sum(p * c for p, c in zip(row, GROUP_CENTRES)) for row in probabilities]
    np.testing.assert_allclose(ours_years, expected, rtol=0, atol=5.1e-3)
    np.testing.assert_allclose(ours_years, ours_p @ np.array(GROUP_CENTRES), rtol=0, atol=0.01)
    assert np.ptp(expected) > 0.1


def test_age_of_a_speaker_model_is_refused(models, audio, tmp_path, capsys):
    out = tmp_path / "ages.csv"
    status, _, stderr = run_cli(capsys, "age", "--model", models["speaker"], "--out", out,
                                "--no_progress", audio / "spk1/a.wav")
    assert status == 1
    assert f"{models['speaker']}: not an age model (task: speaker)" in stderr
    assert not out.exists()


# ---------------------------------------------------------------- dmha verify

VERIFY_LINE = re.compile(r"score (-?\d+\.\d{4}) threshold (-?\d+\.\d{4}): (same speaker|"
                         r"different speakers)")


def verify(capsys, model, enrol, test, *extra):
    status, stdout, stderr = run_cli(capsys, "verify", "--model", model, enrol, test, *extra)
    assert status == 0, stderr
    score, threshold, decision = VERIFY_LINE.search(stdout).groups()
    return float(score), float(threshold), decision


def with_threshold(folder, threshold, out):
    """A copy of a model folder with another verification_threshold."""
    shutil.copytree(folder, out)
    text = (out / "hyperparams.yaml").read_text(encoding="utf-8")
    assert f"verification_threshold: {SPEAKER_THRESHOLD}\n" in text
    (out / "hyperparams.yaml").write_text(
        text.replace(f"verification_threshold: {SPEAKER_THRESHOLD}\n",
                     f"verification_threshold: {threshold}\n"), encoding="utf-8")
    return out


def test_verify_scores_and_decides_at_the_threshold(models, audio, reference, tmp_path, capsys):
    enrol, test = audio / "spk1/a.wav", audio / "spk2/d.wav"
    expected = cosine(reference("speaker", enrol), reference("speaker", test))
    assert abs(expected) < 0.98  # an informative score
    decide = {True: "same speaker", False: "different speakers"}

    score, threshold, said = verify(capsys, models["speaker"], enrol, test)
    assert score == pytest.approx(expected, abs=6e-5)
    assert threshold == SPEAKER_THRESHOLD and said == decide[expected > SPEAKER_THRESHOLD]
    # Thresholds just across the score, from the folder and from --threshold.
    other = round(expected + (0.01 if expected > SPEAKER_THRESHOLD else -0.01), 4)
    folder = with_threshold(models["speaker"], other, tmp_path / "model")
    score, threshold, said = verify(capsys, folder, enrol, test)
    assert threshold == other and said == decide[expected > other]
    assert said != decide[expected > SPEAKER_THRESHOLD]
    score, threshold, said = verify(capsys, folder, enrol, test, "--threshold",
                                    SPEAKER_THRESHOLD)
    assert threshold == SPEAKER_THRESHOLD and said == decide[expected > SPEAKER_THRESHOLD]


def test_verify_needs_a_threshold_for_an_age_model(models, audio, capsys):
    enrol, test = audio / "spk1/a.wav", audio / "spk1/b.flac"
    status, _, stderr = run_cli(capsys, "verify", "--model", models["age"], enrol, test)
    assert status == 1
    assert f"{models['age']} has no verification threshold" in stderr
    assert "--threshold" in stderr
    _, threshold, _ = verify(capsys, models["age"], enrol, test, "--threshold", "0.3")
    assert threshold == 0.3


def test_verify_of_a_bad_file_names_it(models, audio, tmp_path, capsys):
    status, _, stderr = run_cli(capsys, "verify", "--model", models["speaker"],
                                audio / "spk1/a.wav", tmp_path / "absent.wav")
    assert status == 1 and f"{tmp_path / 'absent.wav'}: no such file" in stderr


# ---------------------------------------------------------------- dmha score

SPEAKER_OF = {name: name.split("/")[0] for name in AUDIO}
PAIRS = [(a, b) for i, a in enumerate(AUDIO) for b in list(AUDIO)[i + 1:]]


def trial_lines(kind):
    for enrol, test in PAIRS:
        same = SPEAKER_OF[enrol] == SPEAKER_OF[test]
        if kind == "voxceleb":
            yield f"{int(same)} {enrol} {test}"
        elif kind == "kaldi":
            yield f"{enrol} {test} {'target' if same else 'nontarget'}"
        else:
            yield f"{enrol}\t{test}"


def read_scores(path):
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(len(fields) == 3 for fields in lines)
    return [(e, t) for e, t, _ in lines], np.array([float(s) for *_, s in lines])


@pytest.mark.parametrize("kind", ["voxceleb", "kaldi", "unlabelled"])
def test_score_trial_lists(models, audio, reference, tmp_path, capsys, kind):
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(trial_lines(kind)) + "\n\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                trials, "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0
    assert f"{len(PAIRS)} trials scored into {out}" in stdout
    pairs, scores = read_scores(out)
    assert pairs == PAIRS
    expected = np.array([cosine(reference("speaker", audio / e), reference("speaker", audio / t))
                         for e, t in PAIRS])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert np.ptp(expected) > 0.1
    if kind == "unlabelled":
        assert "EER" not in stdout
        return
    same = np.array([SPEAKER_OF[e] == SPEAKER_OF[t] for e, t in PAIRS])
    positive, negative = torch.tensor(expected[same]), torch.tensor(expected[~same])
    eer, _ = EER(positive, negative)
    cost, _ = minDCF(positive, negative, p_target=0.01)
    match = re.search(r"EER (\d+\.\d\d)% \(threshold (-?\d+\.\d{4})\) "
                      r"minDCF\(p_target=0\.01\) (\d+\.\d{4})", stdout)
    assert match, stdout
    assert float(match[1]) == pytest.approx(100 * eer, abs=0.006)
    assert float(match[3]) == pytest.approx(cost / 0.01, abs=6e-5)


def test_score_with_cohort_applies_adaptive_snorm(models, audio, reference, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(trial_lines("voxceleb")) + "\n", encoding="utf-8")
    cohort_paths = []
    for i, f0 in enumerate([95, 135, 180, 240, 300]):
        path = tmp_path / f"cohort{i}.wav"
        soundfile.write(path, voice(1.0 + 0.3 * i, 16000, f0, seed=20 + i), 16000)
        cohort_paths.append(path)
    cohort_list = tmp_path / "cohort.lst"
    cohort_list.write_text("".join(f"{p}\n" for p in cohort_paths), encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, _, _ = run_cli(capsys, "score", "--model", models["speaker"], "--trials", trials,
                           "--data_root", audio, "--out", out, "--cohort", cohort_list,
                           "--top_n", "3", "--no_progress")
    assert status == 0
    pairs, scores = read_scores(out)
    assert pairs == PAIRS

    embedding = {name: reference("speaker", audio / name) for name in AUDIO}
    cohort = [reference("speaker", path) for path in cohort_paths]

    def top_stats(name):
        best = sorted((cosine(embedding[name], c) for c in cohort), reverse=True)[:3]
        mean = sum(best) / 3
        return mean, (sum((b - mean) ** 2 for b in best) / 3) ** 0.5

    expected, raw = [], []
    for enrol, test in PAIRS:
        score = cosine(embedding[enrol], embedding[test])
        (m_e, s_e), (m_t, s_t) = top_stats(enrol), top_stats(test)
        expected.append(((score - m_e) / s_e + (score - m_t) / s_t) / 2)
        raw.append(score)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(np.array(expected) - np.array(raw)).max() > 0.5  # s-norm changed them


def test_score_skips_trials_of_failed_files(models, audio, reference, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk1/a.wav spk1/b.flac\n0 spk1/a.wav missing.wav\n"
                      "0 spk1/b.flac spk3/e.wav\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", audio, "--out", out,
                                     "--no_progress")
    assert status == 1
    assert f"dmha: skipped {audio / 'missing.wav'}: no such file" in stderr
    assert "2 trials scored" in stdout and "1 skipped for failed files" in stdout
    pairs, scores = read_scores(out)
    assert pairs == [("spk1/a.wav", "spk1/b.flac"), ("spk1/b.flac", "spk3/e.wav")]
    for (e, t), score in zip(pairs, scores):
        expected = cosine(reference("speaker", audio / e), reference("speaker", audio / t))
        assert score == pytest.approx(expected, abs=1e-5)


def test_score_with_every_trial_skipped_writes_no_scores(models, audio, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk1/a.wav missing.wav\n", encoding="utf-8")
    cohort = tmp_path / "cohort.lst"
    cohort.write_text(f"{audio / 'spk2/c.wav'}\n{audio / 'spk3/e.wav'}\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", audio, "--out", out, "--cohort",
                                     cohort, "--no_progress")
    assert status == 1, stderr
    assert "0 trials scored" in stdout and "1 skipped for failed files" in stdout
    assert out.read_text(encoding="utf-8") == ""


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1 a.wav b.wav\n1 a.wav\tb.wav c.wav\n", 2, "expected 'label enrol test'"),
        ("\na.wav b.wav target\na.wav b.wav maybe\n", 3, "expected 'label enrol test'"),
        ("a.wav\n", 1, "expected 'label enrol test'"),
    ],
)
def test_malformed_trial_lines_are_named(models, tmp_path, capsys, text, line, words):
    trials = tmp_path / "trials.txt"
    trials.write_text(text, encoding="utf-8")
    status, _, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                trials, "--out", tmp_path / "scores.txt")
    assert status == 1
    assert f"dmha: {trials}:{line}: {words}" in stderr
    assert not (tmp_path / "scores.txt").exists()


def test_mixed_and_empty_trial_lists_are_refused(models, tmp_path, capsys):
    for text, words in [("1 a.wav b.wav\na.wav c.wav\n", "some trials are labelled and some"),
                        ("\n\n", "no trials")]:
        trials = tmp_path / "trials.txt"
        trials.write_text(text, encoding="utf-8")
        status, _, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                    trials, "--out", tmp_path / "scores.txt")
        assert status == 1 and f"{trials}: {words}" in stderr


# ---------------------------------------------------------------- dmha import-seed


def test_import_seed_end_to_end(tmp_path, capsys, monkeypatch):
    from test_seed import cmn, random_seed_model, save_seed, seed_settings

    settings = seed_settings("VGG4L", "DoubleMHA")
    seed_model = random_seed_model(settings)
    checkpoint, config = save_seed(seed_model, settings, tmp_path)
    folder = tmp_path / "imported"
    status, stdout, _ = run_cli(capsys, "import-seed", "--checkpoint", checkpoint, "--config",
                                config, "--out", folder)
    assert status == 0
    assert f"{folder}: written; reloads strictly" in stdout

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "sb"))
    monkeypatch.undo()
    assert len(loaded.hparams.label_encoder) == settings.num_spkrs

    seed_embeddings = []
    for f0, seconds in [(110, 2.0), (230, 1.6)]:
        wav = torch.from_numpy(voice(seconds, 16000, f0, seed=f0))[None]
        with torch.no_grad():
            ours = loaded.encode_batch(wav)[:, 0]
            feats = cmn(LogMelFeatures(sample_rate=16000, n_mels=80)(wav))
            theirs = seed_model.getEmbedding(feats)
            seed_cosines, _ = seed_model(feats, torch.tensor([0]))
            our_cosines = loaded.mods.classifier(ours)[:, 0]
        assert F.cosine_similarity(ours, theirs).item() >= 0.9999
        torch.testing.assert_close(our_cosines, seed_cosines, rtol=0, atol=1e-4)
        seed_embeddings.append(theirs)
    assert F.cosine_similarity(*seed_embeddings).item() < 0.99


# ---------------------------------------------------------------- real speech


def link_files(files, root, into):
    """Symbolic links to ``files`` under ``into``, keeping their paths below ``root``."""
    for path in files:
        link = into / path.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)


def test_real_speech_embed_folders(shared_data, models, reference, tmp_path, capsys):
    libri = shared_data / "librispeech-test-other-10spk"
    fsdd = shared_data / "fsdd"
    speakers = sorted(p.name for p in libri.iterdir() if p.is_dir())[:3]
    files = [f for s in speakers for f in sorted((libri / s).glob("*.flac"))[:4]]
    digits = [f for s in ("george", "jackson") for f in sorted((fsdd / s).glob("*.flac"))[:6]]
    link_files(files, libri, tmp_path / "libri")
    link_files(digits, fsdd, tmp_path / "fsdd")
    for name, root, chosen in [("libri", libri, files), ("fsdd", fsdd, digits)]:
        out = tmp_path / f"{name}.npz"
        status, stdout, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--folder",
                                    tmp_path / name, "--out", out, "--no_progress")
        assert status == 0, stdout
        saved = np.load(out)
        expected_ids = sorted(os.path.splitext(str(f.relative_to(root)))[0] for f in chosen)
        assert sorted(saved.files) == expected_ids and len(expected_ids) == 12
        matrix = np.stack([saved[i] for i in expected_ids])
        assert np.isfinite(matrix).all() and matrix.shape == (12, EMB)
        assert len(np.unique(matrix.round(4), axis=0)) == 12
        # One real file of each corpus (fsdd: 8 kHz, resampled) against SpeechBrain.
        assert_embeddings_equal(saved[expected_ids[-1]],
                                reference("speaker", root / chosen[-1].relative_to(root)))
    assert soundfile.info(str(digits[0])).samplerate == 8000


def test_real_speech_age(shared_data, models, tmp_path, capsys):
    corpus = shared_data / "speechocean762"
    scp = (corpus / "train" / "wav.scp").read_text(encoding="utf-8").split("\n")[::150]
    entries = [line.split() for line in scp if line.strip()][:10]
    listing = tmp_path / "wav.scp"
    listing.write_text("".join(f"{u} {corpus / p}\n" for u, p in entries), encoding="utf-8")
    out = tmp_path / "ages.csv"
    status, _, stderr = run_cli(capsys, "age", "--model", models["age"], "--list", listing,
                                "--out", out, "--no_progress")
    assert status == 0, stderr
    header, rows = read_age_csv(out)
    assert [row[0] for row in rows] == [u for u, _ in entries]
    assert all(row[2] in AGE_GROUPS for row in rows)
    years = np.array([float(row[3]) for row in rows])
    probabilities = np.array([[float(p) for p in row[4:]] for row in rows])
    assert np.isfinite(years).all() and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=len(AGE_GROUPS) * 5e-5)


def test_real_speech_score(shared_data, models, tmp_path, capsys):
    libri = shared_data / "librispeech-test-other-10spk"
    speakers = sorted(p.name for p in libri.iterdir() if p.is_dir())[3:7]
    files = [f"{s}/{f.name}" for s in speakers for f in sorted((libri / s).glob("*.flac"))[:3]]
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
             for i, a in enumerate(files) for b in files[i + 1:]]
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", libri, "--out", out, "--no_progress")
    assert status == 0, stderr
    pairs, scores = read_scores(out)
    assert len(pairs) == len(lines) == 66
    assert pairs == [tuple(line.split()[1:]) for line in lines]
    assert np.isfinite(scores).all() and (np.abs(scores) <= 1 + 1e-6).all()
    eer = float(re.search(r"EER (\d+\.\d\d)%", stdout)[1])
    assert 0 <= eer <= 100

