"""Tests of ``prepare_voxceleb``: VoxCeleb trees and official trial lists."""

import numpy
import pytest
from tests.audio_helpers import write_m4a
from tests.prepare.prepare_helpers import (
    append,
    assert_nothing_written,
    assert_reports,
    duration_text,
    read_csv,
    write_audio,
    write_text,
)

from dmha_modules import prepare
from dmha_modules.prepare import BadInputError


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
        write_m4a(data / rel, numpy.zeros(1600 * (10 + index), numpy.float32), 16000)
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
    outputs = prepare.prepare_voxceleb(
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
    outputs = prepare.prepare_voxceleb(
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
        prepare.prepare_voxceleb(
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
        prepare.prepare_voxceleb(str(data), str(tmp_path / "prep"), jobs=1)
    assert_reports(error.value, data, None, str(bad), "not a readable MP4 audio file")
    assert_nothing_written(tmp_path / "prep")


def test_voxceleb_converted_to_flac_prepares_with_the_official_trial_list(tmp_path):
    # The official list names .wav files; a tree converted to FLAC matches it by ID.
    data = tmp_path / "voxceleb"
    durations = {}
    for speaker in ("id10270", "id10271", "id10272"):
        for video in ("vidA", "vidB"):
            rel = f"vox1/flac/{speaker}/{video}/00001.flac"
            durations[f"{speaker}--{video}--00001"] = write_audio(data / rel, 0.25)
    write_text(data / "veri_test2.txt",
               "1 id10270/vidA/00001.wav id10270/vidB/00001.wav\n"
               "0 id10270/vidA/00001.wav id10271/vidB/00001.wav\n")
    outputs = prepare.prepare_voxceleb(str(data), str(tmp_path / "prep"),
                                       trials_file=str(data / "veri_test2.txt"), jobs=1)
    rows = [row for split, path in outputs.items() if split != "trials" for row in read_csv(path)]
    assert sorted(row["ID"] for row in rows) == sorted(durations)
    for row in rows:
        assert row["wav"].endswith(".flac")
        assert row["duration"] == duration_text(durations[row["ID"]])
    assert len(read_csv(outputs["trials"])) == 2
