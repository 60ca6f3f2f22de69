"""The steps every source's preparation takes, around the source's own reading.

A source (one module of this package) checks its options, then hands
:func:`prepare_corpus` its listing files and a ``read`` function that turns
them into rows (:class:`Corpus`). Everything else is done here, the same for
every source: stop on missing listing files, skip a run whose inputs and
options are unchanged, report all bad input at once (or drop it under
``skip_bad``), hold speakers out for the valid and test splits, check that
the splits are speaker-disjoint, and write the outputs.

Example
-------
>>> import numpy, soundfile
>>> from dmha_modules.prepare.utterances import Utterance, probe_utterances
>>> data = str(getfixture("tmp_path"))
>>> for name in ("a", "b"):
...     soundfile.write(os.path.join(data, name + ".wav"), numpy.zeros(1600), 16000)
>>> def read(log):
...     rows = [Utterance(n, n + ".wav", ("files", None), spk_id=n) for n in "ab"]
...     probe_utterances(rows, data, log, jobs=1)
...     return Corpus(unsplit=rows, held_out={"valid": 0.5}, seed=1)
>>> save = os.path.join(data, "prep")
>>> outputs = prepare_corpus("example", data, save, {}, {}, read, skip_bad=False)
>>> sorted(outputs)
['train', 'valid']
"""

import json
import logging
import os
from dataclasses import dataclass, field

from dmha_modules.io.atomic import write_atomic
from dmha_modules.prepare.manifests import (
    SUMMARY_FILE,
    format_summary,
    summarise,
    write_outputs,
)
from dmha_modules.prepare.problems import ProblemLog
from dmha_modules.prepare.run_record import (
    fingerprint,
    forget,
    remember,
    run_record,
    unchanged_outputs,
)
from dmha_modules.prepare.splits import SPLITS, check_disjoint, hold_out
from dmha_modules.prepare.utterances import kept

logger = logging.getLogger(__name__)


@dataclass
class Corpus:
    """What a source's reading step found; rows marked bad are dropped later.

    Arguments
    ---------
    splits : dict
        Split name -> rows the source itself puts in that split.
    unsplit : list
        Rows whose speakers are shared out: ``held_out`` of them go to the
        held-out splits, the rest to "train".
    held_out : dict
        Held-out split name -> share of the speakers of ``unsplit``.
    seed : int
        Seed of that split.
    trials : list of tuple
        (label, enrol ID, test ID) per trial, for ``trials.csv``.
    group_order : sequence of str
        Order of the age groups in the summary.
    extra : dict
        More entries of the summary.

    Example
    -------
    >>> Corpus(splits={"train": []}).held_out
    {}
    """

    splits: dict = field(default_factory=dict)
    unsplit: list = field(default_factory=list)
    held_out: dict = field(default_factory=dict)
    seed: int = 0
    trials: list = field(default_factory=list)
    group_order: tuple = ()
    extra: dict = field(default_factory=dict)


def prepare_corpus(
    source,
    data_folder,
    save_folder,
    options,
    listings,
    read,
    skip_bad,
    inputs=None,
    log=None,
    speaker_disjoint=True,
):
    """Prepares one source: checks, reads, splits and writes it, or skips it.

    Arguments
    ---------
    source : str
        The source's name, in the summary and the run record.
    data_folder : str
        The corpus root (``$data_root``).
    save_folder : str
        Where the outputs go.
    options : dict
        The source's options the outputs depend on, for the run record (JSON
        values; ``data_folder`` and ``skip_bad`` are added).
    listings : dict
        Listing file -> what it is when it is required (a missing one stops
        the run), or None when it is optional. Those present are
        fingerprinted: a change to them redoes the run.
    read : callable
        The source's reading step: gets the :class:`ProblemLog`, returns a
        :class:`Corpus` (audio headers read).
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    inputs : dict, optional
        More of the inputs' fingerprint (e.g. a hash of a folder tree).
    log : ProblemLog, optional
        Holds problems found before, reported with those of the listings.
    speaker_disjoint : bool
        Stop when a speaker is in two splits.

    Returns
    -------
    dict
        Split name (and "trials") -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    """
    log = ProblemLog() if log is None else log
    present = [
        path
        for path, what in listings.items()
        if (log.require_file(path, what) if what else os.path.isfile(path))
    ]
    log.raise_if_bad(skip_bad)
    record = run_record(
        source,
        {"data_folder": os.path.abspath(data_folder), **options, "skip_bad": skip_bad},
        {**(inputs or {}), **fingerprint(present)},
    )
    previous = unchanged_outputs(save_folder, record)
    if previous is not None:
        return previous

    corpus = read(log)
    log.raise_if_bad(skip_bad)
    splits = {name: kept(rows) for name, rows in corpus.splits.items()}
    splits = hold_out(kept(corpus.unsplit), splits, corpus.held_out, corpus.seed)
    if speaker_disjoint:
        check_disjoint(splits, log)
        log.raise_if_bad(skip_bad)
    return _write(save_folder, source, record, splits, corpus, log.problems)


def _write(save_folder, source, record, splits, corpus, problems):
    """Writes the outputs and the summary, then records the finished run."""
    forget(save_folder)
    outputs = write_outputs(save_folder, splits, corpus.trials, problems)
    summary = summarise(
        source,
        {name: splits[name] for name in SPLITS if splits.get(name)},
        {"rejected_problems": len(problems), **corpus.extra},
        tuple(corpus.group_order),
    )
    write_atomic(
        os.path.join(save_folder, SUMMARY_FILE),
        lambda output: json.dump(summary, output, indent=2),
    )
    logger.info(
        "Prepared %s manifests in %s:\n%s", source, save_folder, format_summary(summary)
    )
    remember(save_folder, record, outputs)
    return outputs
