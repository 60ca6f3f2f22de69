"""Writing a preparation's outputs: manifests, trials, rejects and summary.

Every source ends in the same files in its save folder: one CSV manifest per
split (``train.csv``, ``valid.csv``, ``test.csv``; columns ``ID, duration,
wav, spk_id`` and, when the source knows them, ``start, stop`` in samples,
``age``, ``age_group``, ``gender``), ``trials.csv`` when the source has
trials, ``rejects.csv`` listing what ``skip_bad`` dropped, and
``summary.json``. Each file is written atomically; a file the run has
nothing for is removed, as an earlier run's would mislead.

Example
-------
>>> from dmha_modules.prepare.utterances import Utterance
>>> row = Utterance("a", "spk1/a.wav", ("x", 1), spk_id="spk1", duration=1.25)
>>> save = str(getfixture("tmp_path"))
>>> outputs = write_outputs(save, {"train": [row]}, trials=[], problems=[])
>>> print(open(outputs["train"]).read().strip())
ID,duration,wav,spk_id
a,1.25,$data_root/spk1/a.wav,spk1
"""

import csv
import logging
import os
from collections import Counter, defaultdict

from dmha_modules.io.atomic import write_atomic
from dmha_modules.prepare.splits import SPLITS

logger = logging.getLogger(__name__)

TRIALS_FILE = "trials.csv"
REJECTS_FILE = "rejects.csv"
SUMMARY_FILE = "summary.json"


def _format_number(value):
    """Writes seconds or years to the microsecond, without trailing zeros."""
    if value is None:
        return ""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _write_manifest(output, rows):
    """Writes one manifest; optional columns appear when any row has them."""
    columns = ["ID", "duration", "wav", "spk_id"]
    segmented = any(row.start is not None for row in rows)
    if segmented:
        columns += ["start", "stop"]
    optional = [
        (name, any(getattr(row, name) is not None for row in rows))
        for name in ("age", "age_group", "gender")
    ]
    columns += [name for name, present in optional if present]
    has_age, has_group, has_gender = (present for _, present in optional)
    writer = csv.writer(output)
    writer.writerow(columns)
    for row in rows:
        values = [
            row.id,
            _format_number(row.duration),
            f"$data_root/{row.rel}",
            row.spk_id,
        ]
        if segmented:
            values += [
                round(row.start * row.sample_rate),
                round((row.start + row.duration) * row.sample_rate),
            ]
        if has_age:
            values.append(_format_number(row.age))
        if has_group:
            values.append(row.age_group or "")
        if has_gender:
            values.append(row.gender or "")
        writer.writerow(values)


def _write_trials(output, trials):
    writer = csv.writer(output)
    writer.writerow(["ID", "label", "enrol", "test"])
    for index, (label, enrol, test) in enumerate(trials):
        writer.writerow([f"trial{index:07d}", label, enrol, test])


def _write_rejects(output, problems):
    writer = csv.writer(output)
    writer.writerow(["file", "line", "problem"])
    for problem in problems:
        writer.writerow([problem.file, problem.line or "", problem.message])


def _write_or_remove(path, content, write):
    """Writes ``content`` with ``write`` when there is any, else removes ``path``."""
    if content:
        write_atomic(path, lambda output: write(output, content))
        return True
    if os.path.exists(path):
        os.remove(path)
    return False


def write_outputs(save_folder, splits, trials, problems):
    """Writes the manifests, trials and rejects; removes stale ones.

    Arguments
    ---------
    save_folder : str
        Where they go.
    splits : dict
        Split name -> rows (:class:`~dmha_modules.prepare.utterances.Utterance`).
    trials : list of tuple
        (label, enrol ID, test ID) per trial.
    problems : list of Problem
        What was dropped (``rejects.csv``).

    Returns
    -------
    dict
        Split name and "trials" -> path, for the files written.
    """
    os.makedirs(save_folder, exist_ok=True)
    outputs = {}
    for name in SPLITS:
        path = os.path.join(save_folder, f"{name}.csv")
        if _write_or_remove(path, splits.get(name), _write_manifest):
            outputs[name] = path
    trials_path = os.path.join(save_folder, TRIALS_FILE)
    if _write_or_remove(trials_path, trials, _write_trials):
        outputs["trials"] = trials_path
    rejects_path = os.path.join(save_folder, REJECTS_FILE)
    if _write_or_remove(rejects_path, problems, _write_rejects):
        logger.warning(
            "Dropped the rows of %d problem(s), listed in %s",
            len(problems),
            rejects_path,
        )
    return outputs


def summarise(source, splits, extra, group_order):
    """Per split: speakers, utterances, hours, and counts per age group / gender.

    Arguments
    ---------
    source : str
        The source's name.
    splits : dict
        Split name -> rows.
    extra : dict
        More entries of the summary.
    group_order : sequence of str
        The order of the age groups; unknown ones come after, by name.

    Returns
    -------
    dict
        The content of ``summary.json``.
    """

    def group_rank(item):
        group = item[0]
        position = group_order.index(group) if group in group_order else None
        return (position is None, position, group)

    summary = {"source": source, "splits": {}, **extra}
    for name, rows in splits.items():
        groups = defaultdict(lambda: [set(), 0])
        genders = Counter()
        for row in rows:
            if row.age_group is not None:
                groups[row.age_group][0].add(row.spk_id)
                groups[row.age_group][1] += 1
            if row.gender is not None:
                genders[row.gender] += 1
        summary["splits"][name] = {
            "speakers": len({row.spk_id for row in rows if row.spk_id}),
            "utterances": len(rows),
            "hours": round(sum(row.duration for row in rows) / 3600, 4),
            "age_groups": {
                group: {"speakers": len(speakers), "utterances": count}
                for group, (speakers, count) in sorted(groups.items(), key=group_rank)
            },
            "genders": dict(sorted(genders.items())),
        }
    return summary


def format_summary(summary):
    """Renders a preparation summary as a text table.

    Arguments
    ---------
    summary : dict
        The content of ``summary.json``.

    Returns
    -------
    str

    Example
    -------
    >>> summary = {"source": "kaldi", "splits": {"train": {"speakers": 2,
    ...     "utterances": 5, "hours": 0.01, "age_groups": {"child": {
    ...     "speakers": 2, "utterances": 5}}, "genders": {}}}}
    >>> print(format_summary(summary))
    split  speakers  utterances  hours  child
    train         2           5   0.01  2 / 5
    (age groups: speakers / utterances)
    """
    groups = list(
        dict.fromkeys(
            g for split in summary["splits"].values() for g in split["age_groups"]
        )
    )
    header = ["split", "speakers", "utterances", "hours", *groups]
    lines = []
    for name, split in summary["splits"].items():
        cells = [
            name,
            str(split["speakers"]),
            str(split["utterances"]),
            f"{split['hours']:.2f}",
        ]
        for group in groups:
            counts = split["age_groups"].get(group, {"speakers": 0, "utterances": 0})
            cells.append(f"{counts['speakers']} / {counts['utterances']}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        for row in [header, *lines]
    ]
    if groups:
        text.append("(age groups: speakers / utterances)")
    extra = {k: v for k, v in summary.items() if k not in ("source", "splits") and v}
    text += [f"{key.replace('_', ' ')}: {value}" for key, value in extra.items()]
    return "\n".join(text)
