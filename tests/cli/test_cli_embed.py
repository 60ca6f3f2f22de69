"""``dmha embed``: embeddings equal SpeechBrain's, every input and output format, bad files.

Long audio goes through the chunked paths and the installed console script
stays in bounded memory on an hour of audio.
"""

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from tests.cli.cli_helpers import (
    AUDIO,
    EMB,
    assert_embeddings_equal,
    cosine,
    reference_wav,
    run_cli,
)
from speechbrain.inference.classifiers import EncoderClassifier
from tests.test_inference import voice, write_bad_files

from dmha_modules import inference

from dmha_modules.nn import front_ends

# ---------------------------------------------------------------- long audio


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
    chunked = front_ends.ConvFrontEnd.encode_chunked

    def counting(self, x, steps):
        calls["front_end"] += 1
        return chunked(self, x, steps)

    monkeypatch.setattr(front_ends.ConvFrontEnd, "encode_chunked", counting)
    status, out, _ = run_cli(capsys, "embed", "--model", models["speaker"], "--out",
                             tmp_path / "ten.npy", "--no_progress", path)
    assert status == 0, out
    assert calls["front_end"] == 1  # the long file went through the chunked path
    ours = np.load(tmp_path / "ten.npy")[0]

    one_pass = EncoderClassifier.from_hparams(
        source=str(models["speaker"]), savedir=str(tmp_path / "one_pass")
    )
    # The folder's feature and embedding modules (inside SpeechBrain's embedding_model).
    one_pass.hparams.compute_features.chunk_frames = None
    one_pass.hparams.embedding_model.front_end.chunk_frames = None
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


@pytest.mark.slow
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
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio/readme.txt").write_text("x")
    cases = [
        (["--out", tmp_path / "e.npz"], "no audio given"),
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
