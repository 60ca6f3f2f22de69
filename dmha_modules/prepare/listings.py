"""Reading listing files: whitespace-separated fields, one entry a line.

Labels files, Kaldi's ``wav.scp`` / ``utt2spk`` / ``segments``, trial lists
and lists of audio files are all read here; a bad line is reported with
its file and line and skipped, so the rest is still checked.

Example
-------
>>> from dmha_modules.prepare.problems import ProblemLog
>>> path = os.path.join(getfixture("tmp_path"), "utt2spk")
>>> with open(path, "w") as listing:
...     _ = listing.write("a spk1\\n\\nb spk2\\nlonely\\na spk3\\n")
>>> log = ProblemLog()
>>> read_keyed(path, log, "UTTID SPEAKER", 2)
{'a': (1, ['a', 'spk1']), 'b': (3, ['b', 'spk2'])}
>>> [(problem.line, problem.message[:14]) for problem in log.problems]
[(4, 'malformed line'), (5, "duplicate ID '")]
"""

import os

from dmha_modules.io.audio_headers import strip_audio_extension


def read_fields(path, log, expected, count, spaced=None):
    """Yields (line number, fields) of a whitespace-separated listing file.

    Blank lines are ignored; a line without exactly ``count`` fields is
    rejected. A UTF-8 byte-order mark at the start is not part of the first
    field.

    Arguments
    ---------
    path : str
        The listing file.
    log : ProblemLog
        Gets the malformed lines.
    expected : str
        What a line holds, for the problem's message (``"path label -1"``).
    count : int
        Fields a line holds.
    spaced : str, optional
        "last": the last field takes the rest of the line (Kaldi's ``ID PATH``);
        "first": the first field takes the start of the line, the others being
        split from the right (``path label -1``); for paths with spaces.

    Yields
    ------
    tuple
        Line number (1-based) and the line's fields.
    """
    with open(path, encoding="utf-8-sig") as listing:  # -sig: a leading BOM is no path
        for line_number, line in enumerate(listing, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if spaced == "last":
                fields = stripped.split(maxsplit=count - 1)
            elif spaced == "first":
                fields = stripped.rsplit(maxsplit=count - 1)
            else:
                fields = stripped.split()
            if len(fields) != count:
                log.reject(
                    path,
                    line_number,
                    f"malformed line, expected '{expected}', got {stripped!r}",
                )
                continue
            yield line_number, fields


def read_keyed(path, log, expected, count, spaced=None):
    """Reads a listing file into ``{first field: (line number, fields)}``.

    A repeated first field is rejected and its first occurrence kept. The
    arguments are those of :func:`read_fields`.
    """
    table = {}
    for line_number, fields in read_fields(path, log, expected, count, spaced):
        key = fields[0]
        if key in table:
            log.reject(
                path,
                line_number,
                f"duplicate ID {key!r} (first on line {table[key][0]})",
            )
            continue
        table[key] = (line_number, fields)
    return table


def relative_path(path, folder, data_folder):
    """``path`` (absolute or relative to ``folder``) relative to ``data_folder``.

    Example
    -------
    >>> relative_path("x/y.wav", "/corpus/other", "/corpus/main")
    '../other/x/y.wav'
    """
    # os.path.relpath is slow; most paths need only normalising.
    if os.path.isabs(path) or folder != data_folder:
        path = os.path.relpath(os.path.join(folder, path), data_folder)
    return os.path.normpath(path).replace(os.sep, "/")


def utterance_id(rel):
    """Returns the ID of an audio path: the path without extension, "--" for "/".

    Example
    -------
    >>> utterance_id("id10001/1zcIwhmdeo4/00001.wav")
    'id10001--1zcIwhmdeo4--00001'
    """
    return strip_audio_extension(rel).replace("/", "--")
