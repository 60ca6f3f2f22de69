"""Bad input, reported whole: every problem of a run, each naming its file and line.

A preparation collects its problems in a :class:`ProblemLog` while it reads
everything, then stops once with a :class:`BadInputError` listing them all,
having written nothing. With ``skip_bad`` the rows of droppable problems are
dropped instead (and listed in ``rejects.csv``); problems that dropping rows
cannot fix (a missing listing file, a gap in the labels) still stop the run.

Example
-------
>>> log = ProblemLog()
>>> log.reject("train.lst", 3, "label 'x' is not an integer")
>>> log.raise_if_bad(skip_bad=True)  # droppable: the run goes on without the row
>>> log.stop("valid.lst", None, "missing: labels file")
>>> log.raise_if_bad(skip_bad=True)
Traceback (most recent call last):
...
dmha_modules.prepare.problems.BadInputError: 2 problem(s) in the input, nothing was written:
train.lst:3: label 'x' is not an integer
valid.lst: missing: labels file
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is and what is wrong.

    Arguments
    ---------
    file : str
        The listing file (labels file, ``wav.scp``, TSV, ...) holding it.
    line : int or None
        1-based line number, None when the problem concerns the whole file.
    message : str
        What is wrong, naming the audio file where there is one.

    Example
    -------
    >>> print(Problem("train.lst", 3, "label 'x' is not an integer"))
    train.lst:3: label 'x' is not an integer
    """

    file: str
    line: int | None
    message: str

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class BadInputError(ValueError):
    """Raised with every problem a preparation found; nothing was written.

    Arguments
    ---------
    problems : list of Problem
        All problems, in the order they were found.
    skip_bad_helps : bool
        Whether ``skip_bad`` (``--skip-bad``) would drop them all.
    outcome : str
        What was done all the same.

    Example
    -------
    >>> problems = [Problem("train.lst", 2, "label 'x' is not an integer")]
    >>> error = BadInputError(problems, skip_bad_helps=False)
    >>> print(error)
    1 problem(s) in the input, nothing was written:
    train.lst:2: label 'x' is not an integer
    >>> error.problems[0].line
    2
    """

    def __init__(self, problems, skip_bad_helps, outcome="nothing was written"):
        self.problems = list(problems)
        advice = (
            "; use --skip-bad (skip_bad=True) to drop the bad rows instead"
            if skip_bad_helps
            else ""
        )
        super().__init__(
            f"{len(self.problems)} problem(s) in the input, {outcome}"
            f"{advice}:\n" + "\n".join(str(problem) for problem in self.problems)
        )


class DownloadError(RuntimeError):
    """Raised when a corpus cannot be downloaded, verified or unpacked.

    Its message says what failed and, without network, how to get the
    corpus by hand (see :func:`dmha_modules.prepare.download_speechocean762`).

    Example
    -------
    >>> from dmha_modules.prepare import download_speechocean762
    >>> data = str(getfixture("tmp_path"))
    >>> url = "http://127.0.0.1:9/speechocean762.tar.gz"  # nothing listens
    >>> try:
    ...     download_speechocean762(os.path.join(data, "so762"), url, timeout=5)
    ... except DownloadError as error:
    ...     print("by hand" in str(error))
    True
    """


class ProblemLog:
    """Collects the problems of one run and decides what they stop.

    Example
    -------
    >>> log = ProblemLog()
    >>> log.require_file("absent.lst", "labels file")
    False
    >>> [str(problem) for problem in log.fatal]
    ['absent.lst: missing: labels file']
    """

    def __init__(self):
        self.problems = []
        self.fatal = []

    def reject(self, file, line, message):
        """Records a problem that dropping its row fixes."""
        self.problems.append(Problem(file, line, message))

    def reject_row(self, row, file, line, message):
        """Records a problem with ``row`` and marks the row to be dropped."""
        row.bad = True
        self.reject(file, line, message)

    def stop(self, file, line, message):
        """Records a problem that dropping rows cannot fix."""
        problem = Problem(file, line, message)
        self.problems.append(problem)
        self.fatal.append(problem)

    def require_file(self, path, what):
        """Stops the run when the listing file ``path`` (``what``) is missing."""
        if os.path.isfile(path):
            return True
        self.stop(path, None, f"missing: {what}")
        return False

    def raise_if_bad(self, skip_bad, outcome=None):
        """Raises :class:`BadInputError` unless every problem may be skipped.

        ``outcome`` says what was done all the same (default: nothing was
        written, and ``skip_bad`` would help).
        """
        if self.fatal or (self.problems and not skip_bad):
            if outcome is None:
                raise BadInputError(self.problems, skip_bad_helps=not self.fatal)
            raise BadInputError(self.problems, skip_bad_helps=False, outcome=outcome)
