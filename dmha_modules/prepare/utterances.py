"""Manifest rows while they are built and checked, one :class:`Utterance` each.

A row a problem was found in is marked ``bad`` and dropped before writing
(under ``skip_bad``; otherwise the run stops).

Example
-------
>>> from dmha_modules.prepare.problems import ProblemLog
>>> rows = [Utterance("a", "a.wav", ("wav.scp", 1)),
...         Utterance("a", "b.wav", ("wav.scp", 2))]
>>> log = ProblemLog()
>>> reject_duplicates(rows, log)
>>> [row.id for row in kept(rows)], str(log.problems[0])
(['a'], "wav.scp:2: duplicate ID 'a' (first at wav.scp:1)")
"""

import os
from dataclasses import dataclass

from dmha_modules.io import audio_headers


@dataclass(slots=True, eq=False)
class Utterance:
    """One manifest row while it is being built and checked.

    Arguments
    ---------
    id : str
        The manifest's ``ID``.
    rel : str
        Audio path relative to the data folder, "/"-separated.
    origin : tuple
        (listing file, line or None) the row comes from: where its problems go.
    spk_id, age, age_group, gender : optional
        What the source knows of its speaker.
    duration : float, optional
        Seconds, from the audio header.
    start : float, optional
        Seconds into the audio, Kaldi segments only.
    sample_rate : int, optional
        Hz, from the audio header.
    bad : bool
        A problem was found: the row is dropped.

    Example
    -------
    >>> Utterance("spk1--a", "spk1/a.wav", ("train.lst", 1), spk_id="spk1").age is None
    True
    """

    id: str
    rel: str
    origin: tuple
    spk_id: str = ""
    age: float | None = None
    age_group: str | None = None
    gender: str | None = None
    duration: float | None = None
    start: float | None = None
    sample_rate: int | None = None
    bad: bool = False


def kept(rows):
    """The rows no problem was found in."""
    return [row for row in rows if not row.bad]


def reject_duplicates(rows, log):
    """Rejects rows whose ID an earlier row (e.g. of another dir) has."""
    first = {}
    for row in rows:
        if row.id in first:
            log.reject_row(
                row, *row.origin, f"duplicate ID {row.id!r} (first at {first[row.id]})"
            )
        else:
            first[row.id] = "{}:{}".format(*row.origin)


def probe_utterances(rows, data_folder, log, jobs, extensions=(".wav", ".flac")):
    """Fills duration and sample rate of ``rows``, rejecting unusable audio.

    A row's ``rel`` may lack its extension: then ``extensions`` are tried
    (see :func:`dmha_modules.io.audio_headers.audio_suffixes`) and the one found
    is appended to it.

    Arguments
    ---------
    rows : list of Utterance
        The rows.
    data_folder : str
        The folder their paths are relative to.
    log : ProblemLog
        Gets the unusable audio, at the row's origin.
    jobs : int or None
        Processes reading the headers; None for one per core.
    extensions : tuple of str
        What to try on a path without an audio extension.
    """
    items = [
        (
            os.path.join(data_folder, row.rel),
            audio_headers.audio_suffixes(row.rel, extensions),
        )
        for row in rows
    ]
    for row, (suffix, duration, sample_rate, error) in zip(
        rows, audio_headers.read_headers(items, jobs)
    ):
        if error is not None:
            log.reject_row(row, *row.origin, error)
            continue
        row.rel += suffix
        row.duration, row.sample_rate = duration, sample_rate
