"""Tests of ``prepare_kaldi``: Kaldi data dirs, speechocean762 among them."""

import json
import os
from collections import Counter

import numpy
import pytest
import soundfile
from tests.prepare.prepare_helpers import (
    SPEAKERS,
    append,
    assert_nothing_written,
    assert_reports,
    duration_text,
    make_kaldi_dir,
    read_csv,
    write_audio,
    write_text,
)

from dmha_modules import prepare
from dmha_modules.age.groups import age_group
from dmha_modules.prepare import BadInputError


def prepare_kaldi(data, save, **kwargs):
    return prepare.prepare_kaldi(
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
            "age_group": age_group(age),
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
    "implausible age": (
        lambda d: write_text(d / "train/spk2age", "0001\t6\n0002\t200\n0007\t21\n"),
        "spk2age",
        2,
        ("'200'", "not an age", "from 0 to 120"),
    ),
    "negative age": (
        lambda d: write_text(d / "train/spk2age", "0001\t-5\n0002\t8\n0007\t21\n"),
        "spk2age",
        1,
        ("'-5'", "not an age", "from 0 to 120"),
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


def test_kaldi_ages_at_the_ends_of_the_range_are_kept(kaldi_corpus, tmp_path):
    write_text(kaldi_corpus / "train/spk2age", "0001\t0\n0002\t120\n0007\t21\n")
    outputs = prepare_kaldi(kaldi_corpus, tmp_path / "prep", valid_ratio=0, test_ratio=0)
    ages = {row["spk_id"]: row["age"] for row in read_csv(outputs["train"])}
    assert ages == {"0001": "0", "0002": "120", "0007": "21"}


def test_kaldi_wav_scp_with_a_bom_and_paths_with_spaces(kaldi_corpus, tmp_path):
    """A BOM is no part of the first ID; everything after the ID is the path."""
    spaced = kaldi_corpus / "WAVE/SPEAKER 0001/first take.WAV"
    spaced.parent.mkdir()
    os.rename(kaldi_corpus / "WAVE/SPEAKER0001/0001tr0.WAV", spaced)
    scp = kaldi_corpus / "train/wav.scp"
    text = scp.read_text(encoding="utf-8").replace(
        "WAVE/SPEAKER0001/0001tr0.WAV", "WAVE/SPEAKER 0001/first take.WAV"
    )
    assert text.startswith("0001tr0\t")
    scp.write_text("\ufeff" + text, encoding="utf-8")
    outputs = prepare_kaldi(kaldi_corpus, tmp_path / "prep", valid_ratio=0, test_ratio=0)
    rows = {row["ID"]: row for row in read_csv(outputs["train"])}
    assert rows["0001tr0"]["wav"] == "$data_root/WAVE/SPEAKER 0001/first take.WAV"
    assert len(rows) == 6


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
    outputs = prepare.prepare_kaldi(
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
            assert row["age_group"] == age_group(float(row["age"]))
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
