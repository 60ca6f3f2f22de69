"""Red team: the README's bad inputs through every ``dmha`` command that reads them.

Every case runs the real command line on generated files and checks what a
user sees: one ``dmha:`` line naming the file (and line) of each problem, no
traceback, the good inputs done all the same where the command is a batch
one, and the exit status (1 for input problems, 0 when ``--skip-bad`` dropped
them). The cases are those of the README's lists: bad audio
(``tests/test_inference.py``'s ``write_bad_files``), bad listing files, bad
model folders (``test_cli_model_folders.py`` has their every-verb cases) and
outputs that cannot be written.
"""

import csv
import os
import shutil

import numpy as np
import pytest
import soundfile
from tests.cli.cli_helpers import AUDIO, read_only_folder, run_cli
from tests.prepare.prepare_helpers import make_kaldi_dir, write_audio, write_text
from tests.test_inference import BAD_NAMES, write_bad_files

# Bad audio that an audio header already shows: what ``dmha prepare`` finds
# without decoding (the others are found by the commands that read samples).
HEADER_VISIBLE = ("empty.wav", "zero.wav", "text.wav", "folder.wav", "loop.wav",
                  "broken.wav", "missing.wav")


def dmha_lines(stderr):
    """The ``dmha:`` lines of stderr (progress bars aside); there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("dmha:")]


def assert_named(stderr, *expected):
    """Each ``(file, words)`` is on one ``dmha:`` line of stderr."""
    lines = dmha_lines(stderr)
    for name, words in expected:
        assert any(str(name) in line and words in line for line in lines), (name, words, lines)


@pytest.fixture
def bad(tmp_path):
    """``{path: words its message holds}`` of every kind of bad audio."""
    return write_bad_files(tmp_path / "bad")


@pytest.fixture
def good(audio):
    """Two good files (one stereo 44.1 kHz)."""
    return [audio / "spk1/a.wav", audio / "spk2/d.wav"]


# ---------------------------------------------------------------- audio, commands reading samples


def test_bad_audio_through_embed(models, bad, good, tmp_path, capsys):
    out = tmp_path / "emb.npz"
    status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--out", out,
                                "--no_progress", good[0], *bad, good[1])
    assert status == 1
    assert_named(stderr, *((f"skipped {path}: ", words) for path, words in bad.items()))
    assert sorted(np.load(out).files) == sorted(os.path.splitext(str(p))[0] for p in good)


def test_bad_audio_through_age(models, bad, good, tmp_path, capsys):
    listing = tmp_path / "files.lst"
    listing.write_text("".join(f"{path}\n" for path in [*bad, *good]), encoding="utf-8")
    out = tmp_path / "ages.csv"
    status, _, stderr = run_cli(capsys, "age", "--model", models["age"], "--list", listing,
                                "--out", out, "--no_progress")
    assert status == 1
    assert_named(stderr, *((f"skipped {path}: ", words) for path, words in bad.items()))
    with open(out, newline="", encoding="utf-8") as table:
        assert [row["path"] for row in csv.DictReader(table)] == [str(p) for p in good]


def test_bad_audio_through_score(models, bad, good, audio, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    lines = [f"1 {good[0]} {good[1]}\n"] + [f"0 {good[0]} {path}\n" for path in bad]
    trials.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", "/", "--out", out, "--no_progress")
    assert status == 1
    assert_named(stderr, *((f"skipped {path}: ", words) for path, words in bad.items()))
    assert f"1 trials scored into {out}; {len(bad)} skipped for failed files" in stdout
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_audio_through_verify(models, bad, good, capsys, name):
    path = next(path for path in bad if path.name == name)
    status, _, stderr = run_cli(capsys, "verify", "--model", models["speaker"], good[0], path)
    assert status == 1
    (line,) = dmha_lines(stderr)
    assert line.startswith(f"dmha: {path}: ") and bad[path] in line


def test_bad_audio_through_features(bad, good, tmp_path, capsys):
    """The audio check of the commands above; the good files' features are written."""
    data = tmp_path / "data"
    data.mkdir()
    for path in good:
        shutil.copy(path, data / path.name)
    listing = tmp_path / "files.lst"
    listing.write_text("".join(f"{path}\n" for path in [*bad, *(data / p.name for p in good)]),
                       encoding="utf-8")
    status, _, stderr = run_cli(capsys, "features", "-i", listing, "--jobs", "1")
    assert status == 1
    for line, (path, words) in enumerate(bad.items(), 1):
        found = "audio file not found" if path.name == "missing.wav" else words
        assert_named(stderr, (f"{listing}:{line}: ", found), (path, ""))
    assert dmha_lines(stderr)[0].endswith("the features of the other 2 files are written:")
    assert sorted(p.name for p in data.iterdir()) == ["a.npy", "a.wav", "d.npy", "d.wav"]


# ---------------------------------------------------------------- audio and lists, dmha prepare


def kaldi_corpus(root, bad):
    """A Kaldi data dir of 3 speakers whose ``wav.scp`` also lists each header-visible bad file."""
    make_kaldi_dir(root, "train", ["0001", "0002", "0007"], utterances=2)
    chosen = [path for path in bad if path.name in HEADER_VISIBLE]
    with open(root / "train/wav.scp", "a", encoding="utf-8") as scp, \
            open(root / "train/utt2spk", "a", encoding="utf-8") as utt2spk:
        for index, path in enumerate(chosen):
            scp.write(f"0001bad{index} {path}\n")
            utt2spk.write(f"0001bad{index} 0001\n")
    return {path: 7 + index for index, path in enumerate(chosen)}  # wav.scp lines


@pytest.mark.parametrize("skip_bad", [False, True])
def test_unreadable_audio_through_prepare(bad, tmp_path, capsys, skip_bad):
    data, save = tmp_path / "corpus", tmp_path / "prep"
    lines = kaldi_corpus(data, bad)
    args = ["prepare", "kaldi", "--data_folder", data, "--save_folder", save, "--no-download",
            "--jobs", "1", "--valid_ratio", "0", "--test_ratio", "0"]
    status, stdout, stderr = run_cli(capsys, *args, *(["--skip-bad"] if skip_bad else []))
    wav_scp = data / "train/wav.scp"
    if not skip_bad:
        assert status == 1
        assert_named(stderr, *((f"{wav_scp}:{line}: ", path.name) for path, line in lines.items()))
        assert not save.exists() or not list(save.glob("*.csv"))
        return
    assert status == 0, stderr
    with open(save / "train.csv", newline="", encoding="utf-8") as table:
        assert len(list(csv.DictReader(table))) == 6  # the good utterances
    with open(save / "rejects.csv", newline="", encoding="utf-8") as table:
        assert sorted(int(row["line"]) for row in csv.DictReader(table)) == sorted(lines.values())


LIST_CASES = {
    # name: (source, writes the bad input into the corpus, file, line, words)
    "malformed utt2spk": ("kaldi", lambda d: append(d / "train/utt2spk", "lonely\n"),
                          "train/utt2spk", 7, "malformed line"),
    "duplicate id": ("kaldi", lambda d: append(d / "train/wav.scp", "0001tr0 x.wav\n"),
                     "train/wav.scp", 7, "duplicate ID '0001tr0'"),
    "unknown speaker": ("kaldi", lambda d: write_text(d / "train/spk2age", "0001 6\n0007 21\n"),
                        "train/utt2spk", 3, "unknown speaker '0002'"),
    "age not a number": ("kaldi", lambda d: write_text(d / "train/spk2age",
                                                       "0001 6\n0002 eight\n0007 21\n"),
                         "train/spk2age", 2, "from 0 to 120"),
    "implausible age": ("kaldi", lambda d: write_text(d / "train/spk2age",
                                                      "0001 6\n0002 200\n0007 21\n"),
                        "train/spk2age", 2, "from 0 to 120"),
    "pipe command": ("kaldi", lambda d: append(d / "train/wav.scp", "0009tr0 sox a.wav - |\n"),
                     "train/wav.scp", 7, "pipe commands"),
    "label outside 0..N-1": ("labels", lambda d: append(d / "train.lst", "b -1 -1\n"),
                             "train.lst", 3, "outside 0..1"),
    "label gap": ("labels", lambda d: write_text(d / "train.lst", "a 0 -1\nb 2 -1\n"),
                  "train.lst", 2, "follows a gap"),
    "malformed label line": ("labels", lambda d: append(d / "train.lst", "b 1\n"),
                             "train.lst", 3, "malformed line"),
    "unknown trial path": ("labels", lambda d: write_text(d / "clients.lst", "a nobody\n"),
                           "clients.lst", 1, "'nobody' is not in the valid labels file"),
    "duplicate label path": ("labels", lambda d: append(d / "train.lst", "a 1 -1\n"),
                             "train.lst", 3, "duplicate ID 'a'"),
}


def append(path, text):
    with open(path, "a", encoding="utf-8") as listing:
        listing.write(text)


def source_args(source, data):
    """``dmha prepare <source>`` on a small corpus written under ``data``."""
    if source == "kaldi":
        make_kaldi_dir(data, "train", ["0001", "0002", "0007"])
        return ["kaldi", "--data_folder", data, "--no-download", "--valid_ratio", "0",
                "--test_ratio", "0"]
    for name in ("a", "b"):
        write_audio(data / f"{name}.wav", 0.2)
    write_text(data / "train.lst", "a 0 -1\nb 1 -1\n")
    write_text(data / "valid.lst", "a 0 -1\nb 1 -1\n")
    write_text(data / "clients.lst", "a a\n")
    write_text(data / "impostors.lst", "a b\n")
    return ["labels", "--data_folder", data, "--train_labels", data / "train.lst",
            "--valid_labels", data / "valid.lst", "--trials_clients", data / "clients.lst",
            "--trials_impostors", data / "impostors.lst"]


@pytest.mark.parametrize("case", list(LIST_CASES))
def test_bad_lists_through_prepare(tmp_path, capsys, case):
    source, spoil, name, line, words = LIST_CASES[case]
    data, save = tmp_path / "corpus", tmp_path / "prep"
    args = source_args(source, data)
    spoil(data)
    status, _, stderr = run_cli(capsys, "prepare", *args, "--save_folder", save, "--jobs", "1")
    assert status == 1
    assert_named(stderr, (f"dmha: {data / name}:{line}: ", words))
    assert not save.exists() or not list(save.glob("*.csv"))


# ---------------------------------------------------------------- lists of the model commands


@pytest.mark.parametrize("verb", ["embed", "age"])
def test_bad_lists_through_the_model_commands(models, good, tmp_path, capsys, verb):
    model = models["age" if verb == "age" else "speaker"]
    out = tmp_path / "out"
    cases = [
        (["--list", tmp_path / "absent.lst"], f"{tmp_path / 'absent.lst'}"),
        ([good[0], good[0]], "repeated utterance ids"),
        (["--folder", tmp_path], f"{tmp_path}: no audio files"),
    ]
    for args, words in cases:
        status, _, stderr = run_cli(capsys, verb, "--model", model, "--out", out,
                                    "--no_progress", *args)
        assert status == 1 and any(words in line for line in dmha_lines(stderr)), stderr
    assert not out.exists()


def test_bad_trial_and_cohort_lists_through_score(models, good, tmp_path, capsys):
    trials, cohort = tmp_path / "trials.txt", tmp_path / "cohort.lst"
    trials.write_text(f"\ufeff1 {good[0]} {good[1]}\n1 {good[0]} {good[1]} more\n",
                      encoding="utf-8")
    args = ["score", "--model", models["speaker"], "--trials", trials, "--data_root", "/",
            "--out", tmp_path / "scores.txt", "--no_progress"]
    status, _, stderr = run_cli(capsys, *args)
    assert status == 1 and dmha_lines(stderr)[0].startswith(f"dmha: {trials}:2: expected")
    trials.write_text(f"\ufeff1 {good[0]} {good[1]}\n", encoding="utf-8")
    cohort.write_text(f"\ufeff{good[0]}\n{tmp_path / 'missing.wav'}\n", encoding="utf-8")
    status, _, stderr = run_cli(capsys, *args, "--cohort", cohort)
    assert status == 1
    assert_named(stderr, (tmp_path / "missing.wav", "no such file"),
                 (cohort, "fewer than 2 usable cohort files"))


# ---------------------------------------------------------------- model folders


@pytest.mark.parametrize("verb", ["embed", "age", "verify", "score", "export"])
def test_a_folder_without_hyperparams_through_every_model_command(good, tmp_path, capsys,
                                                                  verb):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    args = {
        "embed": ["--out", tmp_path / "e.npz", good[0]],
        "age": ["--out", tmp_path / "a.csv", good[0]],
        "verify": [good[0], good[1]],
        "score": ["--trials", tmp_path / "t.txt", "--out", tmp_path / "s.txt"],
        "export": ["--onnx"],
    }[verb]
    (tmp_path / "t.txt").write_text(f"1 {good[0]} {good[1]}\n", encoding="utf-8")
    status, _, stderr = run_cli(capsys, verb, "--model", folder, *args)
    assert status == 1
    assert dmha_lines(stderr) == [f"dmha: {folder}: not a model folder (no hyperparams.yaml)"]


# ---------------------------------------------------------------- outputs that cannot be written


def writing_commands(models, good, tmp_path, out):
    """Every command that writes, with its output inside the folder ``out``."""
    (tmp_path / "files.lst").write_text(f"{good[0]}\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text(f"1 {good[0]} {good[1]}\n", encoding="utf-8")
    data = tmp_path / "corpus"
    kaldi = source_args("kaldi", data)
    return {
        "embed": (["embed", "--model", models["speaker"], good[0], "--out", out / "e.npz"],
                  out / "e.npz"),
        "age": (["age", "--model", models["age"], good[0], "--out", out / "a.csv"],
                out / "a.csv"),
        "score": (["score", "--model", models["speaker"], "--trials", tmp_path / "t.txt",
                   "--data_root", "/", "--out", out / "s.txt"], out / "s.txt"),
        "score --plot": (["score", "--model", models["speaker"], "--trials",
                          tmp_path / "t.txt", "--data_root", "/", "--out",
                          tmp_path / "s.txt", "--plot", out / "det.png"], out / "det.png"),
        "features": (["features", "-i", tmp_path / "files.lst", "--data_dir", "/",
                      "--out_dir", out / "feats"], out / "feats"),
        "prepare": (["prepare", *kaldi, "--save_folder", out / "prep"], out / "prep"),
        "export": (["export", "--experiment", tmp_path, "--out", out / "model"],
                   out / "model"),
        "import-original": (["import-original", "--checkpoint", tmp_path / "x.chkpt",
                             "--config", tmp_path / "x.pkl", "--out", out / "model"],
                            out / "model"),
    }


@pytest.mark.parametrize("command", ["embed", "age", "score", "score --plot", "features",
                                     "prepare", "export", "import-original"])
def test_an_output_that_cannot_be_written_through_every_writing_command(
    models, good, tmp_path, capsys, command
):
    with read_only_folder(tmp_path / "read_only") as folder:
        args, output = writing_commands(models, good, tmp_path, folder)[command]
        status, _, stderr = run_cli(capsys, *args)
        assert status == 1
        (line,) = dmha_lines(stderr)
        assert line.startswith(f"dmha: {output}: cannot be written in {folder} (")
        assert os.listdir(folder) == []


def test_bad_audio_of_other_rates_and_channels_is_still_named(models, audio, tmp_path, capsys):
    """NaN samples in one channel of a 44.1 kHz stereo file: the down-mix keeps them."""
    rate, seconds, _, _, _ = AUDIO["spk2/d.wav"]
    samples = 0.1 * np.ones((int(rate * seconds), 2))
    samples[100, 1] = np.nan
    path = tmp_path / "stereo_nan.wav"
    soundfile.write(path, samples, rate, subtype="FLOAT")
    status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--out",
                                tmp_path / "e.npz", "--no_progress", path, audio / "spk1/a.wav")
    assert status == 1
    assert dmha_lines(stderr)[0] == f"dmha: skipped {path}: 1 samples are NaN or infinite"
