"""Kaldi data dirs: ``wav.scp``, ``utt2spk`` and optionally ``spk2age``,
``spk2gender`` and ``segments`` (speechocean762's layout)."""

import math
import os

from dmha_modules.age.groups import (
    DEFAULT_AGE_BINS,
    DEFAULT_AGE_GROUPS,
    age_group,
    check_age_bins,
)
from dmha_modules.prepare.listings import read_keyed, relative_path
from dmha_modules.prepare.pipeline import Corpus, prepare_corpus
from dmha_modules.prepare.speechocean762 import (
    SPEECHOCEAN762_URL,
    download_speechocean762,
)
from dmha_modules.prepare.splits import check_ratios
from dmha_modules.prepare.utterances import (
    Utterance,
    probe_utterances,
    reject_duplicates,
)

_REQUIRED = "a Kaldi data dir needs wav.scp and utt2spk"
# The files of a data dir: what a required one is, None for an optional one.
_LISTINGS = {
    "wav.scp": _REQUIRED,
    "utt2spk": _REQUIRED,
    "spk2age": None,
    "spk2gender": None,
    "segments": None,
}


def prepare_kaldi(
    data_folder,
    save_folder,
    train_dir="train",
    test_dir="test",
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    age_bins=DEFAULT_AGE_BINS,
    age_groups=DEFAULT_AGE_GROUPS,
    download_url=SPEECHOCEAN762_URL,
    skip_bad=False,
    jobs=None,
):
    """Converts Kaldi-style data dirs (speechocean762's layout) into manifests.

    ``data_folder/train_dir`` (and ``data_folder/test_dir`` when present)
    hold ``wav.scp`` (``UTTID PATH``, paths relative to ``data_folder`` or
    absolute; pipe commands are not supported), ``utt2spk`` and optionally
    ``spk2age`` (years), ``spk2gender`` (m/f) and ``segments``
    (``UTTID RECID START END`` in seconds, END -1 for the end of the file).
    The test dir is the test split and valid speakers are held out of train;
    without one, valid and test speakers are both held out of train. Splits
    are speaker-disjoint, deterministic for ``seed`` and stratified by age
    group when ages exist. When ``data_folder`` does not exist and
    ``download_url`` is set, speechocean762 is downloaded and unpacked there
    first (see :func:`download_speechocean762`).

    Arguments
    ---------
    data_folder : str
        Corpus root (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    train_dir, test_dir : str
        Data dirs inside ``data_folder``; the test dir is optional.
    valid_ratio, test_ratio : float
        Shares of the train dir's speakers held out (test_ratio only without
        a test dir).
    seed : int
        Seed of the speaker split.
    age_bins : sequence of float
        Age-group edges in years (see :func:`age_group`).
    age_groups : sequence of str
        Age-group names, one more than the edges.
    download_url : str or None
        Where to get speechocean762 when ``data_folder`` is absent; None to
        never download.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name ("train", "valid", "test") -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    DownloadError
        When the corpus is absent and cannot be downloaded.
    """
    check_ratios(valid_ratio, test_ratio)
    check_age_bins(age_bins, age_groups)
    dirs = _data_dirs(data_folder, train_dir, test_dir, download_url)
    options = {"dirs": sorted(dirs), "valid_ratio": valid_ratio,
               "test_ratio": test_ratio, "seed": seed,
               "age_bins": list(age_bins), "age_groups": list(age_groups)}

    def read(log):
        rows_of = _read_kaldi_dirs(dirs, data_folder, age_bins, age_groups, log, jobs)
        return _corpus(rows_of, valid_ratio, test_ratio, seed, age_groups)

    return prepare_corpus("kaldi", data_folder, save_folder, options, _listings(dirs),
                          read, skip_bad)


def _data_dirs(data_folder, train_dir, test_dir, download_url):
    """The data dirs present: split name -> path, after downloading an absent corpus."""
    if not os.path.isdir(data_folder):
        if download_url is None:
            raise FileNotFoundError(f"{data_folder}: no such corpus folder")
        download_speechocean762(data_folder, url=download_url)
    dirs = {"train": os.path.join(data_folder, train_dir)}
    if os.path.isdir(os.path.join(data_folder, test_dir)):
        dirs["test"] = os.path.join(data_folder, test_dir)
    return dirs


def _listings(dirs):
    """The listing files of the data ``dirs``: path -> what a required one is."""
    return {
        os.path.join(kaldi_dir, name): what
        for kaldi_dir in dirs.values()
        for name, what in _LISTINGS.items()
    }


def _read_kaldi_dirs(dirs, data_folder, age_bins, age_groups, log, jobs):
    """Reads every data dir of ``dirs``: split name -> rows, duplicates rejected."""
    rows_of = {
        name: _read_kaldi_dir(path, data_folder, age_bins, age_groups, log, jobs)
        for name, path in dirs.items()
    }
    reject_duplicates([row for rows in rows_of.values() for row in rows], log)
    return rows_of


def _corpus(rows_of, valid_ratio, test_ratio, seed, age_groups):
    """The corpus: the test dir's rows are the test split, train's are shared out."""
    held_out = {"valid": valid_ratio}
    if "test" not in rows_of:
        held_out["test"] = test_ratio
    return Corpus(
        splits={"test": rows_of["test"]} if "test" in rows_of else {},
        unsplit=rows_of["train"],
        held_out=held_out,
        seed=seed,
        group_order=age_groups,
    )


# Ages a speaker can have, in years; anything else is a typo or another unit.
AGE_RANGE = (0, 120)


def _parse_age(text):
    """Returns ``text`` as an age in years, or None when it is not a plausible one."""
    try:
        age = float(text)
    except ValueError:
        return None
    return age if math.isfinite(age) and AGE_RANGE[0] <= age <= AGE_RANGE[1] else None


def _parse_gender(text):
    return text if text in ("m", "f") else None


# Speaker tables: file, expected line, parser, and what is wrong when it fails.
_SPEAKER_TABLES = (
    (
        "spk2age",
        "SPEAKER AGE",
        _parse_age,
        "is not an age: ages must be numbers of years from {} to {}".format(*AGE_RANGE),
    ),
    ("spk2gender", "SPEAKER m|f", _parse_gender, "is not a gender: m or f"),
)


def _read_speaker_tables(kaldi_dir, log):
    """The speaker tables present: name -> (path, {speaker: value}, bad speakers)."""
    tables = {}
    for name, expected, parse, problem in _SPEAKER_TABLES:
        path = os.path.join(kaldi_dir, name)
        if not os.path.isfile(path):
            continue
        values, bad = {}, set()
        table = read_keyed(path, log, expected, 2)
        for speaker, (line_number, fields) in table.items():
            value = parse(fields[1])
            if value is None:
                log.reject(
                    path, line_number, f"{fields[1]!r} (speaker {speaker!r}) {problem}"
                )
                bad.add(speaker)
            else:
                values[speaker] = value
        tables[name] = (path, values, bad)
    return tables


def _probe_recordings(recordings, wav_scp, data_folder, log, jobs):
    """Rows of the ``wav.scp`` recordings, with their audio headers read.

    Recordings are probed once, whether utterances are whole files or segments.
    """
    recording_rows = {}
    for rec_id, (line_number, (_, location)) in recordings.items():
        if location.endswith("|"):
            log.reject(
                wav_scp,
                line_number,
                "pipe commands are not supported: convert the audio to files",
            )
            continue
        recording_rows[rec_id] = Utterance(
            rec_id,
            relative_path(location, data_folder, data_folder),
            (wav_scp, line_number),
        )
    probe_utterances(list(recording_rows.values()), data_folder, log, jobs)
    return recording_rows


def _read_kaldi_dir(kaldi_dir, data_folder, age_bins, age_groups, log, jobs):
    """Reads one Kaldi data dir into checked utterance rows."""
    wav_scp = os.path.join(kaldi_dir, "wav.scp")
    utt2spk = os.path.join(kaldi_dir, "utt2spk")
    segments = os.path.join(kaldi_dir, "segments")
    recordings = read_keyed(wav_scp, log, "ID PATH", 2, spaced="last")
    speakers = read_keyed(utt2spk, log, "UTTID SPEAKER", 2)
    tables = _read_speaker_tables(kaldi_dir, log)
    recording_rows = _probe_recordings(recordings, wav_scp, data_folder, log, jobs)
    if os.path.isfile(segments):
        rows = _read_segments(segments, recordings, recording_rows, log)
    else:
        rows = [
            Utterance(rec.id, rec.rel, rec.origin, duration=rec.duration, bad=rec.bad)
            for rec in recording_rows.values()
        ]
    for row in rows:
        if row.id not in speakers:
            log.reject_row(
                row, *row.origin, f"utterance {row.id!r} has no speaker in {utt2spk}"
            )
            continue
        line_number, (_, speaker) = speakers[row.id]
        row.spk_id = speaker
        for name, (path, values, bad) in tables.items():
            if speaker in bad:
                row.bad = True  # reported once, on the speaker's line
            elif speaker not in values:
                log.reject_row(
                    row,
                    utt2spk,
                    line_number,
                    f"unknown speaker {speaker!r}: not in {path}",
                )
            elif name == "spk2age":
                row.age = values[speaker]
                row.age_group = age_group(row.age, age_bins, age_groups)
            else:
                row.gender = values[speaker]
    known = {row.id for row in rows}
    for utt_id, (line_number, _) in speakers.items():
        if utt_id not in known and utt_id not in recordings:
            log.reject(
                utt2spk, line_number, f"utterance {utt_id!r} has no audio in {wav_scp}"
            )
    return rows


def _read_segments(path, recordings, recording_rows, log):
    """Reads a Kaldi ``segments`` file into utterance rows cut from recordings."""
    rows = []
    for utt_id, (line_number, fields) in read_keyed(
        path, log, "UTTID RECID START END", 4
    ).items():
        rec_id = fields[1]
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            log.reject(
                path,
                line_number,
                f"start {fields[2]!r} / end {fields[3]!r} are not numbers",
            )
            continue
        row = Utterance(utt_id, "", (path, line_number), start=start)
        rows.append(row)
        if rec_id not in recordings:
            log.reject_row(
                row, path, line_number, f"unknown recording {rec_id!r}: not in wav.scp"
            )
            continue
        recording = recording_rows.get(rec_id)
        if recording is None or recording.bad:
            row.bad = True  # reported on its wav.scp line
            continue
        end = recording.duration if end == -1 else end
        if not 0 <= start < end <= recording.duration + 1e-3:
            log.reject_row(
                row,
                path,
                line_number,
                f"segment {start}..{fields[3]} s lies outside recording {rec_id!r} "
                f"(0..{recording.duration:g} s) or is empty",
            )
            continue
        row.rel, row.sample_rate = recording.rel, recording.sample_rate
        row.duration = min(end, recording.duration) - start
    return rows
