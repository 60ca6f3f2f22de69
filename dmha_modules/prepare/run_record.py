"""The record of a finished preparation, which lets an unchanged run be skipped.

``prepare_options.json`` in the save folder holds the source, its options,
a fingerprint of its inputs (size and modification time of the listing
files, not of every audio file) and the outputs written. A run with the same
record finds its outputs there and skips the work; any change redoes it.

Example
-------
>>> save = str(getfixture("tmp_path"))
>>> record = run_record("kaldi", {"seed": 1}, {})
>>> unchanged_outputs(save, record) is None
True
>>> remember(save, record, {"train": os.path.join(save, "train.csv")})
>>> open(os.path.join(save, "train.csv"), "w").close()
>>> unchanged_outputs(save, record) == {"train": os.path.join(save, "train.csv")}
True
"""

import json
import logging
import os

from dmha_modules.io.atomic import write_atomic

logger = logging.getLogger(__name__)

OPTIONS_FILE = "prepare_options.json"
# Bumped whenever the manifests' content changes, so older outputs are redone.
FORMAT_VERSION = 1


def fingerprint(paths):
    """Size and modification time of listing files, by absolute path."""
    prints = {}
    for path in paths:
        stat = os.stat(path)
        prints[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns]
    return prints


def run_record(source, options, inputs):
    """What the outputs of a run depend on.

    Arguments
    ---------
    source : str
        The source's name.
    options : dict
        Its options (JSON values).
    inputs : dict
        Fingerprint of its inputs (JSON values).

    Returns
    -------
    dict
    """
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "options": options,
        "inputs": inputs,
    }


def unchanged_outputs(save_folder, record):
    """Returns the outputs of an earlier run with the same ``record``, or None."""
    try:
        with open(os.path.join(save_folder, OPTIONS_FILE), encoding="utf-8") as saved:
            previous = json.load(saved)
    except (OSError, ValueError):
        return None
    outputs = previous.pop("outputs", None)
    if previous != record or not outputs:
        return None
    outputs = {name: os.path.join(save_folder, file) for name, file in outputs.items()}
    if not all(os.path.isfile(path) for path in outputs.values()):
        return None
    logger.info(
        "Skipping preparation: inputs and options are unchanged since the last run "
        "(delete %s to force it).",
        os.path.join(save_folder, OPTIONS_FILE),
    )
    return outputs


def forget(save_folder):
    """Removes the record of the last run, before its outputs are replaced.

    The record goes first and the new one last, so an interrupted run is
    never mistaken for a finished one.
    """
    path = os.path.join(save_folder, OPTIONS_FILE)
    if os.path.exists(path):
        os.remove(path)


def remember(save_folder, record, outputs):
    """Records a finished run: its ``record`` and the ``outputs`` it wrote."""
    saved = {
        **record,
        "outputs": {name: os.path.basename(path) for name, path in outputs.items()},
    }
    write_atomic(
        os.path.join(save_folder, OPTIONS_FILE),
        lambda output: json.dump(saved, output, indent=2),
    )
