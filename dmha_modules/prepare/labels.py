"""The original code's labels files and clients / impostors trial files.

A labels file holds ``path label -1`` per line; trial files hold
``pathA pathB`` per line (see :func:`prepare_labels_file`).
"""

import os

from dmha_modules.prepare.listings import read_fields, relative_path, utterance_id
from dmha_modules.prepare.pipeline import Corpus, prepare_corpus
from dmha_modules.prepare.utterances import (
    Utterance,
    kept,
    probe_utterances,
    reject_duplicates,
)


def prepare_labels_file(
    data_folder,
    save_folder,
    train_labels,
    valid_labels=None,
    trials_clients=None,
    trials_impostors=None,
    label_kind="speaker",
    num_classes=None,
    valid_data_folder=None,
    skip_bad=False,
    jobs=None,
):
    """Converts the original code's labels and trial files into manifests.

    A labels file holds one ``path label -1`` per line: an audio path relative
    to ``data_folder`` and inside it (extension optional: ``.wav`` then
    ``.flac`` are tried; absolute paths and paths leaving the folder are
    refused, as is a third field other than ``-1``) and a class index. Its
    classes must be exactly ``0..N-1``, each used by a line (so N is at most
    the number of lines). The files are the splits the original trained on,
    kept as they are: the train labels file gives ``train.csv``, the valid one
    ``valid.csv``. Trial files hold ``pathA pathB`` per line, same-speaker
    pairs in the clients file and different-speaker pairs in the impostors
    file; they give ``trials.csv`` (``ID, label, enrol, test``, label 1 for
    clients, enrol/test being IDs of ``valid.csv``). Without a valid labels
    file, ``valid.csv`` holds the trial files' audio (speakers unknown).

    Arguments
    ---------
    data_folder : str
        Folder the labels-file paths are relative to (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    train_labels, valid_labels : str
        The train and (optional) validation labels files; validation labels
        must lie in the train range.
    trials_clients, trials_impostors : str, optional
        Trial files of same-speaker and different-speaker pairs; both or neither.
    label_kind : str
        "speaker" (``spk_id``, the speaker-verification code) or "age_group"
        (``age_group``; the age variant, naming no speaker: ``spk_id`` empty).
    num_classes : int, optional
        N; by default the largest train label + 1.
    valid_data_folder : str, optional
        Root of the valid labels' and trial paths if not ``data_folder`` (the
        original's ``--valid_data_dir``); manifest paths keep ``$data_root``.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        "train", "valid" (when any) and "trials" (when given) -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.

    Example
    -------
    >>> import numpy, soundfile
    >>> data = str(getfixture("tmp_path"))
    >>> for name in ("a", "b"):
    ...     soundfile.write(os.path.join(data, name + ".wav"), numpy.zeros(1600), 16000)
    >>> labels = os.path.join(data, "train.lst")
    >>> with open(labels, "w") as listing:
    ...     _ = listing.write("a 0 -1\\nb 1 -1\\n")
    >>> out = prepare_labels_file(data, os.path.join(data, "prep"), labels)
    >>> print(open(out["train"]).read().strip())
    ID,duration,wav,spk_id
    a,0.1,$data_root/a.wav,0
    b,0.1,$data_root/b.wav,1
    """
    listings = (train_labels, valid_labels, trials_clients, trials_impostors)
    return _prepare_listings(listings, data_folder, valid_data_folder, save_folder,
                             label_kind, num_classes, skip_bad, jobs)


def _check_label_options(label_kind, trials):
    """Refuses an unknown ``label_kind``, and one of the two ``trials`` files alone."""
    if label_kind not in ("speaker", "age_group"):
        raise ValueError(
            f"label_kind must be 'speaker' or 'age_group', got {label_kind!r}"
        )
    trials_clients, trials_impostors = trials
    if (trials_clients is None) != (trials_impostors is None):
        raise ValueError(
            "trials_clients and trials_impostors go together: give both or neither"
        )


def _prepare_listings(listings, data_folder, valid_data_folder, save_folder,
                      label_kind, num_classes, skip_bad, jobs):
    """Checks the options of :func:`prepare_labels_file`, then prepares its files.

    ``listings`` are the train labels, valid labels, clients and impostors
    files, None when not given.
    """
    _check_label_options(label_kind, trials=listings[2:])
    valid_data_folder = valid_data_folder or data_folder

    def read(log):
        return _read_corpus(listings, data_folder, valid_data_folder, num_classes,
                            label_kind, log, jobs)

    return prepare_corpus(
        "labels",
        data_folder,
        save_folder,
        {
            "valid_data_folder": os.path.abspath(valid_data_folder),
            "label_kind": label_kind,
            "num_classes": num_classes,
        },
        {path: "labels or trials file" for path in listings if path is not None},
        read,
        skip_bad,
        # The valid labels name the train speakers: validation is closed-set.
        speaker_disjoint=False,
    )


def _read_corpus(listings, data_folder, valid_data_folder, num_classes, label_kind,
                 log, jobs):
    """Reads the ``listings`` into a corpus: checked train and valid rows, trials."""
    train_labels, valid_labels, trials_clients, trials_impostors = listings
    train, labels_of = _read_labels(train_labels, data_folder, data_folder, log)
    _bound_labels(train, labels_of, num_classes, train_labels, log)
    n_classes = num_classes
    if n_classes is None:
        n_classes = max(labels_of.values(), default=-1) + 1
    valid = []
    if valid_labels is not None:
        valid, valid_labels_of = _read_labels(
            valid_labels, valid_data_folder, data_folder, log
        )
        labels_of.update(valid_labels_of)
    trials = []
    if trials_clients is not None:
        valid, trials = _read_trial_pairs(
            [(trials_clients, 1), (trials_impostors, 0)],
            valid_data_folder,
            data_folder,
            valid if valid_labels is not None else None,
            log,
        )
    _set_labels(train + valid, labels_of, n_classes, label_kind, log)
    reject_duplicates(train + valid, log)
    probe_utterances(train + valid, data_folder, log, jobs)
    if not kept(train):
        log.stop(train_labels, None, "no usable utterance")
    _check_label_gaps(kept(train), labels_of, n_classes, train_labels, log)
    kept_ids = {row.id for row in kept(valid)}
    # Under skip_bad, a trial whose audio was dropped goes with it.
    trials = [trial for trial in trials if {trial[1], trial[2]} <= kept_ids]
    return Corpus(
        splits={"train": train, "valid": valid},
        trials=trials,
        group_order=[str(label) for label in range(n_classes)],
    )


def _outside(listed, folder):
    """Why the ``listed`` path may not be used (None when it is a path inside ``folder``).

    A path out of the folder would put audio of another corpus, perhaps at
    another sample rate, among this one's.

    Example
    -------
    >>> _outside("spk1/a.wav", "corpus"), _outside("a/../../b.wav", "corpus")
    (None, "path 'a/../../b.wav' leaves corpus")
    """
    if os.path.isabs(listed):
        return f"absolute path {listed!r}: paths are relative to {folder}"
    if os.path.normpath(listed).split(os.sep)[0] == os.pardir:
        return f"path {listed!r} leaves {folder}"
    return None


def _read_labels(path, folder, data_folder, log):
    """Reads a labels file into rows and {row: label}."""
    rows, labels_of = [], {}
    for line_number, fields in read_fields(path, log, "path label -1", 3, spaced="first"):
        problem = _outside(fields[0], folder)
        if problem is None and fields[2] != "-1":
            problem = f"third field {fields[2]!r} is not -1 (lines are 'path label -1')"
        if problem is not None:
            log.reject(path, line_number, problem)
            continue
        rel = relative_path(fields[0], folder, data_folder)
        row = Utterance(utterance_id(rel), rel, (path, line_number))
        rows.append(row)
        try:
            labels_of[row] = int(fields[1])
        except ValueError:
            log.reject_row(
                row, path, line_number, f"label {fields[1]!r} is not an integer"
            )
    return rows, labels_of


def _bound_labels(rows, labels_of, num_classes, path, log):
    """Stops on classes that the train ``rows`` cannot all use, before anything is sized by them.

    Classes ``0..N-1`` each need a row, so N is at most the number of rows. A
    label beyond (``PATH 99999999999999999999 -1``) follows a gap whatever
    is dropped: it is reported as one and forgotten, so that the classes
    counted from the others stay within the rows. A given ``num_classes``
    beyond the rows stops the run at once.
    """
    if num_classes is not None:
        if num_classes > len(rows):
            log.stop(path, None, f"num_classes {num_classes} exceeds the {len(rows)} "
                     "entries of the file: each class needs one")
            log.raise_if_bad(skip_bad=True)  # raises: dropping rows cannot fix it
        return  # labels outside 0..num_classes-1 are rejected row by row (_set_labels)
    for row, label in list(labels_of.items()):
        if label >= len(rows):
            del labels_of[row]
            log.stop(path, row.origin[1], f"label {label} follows a gap: the file's "
                     f"{len(rows)} entries cannot use every label of 0..{label}")


def _set_labels(rows, labels_of, num_classes, label_kind, log):
    """Puts each row's label in its ``spk_id`` or ``age_group``, if in range."""
    for row in rows:
        label = labels_of.get(row)
        if label is None:
            continue
        if not 0 <= label < num_classes:
            log.reject_row(
                row, *row.origin, f"label {label} is outside 0..{num_classes - 1}"
            )
        elif label_kind == "speaker":
            row.spk_id = str(label)
        else:
            row.age_group = str(label)


def _read_trial_pairs(files, folder, data_folder, known, log):
    """Reads trial files of ``pathA pathB`` pairs.

    Returns the utterances the trials use (``known`` when given, after
    rejecting trial paths not in it; else one row per distinct path) and
    the trials as (label, enrol ID, test ID).
    """
    by_id = {row.id: row for row in known} if known is not None else {}
    rows = list(known) if known is not None else []
    trials = []
    for path, label in files:
        for line_number, fields in read_fields(path, log, "pathA pathB", 2):
            outside = list(filter(None, (_outside(field, folder) for field in fields)))
            if outside:
                log.reject(path, line_number, outside[0])
                continue
            ids = []
            for field in fields:
                rel = relative_path(field, folder, data_folder)
                row_id = utterance_id(rel)
                if row_id not in by_id:
                    if known is not None:
                        log.reject(
                            path,
                            line_number,
                            f"unknown utterance: {field!r} is not in the "
                            "valid labels file",
                        )
                        break
                    by_id[row_id] = Utterance(row_id, rel, (path, line_number))
                    rows.append(by_id[row_id])
                ids.append(row_id)
            else:
                trials.append((label, *ids))
    return rows, trials


def _check_label_gaps(rows, labels_of, n_classes, path, log):
    """Stops the run when labels in ``0..n_classes-1`` are never used."""
    first_line = {}
    for row in rows:  # in file order
        if row in labels_of:
            first_line.setdefault(labels_of[row], row.origin[1])
    missing = [label for label in range(n_classes) if label not in first_line]
    runs = []
    for label in missing:
        if runs and runs[-1][1] == label - 1:
            runs[-1][1] = label
        else:
            runs.append([label, label])
    for low, high in runs:
        unused = f"label {low}" if low == high else f"labels {low}..{high}"
        problem = (
            f"{unused} never used by a usable row "
            f"(labels must cover 0..{n_classes - 1})"
        )
        if high + 1 < n_classes:
            log.stop(
                path, first_line[high + 1], f"label {high + 1} follows a gap: {problem}"
            )
        else:
            log.stop(path, None, problem)
