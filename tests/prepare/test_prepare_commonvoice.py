"""Tests of ``prepare_commonvoice``: Common Voice release folders."""

import json

import pytest
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
    outputs = prepare.prepare_commonvoice(
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
    outputs = prepare.prepare_commonvoice(str(data), str(tmp_path / "prep"), jobs=1)
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
        prepare.prepare_commonvoice(str(data), str(tmp_path / "prep"), jobs=1)
    assert_reports(error.value, data / "validated.tsv", 15, *words)
    assert_nothing_written(tmp_path / "prep")


def test_commonvoice_header_without_age(commonvoice, tmp_path):
    data, _ = commonvoice
    write_text(
        data / "validated.tsv",
        "client_id\tpath\tsentence\nc0\tcommon_voice_en_00.mp3\tx\n",
    )
    with pytest.raises(BadInputError) as error:
        prepare.prepare_commonvoice(str(data), str(tmp_path / "prep"), skip_bad=True)
    assert_reports(error.value, data / "validated.tsv", 1, "lacks column(s) age")
    assert_nothing_written(tmp_path / "prep")
