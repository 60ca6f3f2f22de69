"""Tests of what every source shares: all problems at once, ``skip_bad``,
skipping unchanged runs (through the labels source)."""

import json
import os

import pytest
from tests.prepare.prepare_helpers import (
    assert_nothing_written,
    assert_reports,
    prepare_labels,
    read_csv,
    write_text,
)

from dmha_modules.io import audio_headers
from dmha_modules.prepare import BadInputError


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

    monkeypatch.setattr(audio_headers, "read_headers", no_reading)
    assert prepare_labels(data, save) == first
    assert os.stat(first["train"]).st_mtime_ns == stamp
    # A changed option or listing file is redone.
    with pytest.raises(AssertionError, match="headers read"):
        prepare_labels(data, save, label_kind="age_group")
    monkeypatch.undo()
    os.utime(data / "train.lst", ns=(1, 1))
    monkeypatch.setattr(audio_headers, "read_headers", no_reading)
    with pytest.raises(AssertionError, match="headers read"):
        prepare_labels(data, save)
