"""Tests of ``prepare_labels_file``: the original code's labels and trial files."""

import json
import os

import numpy
import pytest
import soundfile
from tests.prepare.prepare_helpers import (
    assert_nothing_written,
    assert_reports,
    duration_text,
    prepare_labels,
    read_csv,
    write_audio,
    write_text,
)

from dmha_modules import prepare
from dmha_modules.prepare import BadInputError


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


def test_labels_file_with_a_bom_and_paths_with_spaces(labels_corpus, tmp_path):
    """``path label -1`` is read from the right: the path keeps its spaces."""
    data, durations = labels_corpus
    os.rename(data / "spk0/utt0.wav", data / "spk0/first take.wav")
    write_text(data / "train.lst", "\ufeffspk0/first take 0 -1\nspk1/utt0 1 -1\n")
    outputs = prepare_labels(data, tmp_path / "prep")
    rows = read_csv(outputs["train"])
    assert [(row["ID"], row["wav"], row["spk_id"]) for row in rows] == [
        ("spk0--first take", "$data_root/spk0/first take.wav", "0"),
        ("spk1--utt0", "$data_root/spk1/utt0.wav", "1"),
    ]


def test_labels_missing_labels_file(tmp_path):
    with pytest.raises(BadInputError) as error:
        prepare.prepare_labels_file(
            str(tmp_path), str(tmp_path / "prep"), str(tmp_path / "absent.lst")
        )
    assert_reports(error.value, tmp_path / "absent.lst", None, "missing")
    assert_nothing_written(tmp_path / "prep")
