"""VoxCeleb1/2 trees (``id*/video/*.wav``, ``.flac`` or ``.m4a``) and official trial lists."""

import hashlib
import os
import re

from dmha_modules.prepare.listings import read_fields, utterance_id
from dmha_modules.prepare.pipeline import Corpus, prepare_corpus
from dmha_modules.prepare.problems import ProblemLog
from dmha_modules.prepare.splits import check_ratios
from dmha_modules.prepare.utterances import (
    Utterance,
    probe_utterances,
    reject_duplicates,
)
from dmha_modules.scoring.trials import parse_trial

_SPEAKER = re.compile(r"id\d+")
# VoxCeleb1's WAV, VoxCeleb2's AAC, and either converted to FLAC.
_EXTENSIONS = (".wav", ".flac", ".m4a")


def prepare_voxceleb(
    data_folder,
    save_folder,
    trials_file=None,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    skip_bad=False,
    jobs=None,
):
    """Converts VoxCeleb1/2 trees (``id*/video/*.wav``, ``.flac`` or ``.m4a``) into manifests.

    Every folder named ``id<digits>`` below ``data_folder`` (at any depth,
    e.g. ``vox1/wav/`` and ``vox2/dev/aac/`` side by side) is a speaker; its
    sub-folders are videos holding the utterances. IDs are
    ``speaker--video--utterance``. With a trial list (``veri_test2.txt``
    format: ``1|0 pathA pathB`` per line, paths ``id*/video/file``), the
    speakers it names form the test split, its trials become ``trials.csv``
    and valid speakers are held out of the rest; without one, valid and test
    speakers are both held out. ``.m4a`` durations come from the MP4 audio
    track's header (:mod:`dmha_modules.io.mp4_boxes`).

    Arguments
    ---------
    data_folder : str
        Folder holding the VoxCeleb trees (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    trials_file : str, optional
        Official trial list.
    valid_ratio, test_ratio : float
        Speaker shares held out (test_ratio only without a trial list).
    seed : int
        Seed of the speaker split.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name and "trials" (with a trial list) -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    """
    check_ratios(valid_ratio, test_ratio)
    log, audio_paths = _find_inputs(data_folder, trials_file)

    def read(log):
        rows = [_utterance(rel, data_folder) for rel in audio_paths]
        reject_duplicates(rows, log)
        probe_utterances(rows, data_folder, log, jobs)
        if trials_file is None:
            held_out = {"valid": valid_ratio, "test": test_ratio}
            return Corpus(unsplit=rows, held_out=held_out, seed=seed)
        return _trial_list_corpus(
            rows, trials_file, data_folder, valid_ratio, seed, log
        )

    return prepare_corpus(
        "voxceleb",
        data_folder,
        save_folder,
        {
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
        },
        {trials_file: None} if trials_file is not None else {},
        read,
        skip_bad,
        # The tree itself is an input: a hash of its file list, not of every file.
        inputs={"tree": hashlib.sha256("\n".join(audio_paths).encode()).hexdigest()},
        log=log,
    )


def _find_inputs(data_folder, trials_file):
    """The problem log of the inputs found missing, and the tree's audio paths."""
    log = ProblemLog()
    if trials_file is not None:
        log.require_file(trials_file, "trial list")
    audio_paths = []
    if not os.path.isdir(data_folder):
        log.stop(data_folder, None, "missing: the VoxCeleb folder")
    elif not (audio_paths := _scan(data_folder)):
        log.stop(data_folder, None, "no id*/video/*.wav, *.flac or *.m4a files found")
    return log, audio_paths


def _trial_list_corpus(rows, trials_file, data_folder, valid_ratio, seed, log):
    """The corpus whose test split is the trial list's speakers, with its trials."""
    by_id = {row.id: row for row in rows}
    trials = _read_trials(trials_file, by_id, data_folder, log)
    # Under skip_bad, a trial whose audio was dropped goes with it.
    trials = [t for t in trials if not (by_id[t[1]].bad or by_id[t[2]].bad)]
    test_speakers = {by_id[utt].spk_id for trial in trials for utt in trial[1:]}
    return Corpus(
        splits={"test": [row for row in rows if row.spk_id in test_speakers]},
        unsplit=[row for row in rows if row.spk_id not in test_speakers],
        held_out={"valid": valid_ratio},
        seed=seed,
        trials=trials,
    )


def _utterance(rel, data_folder):
    """The row of the audio file ``rel``: ``.../speaker/video/file``."""
    speaker, video, name = rel.split("/")[-3:]
    # A tree has no lines: problems name the folder and the audio file.
    row_id = utterance_id(f"{speaker}/{video}/{name}")
    return Utterance(row_id, rel, (data_folder, None), spk_id=speaker)


def _scan(data_folder):
    """Lists ``id*/video/*.wav|.flac|.m4a`` below ``data_folder``, sorted, relative."""
    found = []
    pending = [data_folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        for folder in folders:
            if not _SPEAKER.fullmatch(folder.name):
                pending.append(folder.path)
                continue
            # One relpath per speaker: per file it would dominate on 1 M files.
            speaker = os.path.relpath(folder.path, data_folder).replace(os.sep, "/")
            with os.scandir(folder.path) as videos:
                videos = [v for v in videos if v.is_dir()]
            for video in videos:
                with os.scandir(video.path) as files:
                    found += [
                        f"{speaker}/{video.name}/{audio.name}"
                        for audio in files
                        if os.path.splitext(audio.name)[1].lower() in _EXTENSIONS
                    ]
    return sorted(found)


def _read_trials(path, by_id, data_folder, log):
    """Reads a ``veri_test2.txt`` trial list into (label, enrol ID, test ID).

    Only labelled trials: a VoxCeleb list without labels cannot be scored.
    """
    trials = []
    for line_number, fields in read_fields(path, log, "1|0 pathA pathB", 3):
        try:
            label, *paths = parse_trial(fields)
        except ValueError:
            log.reject(path, line_number, f"trial label {fields[0]!r} is not 0 or 1")
            continue
        ids = [utterance_id(trial_path) for trial_path in paths]
        unknown = [p for p, trial_id in zip(paths, ids) if trial_id not in by_id]
        if unknown:
            log.reject(
                path,
                line_number,
                f"unknown utterance(s) {', '.join(unknown)}: "
                f"no such id*/video/file under {data_folder}",
            )
            continue
        trials.append((label, *ids))
    return trials
