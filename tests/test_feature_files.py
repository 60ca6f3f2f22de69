"""Tests of ``dmha features -i files.lst``: the original's feature extraction."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import soundfile

from dmha_modules import cli
from tests.test_features import original_mfsc


def write_audio(path, samples, sample_rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(samples + channels)
    shape = (samples, channels) if channels > 1 else samples
    soundfile.write(path, 0.2 * rng.standard_normal(shape), sample_rate)
    # What the file holds after quantisation, averaged to mono.
    return soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)


def expected_features(signal, sample_rate):
    """The original's pickles: its featureExtractor.mfsc (librosa), (frames, 80)."""
    return original_mfsc(signal.astype(numpy.float64), sample_rate).T


@pytest.fixture
def audio_list(tmp_path):
    """Three files (16 kHz, 8 kHz FLAC, stereo) and their list, original style."""
    data = tmp_path / "data"
    signals = {
        "spk1/a": (write_audio(data / "spk1/a.wav", 8000), 16000),
        "spk1/b": (write_audio(data / "spk1/b.flac", 4000, 8000), 8000),
        "spk2/c": (write_audio(data / "spk2/c.wav", 5000, channels=2), 16000),
    }
    listing = data / "files.lst"
    listing.write_text("spk1/a\nspk1/b\n\nspk2/c.wav\n", encoding="utf-8")
    return data, listing, signals


def check_features(path, signal, sample_rate):
    features = numpy.load(path, allow_pickle=False)
    assert features.dtype == numpy.float32
    # librosa's center=False frames: 512 samples each, every 10 ms.
    assert features.shape == (1 + (len(signal) - 512) // (sample_rate // 100), 80)
    numpy.testing.assert_allclose(
        features, expected_features(signal, sample_rate), rtol=0, atol=1e-3
    )


def test_features_next_to_the_audio(audio_list, capsys):
    data, listing, signals = audio_list
    assert (
        cli.main(
            ["features", "-i", str(listing), "--data_dir", str(data), "--jobs", "1"]
        )
        == 0
    )
    assert "3 feature files written" in capsys.readouterr().out
    for rel, (signal, rate) in signals.items():
        check_features(data / f"{rel}.npy", signal, rate)
    assert not list(data.rglob("*.tmp"))


def test_features_under_out_dir(audio_list, tmp_path):
    data, listing, signals = audio_list
    out = tmp_path / "features"
    status = cli.main(
        [
            "features",
            "-i",
            str(listing),
            "--data-dir",
            str(data),
            "--out_dir",
            str(out),
            "--jobs",
            "1",
        ]
    )
    assert status == 0
    for rel, (signal, rate) in signals.items():
        check_features(out / f"{rel}.npy", signal, rate)
    assert not list(data.rglob("*.npy"))


def test_features_resume_and_overwrite(audio_list):
    data, listing, _ = audio_list
    args = ["features", "-i", str(listing), "--data_dir", str(data), "--jobs", "1"]
    assert cli.main(args) == 0
    target = data / "spk1/a.npy"
    os.utime(target, ns=(10**18 * 3, 10**18 * 3))  # newer than the audio
    assert cli.main(args) == 0
    assert target.stat().st_mtime_ns == 10**18 * 3
    assert cli.main(args + ["--overwrite"]) == 0
    assert target.stat().st_mtime_ns != 10**18 * 3


@pytest.mark.slow
def test_bad_lines_are_reported_and_the_others_complete_in_parallel(
    audio_list, tmp_path, capsys
):
    data, listing, signals = audio_list
    (data / "bad").mkdir()
    (data / "bad/corrupt.wav").write_bytes(b"not audio at all" * 8)
    (data / "bad/empty.wav").write_bytes(b"")
    write_audio(data / "bad/short.wav", 100)
    soundfile.write(data / "bad/zero.wav", numpy.zeros(0), 16000)
    with open(listing, "a", encoding="utf-8") as lines:
        lines.write(
            "bad/missing\nbad/corrupt\nbad/empty\nbad/short\nbad/zero\n"
            "spk1/a.wav\n/elsewhere/x.wav\n"
        )
    out = tmp_path / "features"
    status = cli.main(
        [
            "features",
            "-i",
            str(listing),
            "--data_dir",
            str(data),
            "--out_dir",
            str(out),
            "--jobs",
            "2",
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    expected = {
        5: "audio file not found",
        6: "not a readable audio file",
        7: "empty file (0 bytes)",
        8: "too short",
        9: "no samples",
        10: "duplicate entry 'spk1/a.wav' (first on line 1)",
        11: "lies outside",
    }
    for line, words in expected.items():
        assert (
            f"{listing}:{line}: " in err
            and words in err.split(f"{listing}:{line}: ", 1)[1].split("\n", 1)[0]
        ), (line, err)
    for rel, (signal, rate) in signals.items():
        check_features(out / f"{rel}.npy", signal, rate)
    assert sorted(p.name for p in out.rglob("*")) == [
        "a.npy",
        "b.npy",
        "c.npy",
        "spk1",
        "spk2",
    ]


def test_nan_and_inf_audio_is_refused_and_the_message_says_what_was_written(
    audio_list, tmp_path, capsys
):
    """The audio check of ``dmha embed``; the good files' features are written."""
    data, listing, signals = audio_list
    samples = 0.1 * numpy.ones(4000)
    samples[[7, 900]] = [numpy.nan, numpy.inf]
    (data / "bad").mkdir()
    soundfile.write(data / "bad/nan.wav", samples, 16000, subtype="FLOAT")
    with open(listing, "a", encoding="utf-8") as lines:
        lines.write("bad/nan\n")
    out = tmp_path / "features"
    status = cli.main(["features", "-i", str(listing), "--data_dir", str(data),
                       "--out_dir", str(out), "--jobs", "1"])
    assert status == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dmha")]
    assert err[0] == ("dmha: 1 problem(s) in the input, the features of the other 3 files "
                      "are written:")
    assert err[1] == f"dmha: {listing}:5: {data / 'bad/nan.wav'}: 2 samples are NaN or infinite"
    assert len(err) == 2 and "skip-bad" not in err[0]
    assert not (out / "bad/nan.npy").exists()
    for rel, (signal, rate) in signals.items():
        check_features(out / f"{rel}.npy", signal, rate)


def test_list_with_a_bom_and_paths_with_spaces(tmp_path):
    data = tmp_path / "data"
    signal = write_audio(data / "my speaker/first take.wav", 4000)
    listing = data / "files.lst"
    listing.write_text("\ufeffmy speaker/first take\n", encoding="utf-8")
    assert cli.main(["features", "-i", str(listing), "--data_dir", str(data), "--jobs", "1"]) == 0
    check_features(data / "my speaker/first take.npy", signal, 16000)


def test_missing_list_file(tmp_path, capsys):
    assert cli.main(["features", "-i", str(tmp_path / "absent.lst")]) == 1
    assert "absent.lst" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_is_installed():
    script = shutil.which(
        "dmha",
        path=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    )
    if script is None:
        pytest.skip("the dmha console script is not installed (pip install -e .)")
    result = subprocess.run(
        [script, "features", "--help"], capture_output=True, text=True, check=True
    )
    assert "-i LIST_FILE" in result.stdout
    result = subprocess.run(
        [script, "prepare", "--help"], capture_output=True, text=True, check=True
    )
    for source in ("labels", "kaldi", "commonvoice", "voxceleb"):
        assert source in result.stdout
