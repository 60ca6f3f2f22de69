"""What ``recipes/train.py`` trains on, checked before training starts.

The training YAML's ``source`` says where the manifests come from:

- ``kaldi``: Kaldi data dirs with ages in ``data_folder`` (speechocean762,
  downloaded when absent);
- ``labels``: the original code's labels files ``train_labels`` and
  ``valid_labels`` (``path label -1``, paths relative to ``data_folder``,
  the valid ones to ``valid_data_folder`` when given) and, for speakers, its
  trial files ``trials_clients`` / ``trials_impostors`` (``pathA pathB``);
- ``commonvoice``: a Common Voice release folder in ``data_folder``;
- ``voxceleb``: VoxCeleb1/2 trees in ``data_folder`` and the official
  ``trials_file``;
- ``manifests``: manifests already written by ``dmha prepare`` in
  ``prepared_folder`` (its ``--save_folder``; ``data_folder`` is the corpus
  they were prepared from).

The first four run their preparation (the YAML's ``preparations``) into
``manifest_folder``; ``manifests`` is copied there by
:func:`copy_prepared_manifests`, so an output folder always holds the
manifests it trained on. :func:`check_source_options` checks the options
before anything is written, :func:`check_manifests` the manifests and trial
list before training: every problem is reported at once, naming the file and
line, in a :class:`RecipeInputError`.

Speaker experiments score each held-out split on the corpus's trial list
(``trials.csv``) when the list names that split's utterances, else on random
pairs of its utterances (:func:`dmha_modules.scoring.metrics.trial_pairs`).
"""

import csv
import math
import os
import shutil
from dataclasses import dataclass, field

from speechbrain.dataio.encoder import CategoricalEncoder

from dmha_modules.age.groups import COMMONVOICE_AGE_GROUPS
from dmha_modules.io.atomic import atomic_paths
from dmha_modules.recipe.build import class_names, label_key, manifest_path
from dmha_modules.prepare import Problem

# The options each source reads besides data_folder (all null in the YAMLs).
SOURCE_OPTIONS = {
    "kaldi": (),
    "labels": ("train_labels", "valid_labels", "trials_clients", "trials_impostors",
               "valid_data_folder"),
    "commonvoice": (),
    "voxceleb": ("trials_file",),
    "manifests": ("prepared_folder",),
}
# The options naming a source's own trial list.
TRIAL_OPTIONS = {"labels": ("trials_clients", "trials_impostors"), "voxceleb": ("trials_file",)}
MANIFEST_FILES = ("train.csv", "valid.csv", "test.csv", "trials.csv", "summary.json")
TRIALS_COLUMNS = ("ID", "label", "enrol", "test")


class RecipeInputError(ValueError):
    """Problems with a training's options or data that stop it before it trains.

    Arguments
    ---------
    problems : list
        :class:`~dmha_modules.prepare.Problem` or str, one line each.

    Example
    -------
    >>> print(RecipeInputError([Problem("train.csv", 3, "duration 'x' is not a number")]))
    1 problem(s) with the training's input, training did not start:
    train.csv:3: duration 'x' is not a number
    """

    def __init__(self, problems):
        self.problems = [str(problem) for problem in problems]
        super().__init__(
            f"{len(self.problems)} problem(s) with the training's input, training did not "
            "start:\n" + "\n".join(self.problems)
        )


@dataclass
class TrialList:
    """The trials a held-out split is scored on.

    Arguments
    ---------
    trials : list of tuple
        ``(label, enrol ID, test ID)``, label 1 for the same speaker.
    origin : list of str
        The trial files they come from.

    Example
    -------
    >>> TrialList([(1, "id1--v--1", "id1--v--2")], ["veri_test2.txt"]).trials[0][0]
    1
    """

    trials: list
    origin: list = field(default_factory=list)


def check_source_options(hparams):
    """Stops when ``source`` is unknown, lacks an option it needs or gets another's.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.

    Raises
    ------
    RecipeInputError

    Example
    -------
    >>> options = dict.fromkeys(o for names in SOURCE_OPTIONS.values() for o in names)
    >>> check_source_options({**options, "task": "speaker", "source": "labels",
    ...     "train_labels": "train.txt", "trials_clients": "c.txt", "trials_file": "veri.txt"})
    Traceback (most recent call last):
    ...
    dmha_modules.recipe.inputs.RecipeInputError: 2 problem(s) with the training's input, training did not start:
    --trials_impostors: needed with --source labels: it goes with --trials_clients
    --trials_file: an option of --source voxceleb, not of labels
    """
    source = hparams["source"]
    if source not in SOURCE_OPTIONS:
        raise RecipeInputError([f"--source {source}: not one of {', '.join(SOURCE_OPTIONS)}"])
    given = {name for names in SOURCE_OPTIONS.values() for name in names if hparams[name]}
    needed = {
        "labels": [("train_labels", "the train labels file, 'path label -1' per line")],
        "manifests": [("prepared_folder", "the --save_folder of dmha prepare")],
    }.get(source, [])
    if source == "labels" and (hparams["task"] == "age" or not hparams["trials_clients"]):
        needed.append(("valid_labels", "the validation labels file"))
    if source == "labels" and hparams["trials_clients"]:
        needed.append(("trials_impostors", "it goes with --trials_clients"))
    if source == "labels" and hparams["trials_impostors"]:
        needed.append(("trials_clients", "it goes with --trials_impostors"))
    problems = [
        f"--{name}: needed with --source {source}"
        + (f" ({hparams['task']})" if name == "valid_labels" else "") + f": {why}"
        for name, why in needed if name not in given
    ]
    if hparams["task"] == "age":
        problems += [f"--{name}: age experiments have no trials" for name in sorted(given)
                     if "trials" in name]
    owner = {name: other for other, names in SOURCE_OPTIONS.items() for name in names}
    problems += [
        f"--{name}: an option of --source {owner[name]}, not of {source}"
        for name in sorted(given - set(SOURCE_OPTIONS[source]))
    ]
    if problems:
        raise RecipeInputError(problems)


def copy_prepared_manifests(prepared_folder, save_folder):
    """Copies the manifests, trial list and summary of ``dmha prepare`` into ``save_folder``.

    Files of an earlier copy that the prepared folder no longer has are removed.

    Example
    -------
    >>> prepared, save = (str(getfixture("tmp_path") / name) for name in ("p", "s"))
    >>> os.makedirs(prepared)
    >>> open(os.path.join(prepared, "train.csv"), "w").close()
    >>> copy_prepared_manifests(prepared, save)
    >>> os.listdir(save)
    ['train.csv']
    """
    for name in MANIFEST_FILES:
        source, target = os.path.join(prepared_folder, name), os.path.join(save_folder, name)
        if os.path.isfile(source):
            with atomic_paths(target) as (temporary,):
                shutil.copyfile(source, temporary)
        elif os.path.exists(target):
            os.remove(target)


def trial_origin(hparams):
    """The trial files behind the experiment's ``trials.csv``: the source's own list, if any.

    Example
    -------
    >>> hparams = {"source": "voxceleb", "trials_file": "/vox/veri_test2.txt"}
    >>> trial_origin(hparams)
    ['/vox/veri_test2.txt']
    """
    source = hparams["source"]
    given = [os.path.abspath(hparams[name]) for name in TRIAL_OPTIONS.get(source, ())
             if hparams[name]]
    if given:
        return given
    folder = hparams["prepared_folder" if source == "manifests" else "manifest_folder"]
    return [os.path.abspath(os.path.join(folder, "trials.csv"))]


@dataclass
class _Table:
    """A CSV file's header and its rows with their line numbers."""

    path: str
    header: list
    rows: list

    def ids(self):
        return {row["ID"] for _, row in self.rows}


def _read_table(path, problems):
    """Reads a CSV; rows whose field count differs from the header's are reported."""
    with open(path, newline="", encoding="utf-8") as table:
        reader = csv.DictReader(table)
        header, rows = list(reader.fieldnames or []), []
        for row in reader:
            # DictReader puts extra fields under None and fills missing ones with None.
            fields = [value for key, value in row.items() if key is not None and value is not None]
            fields += row.get(None, [])
            if len(fields) != len(header):
                problems.append(Problem(path, reader.line_num,
                                        f"{len(fields)} fields, the header has {len(header)}"))
            else:
                rows.append((reader.line_num, row))
    return _Table(path, header, rows)


def _needed_columns(table, columns, why, problems):
    """Reports the ``columns`` the table's header lacks; returns whether it has them all."""
    missing = [column for column in columns if column not in table.header]
    if missing:
        problems.append(Problem(
            table.path, 1, f"no column {', '.join(missing)} ({why}); the header is "
            f"{','.join(table.header) or 'empty'}"))
    return not missing


def _number_problem(name, text, positive=False):
    """What is wrong with a number field, or None."""
    try:
        value = float(text)
    except ValueError:
        return f"{name} {text!r} is not a number"
    if not math.isfinite(value) or (positive and value <= 0):
        return f"{name} {text!r} is not a {'positive ' if positive else ''}number"
    return None


def _check_rows(table, needs, problems):
    """Reports duplicate IDs, bad durations and ages, and empty ``needs`` fields."""
    first_line = {}
    for line, row in table.rows:
        found = []
        if row["ID"] in first_line:
            found.append(f"duplicate ID {row['ID']!r} (first on line {first_line[row['ID']]})")
        first_line.setdefault(row["ID"], line)
        found += [f"empty {column}" for column in ("ID", "wav", *needs) if not row[column]]
        found.append(_number_problem("duration", row["duration"], positive=True))
        if "age" in needs and row["age"]:
            found.append(_number_problem("age", row["age"]))
        problems += [Problem(table.path, line, text) for text in found if text]


def _check_audio_root(table, data_folder, problems):
    """Reports a first row whose audio is not under ``data_folder``: the wrong corpus root."""
    if not table.rows:
        problems.append(Problem(table.path, None, "no rows"))
        return
    line, row = table.rows[0]
    wav = row["wav"].replace("$data_root", data_folder)
    if row["wav"] and not os.path.exists(wav):
        problems.append(Problem(
            table.path, line, f"audio not found: {wav}; is --data_folder ({data_folder}) "
            "the folder these manifests were prepared from?"))


def _distinct(tables):
    """``(split, table)`` of each manifest once (the test split may be the valid one)."""
    return [(split, table) for split, table in tables.items()
            if not (split == "test" and table is tables["valid"])]


def _check_age_classes(hparams, tables, problems):
    """Reports age groups outside the classes the training groups give."""
    train = tables["train"]
    # Empty groups are reported by _check_rows.
    classes = class_names(hparams, [row for _, row in train.rows if row["age_group"]])
    if classes is None:
        known = [*hparams["age_groups"], *COMMONVOICE_AGE_GROUPS]
        problems.append(Problem(
            train.path, None, f"its age groups fit none of age_groups "
            f"({', '.join(hparams['age_groups'])}), Common Voice's groups "
            f"({', '.join(COMMONVOICE_AGE_GROUPS)}) or class indices 0..N-1: "
            + ", ".join(sorted({row["age_group"] for _, row in train.rows} - set(known)))))
        return None
    for _, table in _distinct(tables):
        problems += [
            Problem(table.path, line, f"age group {row['age_group']!r} is not one of the "
                    f"classes of {train.path} ({', '.join(classes)})")
            for line, row in table.rows if row["age_group"] not in [*classes, ""]
        ]
    return classes


def _check_resumed_classes(hparams, classes, problems):
    """Reports an output folder whose earlier training had other classes."""
    path = os.path.join(hparams["save_folder"], "label_encoder.txt")
    if classes is None or not os.path.exists(path):
        return
    encoder = CategoricalEncoder()
    encoder.load(path)
    saved = [encoder.ind2lab[index] for index in range(len(encoder))]
    if saved != list(classes):
        problems.append(Problem(
            path, None, f"this output folder trained on {len(saved)} other classes "
            f"({', '.join(saved[:5])}{', ...' if len(saved) > 5 else ''}); choose another "
            "--output_folder, or delete this one to start over"))


def _read_trials(path, tables, problems):
    """Reads ``trials.csv``; returns the held-out splits whose utterances it names, and it."""
    table = _read_table(path, problems)
    if not _needed_columns(table, TRIALS_COLUMNS, "a trial list", problems):
        return [], []
    held_out = {split: tables[split].ids() for split in ("valid", "test") if split in tables}
    mentions = [row[key] for _, row in table.rows for key in ("enrol", "test")]
    # The split holding the most of the trials' utterances; the others are unknown there.
    home = max(held_out, key=lambda split: sum(utt in held_out[split] for utt in mentions))
    trials = []
    for line, row in table.rows:
        found = [] if row["label"] in ("0", "1") else [f"label {row['label']!r} is not 0 or 1"]
        found += [f"unknown utterance {row[key]!r}: not in {tables[home].path}, which holds "
                  "the other trials" for key in ("enrol", "test")
                  if row[key] not in held_out[home]]
        problems += [Problem(path, line, text) for text in found]
        trials.append((int(row["label"] == "1"), row["enrol"], row["test"]))
    if not trials:
        problems.append(Problem(path, None, "no trials"))
    # A split that is another's file (test.csv absent: valid.csv) shares its trials.
    return [s for s in held_out if tables[s].path == tables[home].path], trials


def check_manifests(hparams, folder):
    """Checks the manifests and trial list in ``folder`` before training; returns the trials.

    Every split needs ``ID``, ``duration`` (a positive number) and ``wav``
    (its first row's audio found under ``data_folder``); training rows need
    their class (``age_group`` or ``spk_id``); age groups of every split must
    be classes of the training ones (``model_builder.age_classes``); ages in
    years (``age``), needed by a years head, must be numbers; valid and test
    rows of speakers need ``spk_id`` unless the trial list covers their
    split; trials need labels 0 or 1 and utterances of one held-out split;
    an output folder that trained on other classes is not resumed.
    Without ``test.csv``, the test split is ``valid.csv``.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    folder : str
        The folder holding ``train.csv``, ``valid.csv``, optionally
        ``test.csv`` and ``trials.csv``.

    Returns
    -------
    dict
        "valid" and "test" -> :class:`TrialList`, or None for random pairs.

    Raises
    ------
    RecipeInputError
        Listing every problem (``file:line: what``).
    """
    paths = {split: manifest_path(folder, split) for split in ("train", "valid", "test")}
    missing = [path for path in dict.fromkeys(paths.values()) if not os.path.isfile(path)]
    if missing:
        raise RecipeInputError(
            [Problem(path, None, "missing: a manifest of the experiment") for path in missing])
    problems = []
    tables = {split: _read_table(paths[split], problems) for split in ("train", "valid")}
    # Without test.csv the test split is the valid split's table itself, read once.
    tables["test"] = (tables["valid"] if paths["test"] == paths["valid"]
                      else _read_table(paths["test"], problems))
    trial_path = os.path.join(folder, "trials.csv")
    scored, trials = [], []
    if hparams["task"] == "speaker" and os.path.exists(trial_path):
        scored, trials = _read_trials(trial_path, tables, problems)
    if _check_columns(hparams, tables, scored, problems):
        classes = class_names(hparams, [row for _, row in tables["train"].rows])
        if hparams["task"] == "age":
            classes = _check_age_classes(hparams, tables, problems)
        _check_resumed_classes(hparams, classes, problems)
    if problems:
        raise RecipeInputError(problems)
    lists = {split: None for split in ("valid", "test")}
    lists.update({split: TrialList(trials, trial_origin(hparams)) for split in scored})
    return lists


def _check_columns(hparams, tables, scored, problems):
    """Checks every split's columns and rows; returns whether the columns are all there."""
    complete = True
    years_needed = hparams["task"] == "age" and (
        hparams["years_loss_weight"] > 0 or hparams["group_loss"] is None)
    if years_needed:
        why = ("the years head needs ages in years; without them train the age groups "
               "alone: --years_loss_weight 0")
        complete = _needed_columns(tables["train"], ["age"], why, problems)
    years = hparams["task"] == "age" and "age" in tables["train"].header
    for split, table in _distinct(tables):
        needs = [label_key(hparams)]
        if hparams["task"] == "speaker" and split != "train" and split in scored:
            needs = []  # trials say who is who
        needs += ["age"] if years else []
        why = "the recipe's " + ", ".join(["ID", "duration", "wav", *needs])
        if _needed_columns(table, ["ID", "duration", "wav", *needs], why, problems):
            _check_rows(table, needs, problems)
            _check_audio_root(table, hparams["data_folder"], problems)
        else:
            complete = False
    return complete
