"""Tests of ``dmha_modules.data_prep`` and ``dmha prepare``.

Each source gets a small generated corpus whose manifests are checked field
by field; each kind of bad input gets a case asserting that the message names
the file and line and that no manifest was written. The download is tested
against a local HTTP server on 127.0.0.1 only.
"""

import csv
import hashlib
import http.server
import io
import json
import os
import re
import shlex
import socket
import struct
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy
import pytest
import soundfile

from dmha_modules import cli, data_prep
from dmha_modules.data_prep import BadInputError, DownloadError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- helpers


def write_audio(path, seconds=0.1, sample_rate=16000, channels=1, **kwargs):
    """Writes noise of ``seconds`` to ``path``; returns its exact duration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = round(seconds * sample_rate)
    rng = numpy.random.default_rng(frames)
    shape = (frames, channels) if channels > 1 else frames
    soundfile.write(path, 0.1 * rng.standard_normal(shape), sample_rate, **kwargs)
    return frames / sample_rate


def write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as table:
        return list(csv.DictReader(table))


def duration_text(seconds):
    return f"{seconds:.6f}".rstrip("0").rstrip(".")


def assert_nothing_written(save_folder):
    """No manifest, trials, summary or run record exists."""
    written = (
        sorted(p.name for p in Path(save_folder).glob("*"))
        if Path(save_folder).exists()
        else []
    )
    assert not [n for n in written if n.endswith((".csv", ".json", ".tmp"))], written


def assert_reports(error, file, line, *words):
    """The error names ``file:line`` on one line holding all ``words``."""
    where = f"{file}:{line}:" if line is not None else f"{file}:"
    lines = [text for text in str(error).splitlines() if text.startswith(where)]
    assert lines, f"no problem reported at {where} in:\n{error}"
    assert any(all(word in text for word in words) for text in lines), (
        where,
        words,
        str(error),
    )


def mp4_bytes(duration_units, timescale=1000, version=0, moov_last=True):
    """A minimal MP4 (.m4a): ftyp, mdat and moov holding an mvhd box."""

    def box(kind, payload):
        return struct.pack(">I4s", 8 + len(payload), kind) + payload

    if version == 0:
        mvhd = struct.pack(">B3xIIII", 0, 0, 0, timescale, duration_units)
    else:
        mvhd = struct.pack(">B3xQQIQ", 1, 0, 0, timescale, duration_units)
    mvhd += bytes(80)  # rate, volume, matrix, next track: unused here
    moov = box(b"moov", box(b"mvhd", mvhd))
    parts = [box(b"ftyp", b"M4A \x00\x00\x02\x00isomM4A "), box(b"mdat", bytes(300))]
    return b"".join(parts + [moov] if moov_last else [parts[0], moov, parts[1]])


# ----------------------------------------------------------------- audio headers


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
    duration, rate = data_prep.read_audio_header(str(path))
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
    assert data_prep.read_audio_header(str(path)) == (0.1, 16000)


def test_read_audio_header_leaves_truncated_wav_to_libsndfile(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, 0.1)
    path.write_bytes(path.read_bytes()[:1044])  # data chunk claims 3200 bytes
    info = soundfile.info(path)
    assert data_prep.read_audio_header(str(path)) == (info.frames / 16000, 16000)
    assert info.frames == 500


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("moov_last", [True, False])
def test_read_audio_header_reads_mp4_movie_header(tmp_path, version, moov_last):
    path = tmp_path / "a.m4a"
    path.write_bytes(mp4_bytes(2500, 1000, version, moov_last))
    assert data_prep.read_audio_header(str(path)) == (2.5, None)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty (0 bytes)"),
        (b"this is not audio at all" * 10, "unreadable or corrupt"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unreadable or corrupt"),
        (b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00", "no MP4 movie header"),
        (mp4_bytes(2500)[:-95], "corrupt header (truncated)"),
    ],
)
def test_read_audio_header_rejects_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(words)):
        data_prep.read_audio_header(str(path))


def test_read_audio_header_rejects_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, numpy.zeros(0), 16000)
    with pytest.raises(ValueError, match="no samples"):
        data_prep.read_audio_header(str(path))


# ------------------------------------------------------------------ labels files


@pytest.fixture
def labels_corpus(tmp_path):
    """Three speakers' audio (WAV and FLAC), labels and trial files."""
    data = tmp_path / "data"
    durations = {}
    for speaker in range(3):
        for utt in range(3):
            suffix = ".flac" if utt == 2 else ".wav"
            rel = f"spk{speaker}/utt{utt}{suffix}"
            durations[rel] = write_audio(data / rel, 0.1 + 0.01 * utt + 0.1 * speaker)
    write_text(
        data / "train.lst",
        # The original's format: extension optional, third column -1.
        "spk0/utt0 0 -1\nspk0/utt1 0 -1\nspk1/utt0 1 -1\n\n"
        "spk1/utt2 1 -1\nspk2/utt0.wav 2 -1\n",
    )
    write_text(data / "valid.lst", "spk0/utt2 0 -1\nspk2/utt1 2 -1\n")
    write_text(data / "clients.lst", "spk2/utt1 spk2/utt2\n")
    write_text(data / "impostors.lst", "spk0/utt2 spk2/utt2\nspk1/utt1 spk2/utt1\n")
    return data, durations


def prepare_labels(data, save, **kwargs):
    return data_prep.prepare_labels_file(
        str(data), str(save), str(data / "train.lst"), jobs=1, **kwargs
    )


def test_labels_manifests_field_by_field(labels_corpus, tmp_path):
    data, durations = labels_corpus
    save = tmp_path / "prep"
    outputs = prepare_labels(data, save, valid_labels=str(data / "valid.lst"))
    assert outputs == {
        "train": str(save / "train.csv"),
        "valid": str(save / "valid.csv"),
    }
    train = read_csv(outputs["train"])
    assert list(train[0]) == ["ID", "duration", "wav", "spk_id"]
    expected = [
        ("spk0--utt0", "spk0/utt0.wav", "0"),
        ("spk0--utt1", "spk0/utt1.wav", "0"),
        ("spk1--utt0", "spk1/utt0.wav", "1"),
        ("spk1--utt2", "spk1/utt2.flac", "1"),
        ("spk2--utt0", "spk2/utt0.wav", "2"),
    ]
    assert [(r["ID"], r["wav"], r["spk_id"]) for r in train] == [
        (uid, f"$data_root/{rel}", spk) for uid, rel, spk in expected
    ]
    assert [r["duration"] for r in train] == [
        duration_text(durations[rel]) for _, rel, _ in expected
    ]
    valid = read_csv(outputs["valid"])
    assert [(r["ID"], r["wav"], r["spk_id"]) for r in valid] == [
        ("spk0--utt2", "$data_root/spk0/utt2.flac", "0"),
        ("spk2--utt1", "$data_root/spk2/utt1.wav", "2"),
    ]
    summary = json.loads((save / "summary.json").read_text())
    assert summary["splits"]["train"]["speakers"] == 3
    assert summary["splits"]["train"]["utterances"] == 5
    assert summary["splits"]["valid"]["utterances"] == 2
    assert not (save / "rejects.csv").exists()


def test_labels_manifest_loads_in_speechbrain(labels_corpus, tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    data, _ = labels_corpus
    outputs = prepare_labels(data, tmp_path / "prep")
    dataset = DynamicItemDataset.from_csv(
        outputs["train"], replacements={"data_root": str(data)}
    )
    dataset.set_output_keys(["id", "wav", "duration"])
    for item in dataset:
        assert os.path.isfile(item["wav"])
        assert item["duration"] == pytest.approx(
            soundfile.info(item["wav"]).duration, abs=1e-6
        )


def test_labels_trials_use_valid_manifest_ids(labels_corpus, tmp_path):
    data, _ = labels_corpus
    save = tmp_path / "prep"
    write_text(
        data / "valid.lst",
        "spk0/utt2 0 -1\nspk2/utt1 2 -1\nspk2/utt2 2 -1\nspk1/utt1 1 -1\n",
    )
    outputs = prepare_labels(
        data,
        save,
        valid_labels=str(data / "valid.lst"),
        trials_clients=str(data / "clients.lst"),
        trials_impostors=str(data / "impostors.lst"),
    )
    trials = read_csv(outputs["trials"])
    assert [(t["label"], t["enrol"], t["test"]) for t in trials] == [
        ("1", "spk2--utt1", "spk2--utt2"),
        ("0", "spk0--utt2", "spk2--utt2"),
        ("0", "spk1--utt1", "spk2--utt1"),
    ]
    assert len({t["ID"] for t in trials}) == 3
    valid_ids = {row["ID"] for row in read_csv(outputs["valid"])}
    assert {t["enrol"] for t in trials} | {t["test"] for t in trials} <= valid_ids


def test_labels_trials_without_valid_labels_make_the_valid_manifest(
    labels_corpus, tmp_path
):
    data, durations = labels_corpus
    outputs = prepare_labels(
        data,
        tmp_path / "prep",
        trials_clients=str(data / "clients.lst"),
        trials_impostors=str(data / "impostors.lst"),
    )
    valid = read_csv(outputs["valid"])
    # The original validated on trials alone: their audio, speakers unknown.
    assert [(r["ID"], r["wav"], r["spk_id"], r["duration"]) for r in valid] == [
        (
            rel.rsplit(".", 1)[0].replace("/", "--"),
            f"$data_root/{rel}",
            "",
            duration_text(durations[rel]),
        )
        for rel in (
            "spk2/utt1.wav",
            "spk2/utt2.flac",
            "spk0/utt2.flac",
            "spk1/utt1.wav",
        )
    ]
    assert len(read_csv(outputs["trials"])) == 3


def test_labels_age_variant_fills_age_group(labels_corpus, tmp_path):
    data, _ = labels_corpus
    outputs = prepare_labels(data, tmp_path / "prep", label_kind="age_group")
    train = read_csv(outputs["train"])
    assert list(train[0]) == ["ID", "duration", "wav", "spk_id", "age_group"]
    assert [(r["spk_id"], r["age_group"]) for r in train] == [
        ("", "0"),
        ("", "0"),
        ("", "1"),
        ("", "1"),
        ("", "2"),
    ]
    summary = json.loads((tmp_path / "prep" / "summary.json").read_text())
    assert list(summary["splits"]["train"]["age_groups"]) == ["0", "1", "2"]


def test_labels_valid_data_folder_is_relative_to_data_root(labels_corpus, tmp_path):
    data, _ = labels_corpus
    other = tmp_path / "other"
    write_audio(other / "x" / "y.wav", 0.2)
    write_text(data / "valid.lst", "x/y 1 -1\n")
    outputs = prepare_labels(
        data,
        tmp_path / "prep",
        valid_labels=str(data / "valid.lst"),
        valid_data_folder=str(other),
    )
    (row,) = read_csv(outputs["valid"])
    assert row["wav"] == "$data_root/../other/x/y.wav"
    assert os.path.isfile(row["wav"].replace("$data_root", str(data)))


LABEL_CASES = {
    # name: (line appended to train.lst, extra setup, line, words)
    "missing audio": (
        "spk9/nothing 1 -1",
        None,
        7,
        ("not found", "spk9/nothing.wav", "spk9/nothing.flac"),
    ),
    "corrupt audio": (
        "bad/corrupt 1 -1",
        lambda d: write_text(d / "bad/corrupt.wav", "garbage" * 20),
        7,
        ("corrupt.wav", "unreadable or corrupt"),
    ),
    "empty file": (
        "bad/empty 1 -1",
        lambda d: write_text(d / "bad/empty.wav", ""),
        7,
        ("empty.wav", "empty (0 bytes)"),
    ),
    "zero-length audio": (
        "bad/zero 1 -1",
        lambda d: soundfile.write(d / "bad/zero.wav", numpy.zeros(0), 16000),
        7,
        ("zero.wav", "no samples"),
    ),
    "malformed line": ("spk1/utt1 1", None, 7, ("malformed line", "path label -1")),
    "label not an integer": ("spk1/utt1 one -1", None, 7, ("'one'", "not an integer")),
    "negative label": ("spk1/utt1 -1 -1", None, 7, ("label -1 is outside 0..2",)),
    "duplicate ID": (
        "spk0/utt1.wav 0 -1",
        None,
        7,
        ("duplicate ID 'spk0--utt1'", "first at", ":2"),
    ),
    "label gap": (
        "spk1/utt1 4 -1",
        None,
        7,
        ("label 4 follows a gap", "label 3 never used", "0..4"),
    ),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_labels_bad_input_names_file_and_line_and_writes_nothing(
    labels_corpus, tmp_path, case
):
    data, _ = labels_corpus
    appended, setup, line, words = LABEL_CASES[case]
    if setup is not None:
        (data / "bad").mkdir(exist_ok=True)
        setup(data)
    with open(data / "train.lst", "a", encoding="utf-8") as labels:
        labels.write(appended + "\n")
    save = tmp_path / "prep"
    with pytest.raises(BadInputError) as error:
        prepare_labels(data, save)
    assert_reports(error.value, data / "train.lst", line, *words)
    assert_nothing_written(save)


def test_labels_outside_num_classes(labels_corpus, tmp_path):
    data, _ = labels_corpus
    with pytest.raises(BadInputError) as error:
        prepare_labels(data, tmp_path / "prep", num_classes=2)
    assert_reports(error.value, data / "train.lst", 6, "label 2 is outside 0..1")
    assert_nothing_written(tmp_path / "prep")


def test_labels_valid_label_outside_train_range(labels_corpus, tmp_path):
    data, _ = labels_corpus
    write_text(data / "valid.lst", "spk0/utt2 0 -1\nspk2/utt1 3 -1\n")
    with pytest.raises(BadInputError) as error:
        prepare_labels(data, tmp_path / "prep", valid_labels=str(data / "valid.lst"))
    assert_reports(error.value, data / "valid.lst", 2, "label 3 is outside 0..2")
    assert_nothing_written(tmp_path / "prep")


def test_labels_unknown_trial_path(labels_corpus, tmp_path):
    data, _ = labels_corpus
    write_text(data / "impostors.lst", "spk0/utt2 spk2/utt1\nspk0/utt2 spk1/utt1\n")
    with pytest.raises(BadInputError) as error:
        prepare_labels(
            data,
            tmp_path / "prep",
            valid_labels=str(data / "valid.lst"),
            trials_clients=str(data / "clients.lst"),
            trials_impostors=str(data / "impostors.lst"),
        )
    # clients.lst:1 names spk2/utt2, which valid.lst lacks; so does impostors.lst:2.
    assert_reports(
        error.value, data / "clients.lst", 1, "unknown utterance", "spk2/utt2"
    )
    assert_reports(
        error.value, data / "impostors.lst", 2, "unknown utterance", "spk1/utt1"
    )
    assert_nothing_written(tmp_path / "prep")


def test_labels_missing_labels_file(tmp_path):
    with pytest.raises(BadInputError) as error:
        data_prep.prepare_labels_file(
            str(tmp_path), str(tmp_path / "prep"), str(tmp_path / "absent.lst")
        )
    assert_reports(error.value, tmp_path / "absent.lst", None, "missing")
    assert_nothing_written(tmp_path / "prep")


def test_every_problem_is_reported_in_one_pass(labels_corpus, tmp_path):
    data, _ = labels_corpus
    with open(data / "train.lst", "a", encoding="utf-8") as labels:
        labels.write("spk9/a 1 -1\nspk1/utt1 x -1\nbroken\nspk9/b -3 -1\n")
    with pytest.raises(BadInputError) as error:
        prepare_labels(data, tmp_path / "prep")
    assert len(error.value.problems) == 5  # spk9/b has two: range and audio
    for line in (7, 8, 9, 10):
        assert_reports(error.value, data / "train.lst", line)
    assert "--skip-bad" in str(error.value)


def test_skip_bad_drops_rows_and_lists_them(labels_corpus, tmp_path):
    data, _ = labels_corpus
    with open(data / "train.lst", "a", encoding="utf-8") as labels:
        labels.write("spk9/a 1 -1\nbroken\n")
    save = tmp_path / "prep"
    outputs = prepare_labels(data, save, skip_bad=True)
    assert [r["ID"] for r in read_csv(outputs["train"])] == [
        "spk0--utt0",
        "spk0--utt1",
        "spk1--utt0",
        "spk1--utt2",
        "spk2--utt0",
    ]
    rejects = read_csv(save / "rejects.csv")
    # Lines are checked before audio, so the malformed line comes first.
    assert [(r["file"], r["line"], r["problem"][:14]) for r in rejects] == [
        (str(data / "train.lst"), "8", "malformed line"),
        (str(data / "train.lst"), "7", "audio file not"),
    ]
    assert json.loads((save / "summary.json").read_text())["rejected_problems"] == 2


def test_skip_bad_cannot_skip_a_label_gap(labels_corpus, tmp_path):
    data, _ = labels_corpus
    # Label 1's only usable rows go missing: dropping them leaves a gap.
    write_text(data / "train.lst", "spk0/utt0 0 -1\nspk9/gone 1 -1\nspk2/utt0 2 -1\n")
    with pytest.raises(BadInputError) as error:
        prepare_labels(data, tmp_path / "prep", skip_bad=True)
    assert_reports(error.value, data / "train.lst", 3, "label 2 follows a gap")
    assert "--skip-bad" not in str(error.value)
    assert_nothing_written(tmp_path / "prep")


def test_unchanged_inputs_and_options_skip_the_run(
    labels_corpus, tmp_path, monkeypatch
):
    data, _ = labels_corpus
    save = tmp_path / "prep"
    first = prepare_labels(data, save)
    stamp = os.stat(first["train"]).st_mtime_ns

    def no_reading(*args, **kwargs):
        raise AssertionError("headers read although nothing changed")

    monkeypatch.setattr(data_prep, "_read_headers", no_reading)
    assert prepare_labels(data, save) == first
    assert os.stat(first["train"]).st_mtime_ns == stamp
    # A changed option or listing file is redone.
    with pytest.raises(AssertionError, match="headers read"):
        prepare_labels(data, save, label_kind="age_group")
    monkeypatch.undo()
    os.utime(data / "train.lst", ns=(1, 1))
    monkeypatch.setattr(data_prep, "_read_headers", no_reading)
    with pytest.raises(AssertionError, match="headers read"):
        prepare_labels(data, save)


# ------------------------------------------------------------------------- Kaldi

SPEAKERS = {
    # speaker: (age, gender); ages cover every default group.
    "0001": (6, "m"),
    "0002": (8, "f"),
    "0003": (10, "m"),
    "0004": (12, "f"),
    "0005": (13, "f"),
    "0006": (15, "m"),
    "0007": (21, "f"),
    "0008": (25, "m"),
    "0009": (29, "f"),
    "0010": (30, "m"),
    "0011": (43, "f"),
    "0012": (24, "m"),
}


def make_kaldi_dir(root, split, speakers, utterances=2, suffix=".WAV"):
    """A speechocean762-like data dir; returns {utt: (rel path, duration)}."""
    audio = {}
    for speaker in speakers:
        for index in range(utterances):
            utt = f"{speaker}{split[:2]}{index}"
            rel = f"WAVE/SPEAKER{speaker}/{utt}{suffix}"
            audio[utt] = (
                rel,
                write_audio(root / rel, 0.05 + 0.01 * index, format="WAV"),
            )
    write_text(
        root / split / "wav.scp",
        "".join(f"{u}\t{rel}\n" for u, (rel, _) in audio.items()),
    )
    write_text(root / split / "utt2spk", "".join(f"{u} {u[:4]}\n" for u in audio))
    write_text(
        root / split / "spk2age", "".join(f"{s}\t{SPEAKERS[s][0]}\n" for s in speakers)
    )
    write_text(
        root / split / "spk2gender",
        "".join(f"{s}\t{SPEAKERS[s][1]}\n" for s in speakers),
    )
    return audio


def prepare_kaldi(data, save, **kwargs):
    return data_prep.prepare_kaldi(
        str(data), str(save), download_url=None, jobs=1, **kwargs
    )


def check_kaldi_rows(rows, audio):
    for row in rows:
        rel, duration = audio[row["ID"]]
        speaker = row["ID"][:4]
        age, gender = SPEAKERS[speaker]
        assert row == {
            "ID": row["ID"],
            "duration": duration_text(duration),
            "wav": f"$data_root/{rel}",
            "spk_id": speaker,
            "age": str(age),
            "age_group": data_prep.age_group(age),
            "gender": gender,
        }


def test_kaldi_with_test_dir_keeps_it_and_holds_valid_out_of_train(tmp_path):
    data = tmp_path / "speechocean762"
    train_speakers = sorted(SPEAKERS)[:10]
    audio = make_kaldi_dir(data, "train", train_speakers)
    audio.update(make_kaldi_dir(data, "test", sorted(SPEAKERS)[10:]))
    outputs = prepare_kaldi(data, tmp_path / "prep", valid_ratio=0.2)
    splits = {name: read_csv(outputs[name]) for name in ("train", "valid", "test")}
    assert list(splits["train"][0]) == [
        "ID",
        "duration",
        "wav",
        "spk_id",
        "age",
        "age_group",
        "gender",
    ]
    for rows in splits.values():
        check_kaldi_rows(rows, audio)
    speakers = {name: {r["spk_id"] for r in rows} for name, rows in splits.items()}
    assert speakers["test"] == {"0011", "0012"}
    assert len(speakers["valid"]) == 2 and not speakers["valid"] & speakers["train"]
    assert speakers["valid"] | speakers["train"] == set(train_speakers)
    assert sum(len(rows) for rows in splits.values()) == len(audio)


def test_kaldi_without_test_dir_holds_out_stratified_deterministic_splits(tmp_path):
    data = tmp_path / "corpus"
    audio = make_kaldi_dir(data, "train", sorted(SPEAKERS), suffix=".flac")
    first = prepare_kaldi(
        data, tmp_path / "a", valid_ratio=0.25, test_ratio=0.25, seed=7
    )
    again = prepare_kaldi(
        data, tmp_path / "b", valid_ratio=0.25, test_ratio=0.25, seed=7
    )
    speakers = {}
    for name in ("train", "valid", "test"):
        rows = read_csv(first[name])
        check_kaldi_rows(rows, audio)
        assert rows == read_csv(again[name])
        speakers[name] = {r["spk_id"]: r["age_group"] for r in rows}
    assert [len(speakers[name]) for name in ("train", "valid", "test")] == [6, 3, 3]
    assert set().union(*speakers.values()) == set(SPEAKERS)
    # Stratified: child (4 speakers) and twenties (4) each give one to valid and test.
    for name in ("valid", "test"):
        groups = Counter(speakers[name].values())
        assert groups["child"] == 1 and groups["twenties"] == 1
    other_seeds = [
        {
            r["spk_id"]
            for r in read_csv(
                prepare_kaldi(
                    data,
                    tmp_path / f"s{seed}",
                    valid_ratio=0.25,
                    test_ratio=0.25,
                    seed=seed,
                )["valid"]
            )
        }
        for seed in (1, 2, 3)
    ]
    assert any(valid != set(speakers["valid"]) for valid in other_seeds)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert list(summary["splits"]) == ["train", "valid", "test"]
    assert list(summary["splits"]["train"]["age_groups"]) == [
        "child",
        "teens",
        "twenties",
        "thirties+",
    ]
    assert summary["splits"]["valid"]["utterances"] == 6


def test_kaldi_custom_age_bins(tmp_path):
    data = tmp_path / "corpus"
    make_kaldi_dir(data, "train", sorted(SPEAKERS))
    outputs = prepare_kaldi(
        data, tmp_path / "prep", age_bins=(18,), age_groups=("minor", "adult")
    )
    rows = [r for name in ("train", "valid", "test") for r in read_csv(outputs[name])]
    assert {r["spk_id"]: r["age_group"] for r in rows} == {
        s: ("minor" if age < 18 else "adult") for s, (age, _) in SPEAKERS.items()
    }
    with pytest.raises(ValueError, match="group names"):
        prepare_kaldi(data, tmp_path / "x", age_bins=(18,), age_groups=("a",))


def test_kaldi_segments_give_start_and_stop(tmp_path):
    data = tmp_path / "corpus"
    write_audio(data / "rec/a.wav", 2.0)
    write_audio(data / "rec/b.wav", 1.0)
    write_text(data / "train/wav.scp", "recA rec/a.wav\nrecB rec/b.wav\n")
    write_text(
        data / "train/segments", "s1 recA 0.0 0.5\ns2 recA 0.5 -1\ns3 recB 0.25 0.75\n"
    )
    write_text(data / "train/utt2spk", "s1 x\ns2 x\ns3 y\n")
    outputs = prepare_kaldi(data, tmp_path / "prep", valid_ratio=0, test_ratio=0)
    rows = read_csv(outputs["train"])
    assert [
        (r["ID"], r["wav"], r["spk_id"], r["duration"], r["start"], r["stop"])
        for r in rows
    ] == [
        ("s1", "$data_root/rec/a.wav", "x", "0.5", "0", "8000"),
        ("s2", "$data_root/rec/a.wav", "x", "1.5", "8000", "32000"),
        ("s3", "$data_root/rec/b.wav", "y", "0.5", "4000", "12000"),
    ]


@pytest.fixture
def kaldi_corpus(tmp_path):
    data = tmp_path / "corpus"
    make_kaldi_dir(data, "train", ["0001", "0002", "0007"])
    return data


def append(path, text):
    with open(path, "a", encoding="utf-8") as listing:
        listing.write(text)


KALDI_CASES = {
    # name: (setup(data), file, line, words)
    "age not a number": (
        lambda d: write_text(d / "train/spk2age", "0001\t6\n0002\teight\n0007\t21\n"),
        "spk2age",
        2,
        ("'eight'", "not an age", "numbers"),
    ),
    "unknown speaker": (
        lambda d: write_text(d / "train/spk2age", "0001\t6\n0007\t21\n"),
        "utt2spk",
        3,
        ("unknown speaker '0002'", "spk2age"),
    ),
    "unknown gender speaker": (
        lambda d: write_text(d / "train/spk2gender", "0001\tm\n0002\tf\n"),
        "utt2spk",
        5,
        ("unknown speaker '0007'", "spk2gender"),
    ),
    "gender not m/f": (
        lambda d: write_text(d / "train/spk2gender", "0001\tm\n0002\tx\n0007\tf\n"),
        "spk2gender",
        2,
        ("'x'", "m or f"),
    ),
    "utterance without speaker": (
        lambda d: write_text(
            d / "train/utt2spk",
            "0001tr0 0001\n0001tr1 0001\n0002tr0 0002\n0002tr1 0002\n0007tr0 0007\n",
        ),
        "wav.scp",
        6,
        ("'0007tr1'", "no speaker"),
    ),
    "speaker line without audio": (
        lambda d: append(d / "train/utt2spk", "0009tr0 0001\n"),
        "utt2spk",
        7,
        ("'0009tr0'", "no audio"),
    ),
    "malformed utt2spk": (
        lambda d: append(d / "train/utt2spk", "lonely\n"),
        "utt2spk",
        7,
        ("malformed line", "UTTID SPEAKER"),
    ),
    "duplicate utterance": (
        lambda d: append(
            d / "train/wav.scp", "0001tr0\tWAVE/SPEAKER0001/0001tr1.WAV\n"
        ),
        "wav.scp",
        7,
        ("duplicate ID '0001tr0'", "first on line 1"),
    ),
    "missing audio": (
        lambda d: os.remove(d / "WAVE/SPEAKER0002/0002tr1.WAV"),
        "wav.scp",
        4,
        ("not found", "0002tr1.WAV"),
    ),
    "corrupt audio": (
        lambda d: write_text(d / "WAVE/SPEAKER0002/0002tr1.WAV", "RIFF????WAVEjunk"),
        "wav.scp",
        4,
        ("0002tr1.WAV", "unreadable or corrupt"),
    ),
    "zero-length audio": (
        lambda d: soundfile.write(
            d / "WAVE/SPEAKER0002/0002tr0.WAV", numpy.zeros(0), 16000, format="WAV"
        ),
        "wav.scp",
        3,
        ("0002tr0.WAV", "no samples"),
    ),
    "pipe command": (
        lambda d: write_text(
            d / "train/wav.scp",
            (d / "train/wav.scp")
            .read_text()
            .replace("WAVE/SPEAKER0007/0007tr0.WAV", "sox x.wav -t wav - |"),
        ),
        "wav.scp",
        5,
        ("pipe commands",),
    ),
}


@pytest.mark.parametrize("case", list(KALDI_CASES))
def test_kaldi_bad_input_names_file_and_line_and_writes_nothing(
    kaldi_corpus, tmp_path, case
):
    setup, file, line, words = KALDI_CASES[case]
    setup(kaldi_corpus)
    save = tmp_path / "prep"
    with pytest.raises(BadInputError) as error:
        prepare_kaldi(kaldi_corpus, save)
    assert_reports(error.value, kaldi_corpus / "train" / file, line, *words)
    assert_nothing_written(save)


def test_kaldi_missing_wav_scp(kaldi_corpus, tmp_path):
    os.remove(kaldi_corpus / "train/wav.scp")
    with pytest.raises(BadInputError) as error:
        prepare_kaldi(kaldi_corpus, tmp_path / "prep", skip_bad=True)
    assert_reports(error.value, kaldi_corpus / "train/wav.scp", None, "missing")
    assert_nothing_written(tmp_path / "prep")


def test_kaldi_speaker_in_train_and_test(kaldi_corpus, tmp_path):
    make_kaldi_dir(kaldi_corpus, "test", ["0007", "0011"])
    with pytest.raises(BadInputError) as error:
        prepare_kaldi(kaldi_corpus, tmp_path / "prep")
    assert "speaker '0007' is in both" in str(error.value)
    assert_reports(error.value, kaldi_corpus / "test/wav.scp", 1, "speaker-disjoint")
    assert_nothing_written(tmp_path / "prep")


def test_kaldi_skip_bad_drops_a_bad_speaker(kaldi_corpus, tmp_path):
    KALDI_CASES["age not a number"][0](kaldi_corpus)
    outputs = prepare_kaldi(
        kaldi_corpus, tmp_path / "prep", skip_bad=True, valid_ratio=0, test_ratio=0
    )
    assert {r["spk_id"] for r in read_csv(outputs["train"])} == {"0001", "0007"}
    (reject,) = read_csv(tmp_path / "prep" / "rejects.csv")
    assert reject["file"].endswith("spk2age") and reject["line"] == "2"


def test_real_speechocean762(shared_data, tmp_path):
    """Acceptance 1: all 125 speakers and 2000 utterances, disjoint, with ages."""
    corpus = shared_data / "speechocean762"
    if not corpus.is_dir():
        pytest.skip(f"{corpus} is absent")
    outputs = data_prep.prepare_kaldi(
        str(corpus), str(tmp_path / "prep"), download_url=None
    )
    splits = {name: read_csv(outputs[name]) for name in ("train", "valid", "test")}
    speakers = {name: {r["spk_id"] for r in rows} for name, rows in splits.items()}
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert len(set().union(*speakers.values())) == 125
    assert sum(len(rows) for rows in splits.values()) == 2000
    for name, rows in splits.items():
        assert speakers[name], name
        for row in rows:
            assert 6 <= float(row["age"]) <= 43
            assert row["age_group"] == data_prep.age_group(float(row["age"]))
            assert row["gender"] in ("m", "f")
            assert float(row["duration"]) > 0
            assert row["wav"].startswith("$data_root/WAVE/SPEAKER")
    wav = splits["valid"][0]["wav"].replace("$data_root", str(corpus))
    assert soundfile.info(wav).duration == pytest.approx(
        float(splits["valid"][0]["duration"]), abs=1e-6
    )
    # Every age group is represented in each held-out split (stratification).
    groups = {r["age_group"] for r in splits["train"]}
    for name in ("valid", "test"):
        assert {r["age_group"] for r in splits[name]} == groups


# ----------------------------------------------------------------------- download


class _RangeServer(http.server.ThreadingHTTPServer):
    """Serves ``payload`` at any path, honouring ``Range: bytes=N-``."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.payload = b""
        self.ranges = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/speechocean762.tar.gz"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = self.server.payload
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = _RangeServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def corpus_archive(tmp_path):
    """A tiny speechocean762.tar.gz as distributed: train/, test/, .WAV files."""
    root = tmp_path / "build" / "speechocean762"
    make_kaldi_dir(root, "train", ["0001", "0002", "0007", "0008"])
    make_kaldi_dir(root, "test", ["0011"])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname="speechocean762")
    return buffer.getvalue()


def test_prepare_kaldi_downloads_the_absent_corpus(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    data = tmp_path / "data" / "speechocean762"
    outputs = data_prep.prepare_kaldi(
        str(data), str(tmp_path / "prep"), download_url=server.url, jobs=1
    )
    assert (data / "train" / "wav.scp").is_file()
    assert {r["spk_id"] for r in read_csv(outputs["test"])} == {"0011"}
    archive = tmp_path / "data" / "speechocean762.tar.gz"
    assert archive.read_bytes() == server.payload
    digest = hashlib.sha256(server.payload).hexdigest()
    assert (tmp_path / "data" / "speechocean762.tar.gz.sha256").read_text().split() == [
        digest,
        "speechocean762.tar.gz",
    ]
    assert not list((tmp_path / "data").glob(".unpacking-*"))
    # Unpacking again uses the kept archive, verified against its checksum.
    server.ranges.clear()
    (tmp_path / "again").mkdir()
    os.replace(archive, tmp_path / "again" / archive.name)
    os.replace(
        archive.with_name(archive.name + ".sha256"),
        tmp_path / "again" / (archive.name + ".sha256"),
    )
    data_prep.download_speechocean762(
        str(tmp_path / "again" / "speechocean762"), url=server.url
    )
    assert server.ranges == []
    assert (tmp_path / "again" / "speechocean762" / "test" / "spk2age").is_file()


def test_download_resumes_a_partial_file(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    half = len(server.payload) // 2
    write_part = tmp_path / "data" / "speechocean762.tar.gz.part"
    write_part.parent.mkdir()
    write_part.write_bytes(server.payload[:half])
    data_prep.download_speechocean762(
        str(tmp_path / "data" / "speechocean762"), url=server.url
    )
    assert server.ranges == [f"bytes={half}-"]
    assert (tmp_path / "data" / "speechocean762.tar.gz").read_bytes() == server.payload
    assert not write_part.exists()


def test_download_checksum_mismatch(server, tmp_path):
    server.payload = corpus_archive(tmp_path)
    (tmp_path / "data").mkdir()
    write_text(
        tmp_path / "data" / "speechocean762.tar.gz.sha256",
        "0" * 64 + "  speechocean762.tar.gz\n",
    )
    with pytest.raises(DownloadError, match="does not match"):
        data_prep.download_speechocean762(
            str(tmp_path / "data" / "speechocean762"), url=server.url
        )
    assert not (tmp_path / "data" / "speechocean762").exists()
    assert not (tmp_path / "data" / "speechocean762.tar.gz").exists()


def test_download_without_network_says_how_to_get_it_by_hand(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: refused
    url = f"http://127.0.0.1:{port}/speechocean762.tar.gz"
    data = tmp_path / "data" / "speechocean762"
    with pytest.raises(DownloadError) as error:
        data_prep.prepare_kaldi(str(data), str(tmp_path / "prep"), download_url=url)
    message = str(error.value)
    assert "by hand" in message and "https://www.openslr.org/101" in message
    assert str(tmp_path / "data" / "speechocean762.tar.gz") in message
    assert not data.exists()
    assert_nothing_written(tmp_path / "prep")
    status = cli.main(
        [
            "prepare",
            "kaldi",
            "--data_folder",
            str(data),
            "--save_folder",
            str(tmp_path / "prep"),
            "--download_url",
            url,
        ]
    )
    assert status == 1
    assert "by hand" in capsys.readouterr().err


def test_unsafe_archive_is_refused(server, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    server.payload = buffer.getvalue()
    (tmp_path / "data").mkdir()
    with pytest.raises(DownloadError, match="unsafe archive"):
        data_prep.download_speechocean762(
            str(tmp_path / "data" / "speechocean762"), url=server.url
        )
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "data" / "escaped.txt").exists()
    assert not (tmp_path / "data" / "speechocean762").exists()


# ------------------------------------------------------------------- Common Voice

CV_HEADER = (
    "\t".join(
        ["client_id", "path", "sentence", "up_votes", "down_votes"]
        + ["age", "gender", "accents", "locale", "segment"]
    )
    + "\n"
)


def cv_line(client, clip, age, gender="male"):
    return f'{client}\t{clip}\tHe said "hi".\t2\t0\t{age}\t{gender}\t\ten\t\n'


@pytest.fixture
def commonvoice(tmp_path):
    data = tmp_path / "cv-corpus" / "en"
    durations = {}
    ages = ["teens", "twenties", "twenties", "thirties", "fourties", "sixties"]
    lines = []
    for client, age in enumerate(ages):
        for index in range(2):
            clip = f"common_voice_en_{client}{index}.mp3"
            durations[clip] = write_audio(data / "clips" / clip, 0.3 + 0.1 * index)
            lines.append(
                cv_line(f"c{client}", clip, age, "female" if client % 2 else "male")
            )
    write_audio(data / "clips" / "common_voice_en_noage.mp3", 0.2)
    lines.insert(3, cv_line("c9", "common_voice_en_noage.mp3", ""))
    write_text(data / "validated.tsv", CV_HEADER + "".join(lines))
    return data, durations


def test_commonvoice_validated_split_by_speaker(commonvoice, tmp_path):
    data, durations = commonvoice
    save = tmp_path / "prep"
    outputs = data_prep.prepare_commonvoice(
        str(data), str(save), valid_ratio=0.2, test_ratio=0.2, jobs=1
    )
    splits = {name: read_csv(outputs[name]) for name in ("train", "valid", "test")}
    rows = [row for split in splits.values() for row in split]
    assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "age_group", "gender"]
    assert sorted(r["ID"] for r in rows) == sorted(clip[:-4] for clip in durations)
    ages = ["teens", "twenties", "twenties", "thirties", "fourties", "sixties"]
    for row in rows:
        clip = row["ID"] + ".mp3"
        client = int(row["spk_id"][1:])
        assert row == {
            "ID": row["ID"],
            "duration": duration_text(durations[clip]),
            "wav": f"$data_root/clips/{clip}",
            "spk_id": f"c{client}",
            "age_group": ages[client],
            "gender": "female" if client % 2 else "male",
        }
    speakers = [{r["spk_id"] for r in split} for split in splits.values()]
    assert sum(len(s) for s in speakers) == len(set().union(*speakers)) == 6
    summary = json.loads((save / "summary.json").read_text())
    assert summary["rows_without_age"] == 1


def test_commonvoice_official_splits(commonvoice, tmp_path):
    data, _ = commonvoice
    lines = (data / "validated.tsv").read_text().splitlines(keepends=True)[1:]
    write_text(data / "train.tsv", CV_HEADER + "".join(lines[:7]))
    write_text(data / "dev.tsv", CV_HEADER + "".join(lines[7:9]))
    write_text(data / "test.tsv", CV_HEADER + "".join(lines[9:]))
    outputs = data_prep.prepare_commonvoice(str(data), str(tmp_path / "prep"), jobs=1)
    assert [r["spk_id"] for r in read_csv(outputs["valid"])] == ["c3", "c3"]
    assert [r["age_group"] for r in read_csv(outputs["test"])] == [
        "fourties",
        "fourties",
        "sixties",
        "sixties",
    ]
    assert len(read_csv(outputs["train"])) == 6


CV_CASES = {
    "age not a group": (
        cv_line("c1", "common_voice_en_10.mp3", "42"),
        ("age '42'", "not a Common Voice age group"),
    ),
    "missing clip": (
        cv_line("c7", "common_voice_en_missing.mp3", "teens"),
        ("not found", "common_voice_en_missing.mp3"),
    ),
    "malformed line": (
        "c7\tcommon_voice_en_10.mp3\tteens\n",
        ("malformed line", "3 fields"),
    ),
    "duplicate clip": (
        cv_line("c0", "common_voice_en_00.mp3", "teens"),
        ("duplicate ID 'common_voice_en_00'",),
    ),
}


@pytest.mark.parametrize("case", list(CV_CASES))
def test_commonvoice_bad_input(commonvoice, tmp_path, case):
    data, _ = commonvoice
    line_text, words = CV_CASES[case]
    append(data / "validated.tsv", line_text)
    with pytest.raises(BadInputError) as error:
        data_prep.prepare_commonvoice(str(data), str(tmp_path / "prep"), jobs=1)
    assert_reports(error.value, data / "validated.tsv", 15, *words)
    assert_nothing_written(tmp_path / "prep")


def test_commonvoice_header_without_age(commonvoice, tmp_path):
    data, _ = commonvoice
    write_text(
        data / "validated.tsv",
        "client_id\tpath\tsentence\nc0\tcommon_voice_en_00.mp3\tx\n",
    )
    with pytest.raises(BadInputError) as error:
        data_prep.prepare_commonvoice(str(data), str(tmp_path / "prep"), skip_bad=True)
    assert_reports(error.value, data / "validated.tsv", 1, "lacks column(s) age")
    assert_nothing_written(tmp_path / "prep")


# ----------------------------------------------------------------------- VoxCeleb


@pytest.fixture
def voxceleb(tmp_path):
    """VoxCeleb1 test (wav) and VoxCeleb2 dev (m4a) trees, side by side."""
    data = tmp_path / "voxceleb"
    durations = {}
    for speaker in ("id10270", "id10271"):
        for video in ("vidA", "vidB"):
            rel = f"vox1_test/wav/{speaker}/{video}/00001.wav"
            durations[rel] = write_audio(data / rel, 0.2 if video == "vidA" else 0.3)
    for index in range(10):
        speaker = f"id{index:05d}"
        rel = f"vox2_dev/dev/aac/{speaker}/vid{index}/00001.m4a"
        (data / rel).parent.mkdir(parents=True)
        (data / rel).write_bytes(mp4_bytes(1000 + index * 100, 1000))
        durations[rel] = 1 + index * 0.1
    write_text(data / "vox2_dev/dev/aac/id00000/vid0/notes.txt", "not audio")
    write_text(
        data / "veri_test2.txt",
        "1 id10270/vidA/00001.wav id10270/vidB/00001.wav\n"
        "0 id10270/vidA/00001.wav id10271/vidB/00001.wav\n"
        "1 id10271/vidA/00001.wav id10271/vidB/00001.wav\n",
    )
    return data, durations


def test_voxceleb_trials_define_the_test_split(voxceleb, tmp_path):
    data, durations = voxceleb
    outputs = data_prep.prepare_voxceleb(
        str(data),
        str(tmp_path / "prep"),
        trials_file=str(data / "veri_test2.txt"),
        valid_ratio=0.2,
        jobs=1,
    )
    splits = {name: read_csv(outputs[name]) for name in ("train", "valid", "test")}
    by_id = {}
    for rel, duration in durations.items():
        parts = rel.split("/")
        by_id[f"{parts[-3]}--{parts[-2]}--{parts[-1][:-4]}"] = (
            rel,
            parts[-3],
            duration,
        )
    for rows in splits.values():
        for row in rows:
            rel, speaker, duration = by_id[row["ID"]]
            assert row == {
                "ID": row["ID"],
                "duration": duration_text(duration),
                "wav": f"$data_root/{rel}",
                "spk_id": speaker,
            }
    assert {r["spk_id"] for r in splits["test"]} == {"id10270", "id10271"}
    assert len(splits["test"]) == 4
    assert len({r["spk_id"] for r in splits["valid"]}) == 2
    assert len(splits["train"]) == 8
    assert not {r["spk_id"] for r in splits["train"]} & {
        r["spk_id"] for r in splits["valid"]
    }
    trials = read_csv(outputs["trials"])
    assert [(t["label"], t["enrol"], t["test"]) for t in trials] == [
        ("1", "id10270--vidA--00001", "id10270--vidB--00001"),
        ("0", "id10270--vidA--00001", "id10271--vidB--00001"),
        ("1", "id10271--vidA--00001", "id10271--vidB--00001"),
    ]


def test_voxceleb_without_trials_holds_out_valid_and_test(voxceleb, tmp_path):
    data, durations = voxceleb
    outputs = data_prep.prepare_voxceleb(
        str(data), str(tmp_path / "prep"), valid_ratio=0.25, test_ratio=0.25, jobs=1
    )
    assert "trials" not in outputs
    counts = [
        len({r["spk_id"] for r in read_csv(outputs[name])})
        for name in ("train", "valid", "test")
    ]
    assert counts == [6, 3, 3]


@pytest.mark.parametrize(
    "line, words",
    [
        (
            "1 id10270/vidA/00001.wav id19999/vidZ/00001.wav",
            ("unknown utterance", "id19999/vidZ/00001.wav"),
        ),
        ("yes id10270/vidA/00001.wav id10271/vidB/00001.wav", ("trial label 'yes'",)),
        ("1 id10270/vidA/00001.wav", ("malformed line",)),
    ],
)
def test_voxceleb_bad_trials(voxceleb, tmp_path, line, words):
    data, _ = voxceleb
    append(data / "veri_test2.txt", line + "\n")
    with pytest.raises(BadInputError) as error:
        data_prep.prepare_voxceleb(
            str(data),
            str(tmp_path / "prep"),
            trials_file=str(data / "veri_test2.txt"),
            jobs=1,
        )
    assert_reports(error.value, data / "veri_test2.txt", 4, *words)
    assert_nothing_written(tmp_path / "prep")


def test_voxceleb_bad_audio_names_the_file(voxceleb, tmp_path):
    data, _ = voxceleb
    bad = data / "vox2_dev/dev/aac/id00003/vid3/00001.m4a"
    bad.write_bytes(b"\x00\x00\x00\x10ftypM4A \x00\x00\x00\x00")
    with pytest.raises(BadInputError) as error:
        data_prep.prepare_voxceleb(str(data), str(tmp_path / "prep"), jobs=1)
    assert_reports(error.value, data, None, str(bad), "no MP4 movie header")
    assert_nothing_written(tmp_path / "prep")


# ---------------------------------------------------------------------------- CLI


def test_cli_prepare_labels(labels_corpus, tmp_path, capsys):
    data, _ = labels_corpus
    save = tmp_path / "prep"
    status = cli.main(
        [
            "prepare",
            "labels",
            "--data-folder",
            str(data),
            "--save_folder",
            str(save),
            "--train_labels",
            str(data / "train.lst"),
            "--jobs",
            "1",
        ]
    )
    assert status == 0
    assert f"train: {save / 'train.csv'}" in capsys.readouterr().out
    assert len(read_csv(save / "train.csv")) == 5


def test_cli_bad_input_exits_non_zero_and_lists_problems(
    labels_corpus, tmp_path, capsys
):
    data, _ = labels_corpus
    append(data / "train.lst", "spk9/x 1 -1\n")
    save = tmp_path / "prep"
    args = [
        "prepare",
        "labels",
        "--data_folder",
        str(data),
        "--save_folder",
        str(save),
        "--train_labels",
        str(data / "train.lst"),
    ]
    assert cli.main(args) == 1
    assert f"{data / 'train.lst'}:7: audio file not found" in capsys.readouterr().err
    assert_nothing_written(save)
    assert cli.main(args + ["--skip-bad"]) == 0
    assert (save / "rejects.csv").is_file()


def test_cli_passes_only_given_options():
    args = cli.build_parser().parse_args(
        [
            "prepare",
            "kaldi",
            "--data_folder",
            "d",
            "--save_folder",
            "s",
            "--age-bins",
            "10,20",
            "--age_groups",
            "a,b,c",
            "--no-download",
            "--skip_bad",
        ]
    )
    assert cli._arguments(args) == {
        "data_folder": "d",
        "save_folder": "s",
        "age_bins": (10.0, 20.0),
        "age_groups": ("a", "b", "c"),
        "download_url": None,
        "skip_bad": True,
    }


def readme_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Preparing data", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in section.split("```")[1::2]:
        command = block.replace("\\\n", " ").strip()
        command = (
            command.split("\n", 1)[1] if command.startswith(("bash", "sh")) else command
        )
        commands += [line for line in command.splitlines() if line.startswith("dmha ")]
    return commands


def test_readme_shows_one_valid_command_per_source():
    commands = readme_commands()
    sources = [shlex.split(c)[2] for c in commands if shlex.split(c)[1] == "prepare"]
    assert sorted(sources) == ["commonvoice", "kaldi", "labels", "voxceleb"]
    assert any(shlex.split(c)[1] == "features" for c in commands)
    parser = cli.build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])
