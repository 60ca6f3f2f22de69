"""Common Voice release folders: TSV tables of clips in ``clips/``, with age groups."""

import csv
import logging
import os

from dmha_modules.age.groups import COMMONVOICE_AGE_GROUPS
from dmha_modules.prepare.listings import utterance_id
from dmha_modules.prepare.pipeline import Corpus, prepare_corpus
from dmha_modules.prepare.splits import check_ratios
from dmha_modules.prepare.utterances import (
    Utterance,
    probe_utterances,
    reject_duplicates,
)

logger = logging.getLogger(__name__)

_OFFICIAL = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}
_REQUIRED = "a Common Voice release needs validated.tsv (or train/dev/test.tsv)"


def prepare_commonvoice(
    data_folder,
    save_folder,
    use_official_splits=True,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    skip_bad=False,
    jobs=None,
):
    """Converts a Common Voice release folder into manifests with age groups.

    Reads ``train.tsv`` / ``dev.tsv`` / ``test.tsv`` (Common Voice's own
    speaker-disjoint splits) when ``use_official_splits`` and all three
    exist, else ``validated.tsv`` split by speaker (``client_id``) here,
    stratified by age group. Columns used: ``client_id``, ``path`` (a clip in
    ``clips/``), ``age`` and, when present, ``gender``. Rows without an age
    are dropped and counted in the summary; Common Voice's age names
    (``teens``, ``twenties``, ...) are the age groups (``age`` in years is
    unknown, so that column is absent). Durations come from the MP3 headers.

    Arguments
    ---------
    data_folder : str
        Release folder holding the TSVs and ``clips/``.
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    use_official_splits : bool
        Use train/dev/test.tsv when present.
    valid_ratio, test_ratio : float
        Speaker shares held out when splitting ``validated.tsv``.
    seed : int
        Seed of that split.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    """
    check_ratios(valid_ratio, test_ratio)
    tables = _tables(data_folder, use_official_splits)

    def read(log):
        rows_of, without_age = _read_tables(tables, data_folder, log, jobs)
        # The official tables are splits; validated.tsv is split here.
        validated = rows_of.pop("validated", [])
        return Corpus(
            splits=rows_of,
            unsplit=validated,
            held_out={"valid": valid_ratio, "test": test_ratio},
            seed=seed,
            group_order=COMMONVOICE_AGE_GROUPS,
            extra={"rows_without_age": without_age},
        )

    return prepare_corpus(
        "commonvoice",
        data_folder,
        save_folder,
        {
            "tables": sorted(tables),
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
        },
        {path: _REQUIRED for path in tables.values()},
        read,
        skip_bad,
    )


def _tables(data_folder, use_official_splits):
    """The TSVs to read: split name (or "validated") -> path."""
    if use_official_splits and all(
        os.path.isfile(os.path.join(data_folder, name)) for name in _OFFICIAL.values()
    ):
        return {
            split: os.path.join(data_folder, name) for split, name in _OFFICIAL.items()
        }
    return {"validated": os.path.join(data_folder, "validated.tsv")}


def _read_tables(tables, data_folder, log, jobs):
    """Reads the ``tables``, audio headers included: {split: rows}, rows without age."""
    rows_of, without_age = {}, 0
    for split, path in tables.items():
        rows_of[split], dropped = _read_table(path, log)
        without_age += dropped
    everything = [row for rows in rows_of.values() for row in rows]
    reject_duplicates(everything, log)
    probe_utterances(everything, data_folder, log, jobs, extensions=(".mp3",))
    logger.info("Dropped %d Common Voice rows without an age", without_age)
    return rows_of, without_age


def _read_table(path, log):
    """Reads one Common Voice TSV into rows; returns them and the count without age."""
    rows, without_age = [], 0
    with open(path, encoding="utf-8-sig", newline="") as table:
        # Sentences hold quotes: Common Voice does not quote its fields.
        reader = csv.reader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        missing = [
            column for column in ("client_id", "path", "age") if column not in header
        ]
        if missing:
            log.stop(path, 1, f"the header lacks column(s) {', '.join(missing)}")
            return rows, 0
        index = {column: header.index(column) for column in header}
        for fields in reader:
            line_number = reader.line_num
            if not any(fields):
                continue
            if len(fields) != len(header):
                log.reject(
                    path,
                    line_number,
                    f"malformed line: {len(fields)} fields, "
                    f"the header has {len(header)}",
                )
                continue
            age = fields[index["age"]].strip()
            if not age:
                without_age += 1
                continue
            clip = fields[index["path"]]
            row = Utterance(
                utterance_id(clip),
                f"clips/{clip}",
                (path, line_number),
                spk_id=fields[index["client_id"]],
            )
            rows.append(row)
            if age not in COMMONVOICE_AGE_GROUPS:
                log.reject_row(
                    row,
                    path,
                    line_number,
                    f"age {age!r} is not a Common Voice age group "
                    f"({', '.join(COMMONVOICE_AGE_GROUPS)})",
                )
            row.age_group = age
            if "gender" in index:
                row.gender = fields[index["gender"]] or None
    return rows, without_age
