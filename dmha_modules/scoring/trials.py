"""Trial lists: the pairs of utterances to score, and whether each is the same speaker.

One trial a line, in one of three formats:

- VoxCeleb (``veri_test2.txt``): ``1 enrol test``, 1 for the same speaker, 0 not;
- Kaldi / NIST: ``enrol test target|nontarget``;
- unlabelled: ``enrol test``.

Blank lines are skipped. Every bad line is reported, not only the first.

Example
-------
>>> parse_trial("1 id1/a.wav id2/b.wav".split())
(1, 'id1/a.wav', 'id2/b.wav')
>>> parse_trial("a.wav b.wav nontarget".split())
(0, 'a.wav', 'b.wav')
>>> parse_trial(["a.wav", "b.wav"])
(None, 'a.wav', 'b.wav')
"""

TRIAL_FORMATS = "'label enrol test', 'enrol test target|nontarget' or 'enrol test'"


def parse_trial(fields):
    """``(label or None, enrol, test)`` of one line's whitespace-separated fields.

    Arguments
    ---------
    fields : list of str
        The line's fields.

    Returns
    -------
    tuple
        ``label`` is 1 (same speaker), 0 (different speakers) or None (unlabelled).

    Raises
    ------
    ValueError
        The fields fit none of the formats; the message says which were expected.
    """
    if len(fields) == 3 and fields[0] in ("0", "1"):
        return int(fields[0]), fields[1], fields[2]
    if len(fields) == 3 and fields[2] in ("target", "nontarget"):
        return int(fields[2] == "target"), fields[0], fields[1]
    if len(fields) == 2:
        return None, fields[0], fields[1]
    raise ValueError(f"expected {TRIAL_FORMATS}, got {' '.join(fields)!r}")


def read_trials(path):
    """Reads a trial list; returns its trials and the problems of its bad lines.

    Arguments
    ---------
    path : str
        The trial list.

    Returns
    -------
    trials : list of tuple
        ``(line number, label or None, enrol, test)`` per good line.
    problems : list of tuple
        ``(line number or None, message)``: lines that fit no format, and a
        list that mixes labelled and unlabelled trials or holds none.
    """
    trials, problems = [], []
    with open(path, encoding="utf-8-sig") as listing:
        for line_number, line in enumerate(listing, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                trials.append((line_number, *parse_trial(fields)))
            except ValueError as error:
                problems.append((line_number, str(error)))
    if not trials and not problems:
        problems.append((None, "no trials"))
    if len({label is None for _, label, _, _ in trials}) > 1:
        problems.append((None, "some trials are labelled and some are not"))
    return trials, problems
