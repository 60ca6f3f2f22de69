"""The exit status of every ``dmha`` verb, decided here and nowhere else.

- 0: done.
- 1: input problems: bad or missing files, a corpus that failed its checks,
  a model folder refused or unreadable, an output that cannot be written, a
  download that failed. Each problem is one ``dmha: ...`` line on stderr,
  naming its file; never a traceback.
  The batch verbs (``embed``, ``age``, ``score``) still process the good
  files, report each bad one as ``dmha: skipped <file>: <problem>`` and
  exit 1.
- 2: bad usage: options argparse refuses (it exits itself) or values the
  library function refuses.
- 130: interrupted (Ctrl-C): one line, no traceback; outputs are written
  whole or not at all, so earlier ones are kept as they were.

Example
-------
>>> def run(args):
...     raise InputError("a.lst:2: expected 'path' or 'id path'", "b.lst: no such file")
>>> import contextlib, io
>>> stderr = io.StringIO()
>>> with contextlib.redirect_stderr(stderr):
...     status = exit_status(run, None)
>>> status
1
>>> print(stderr.getvalue(), end="")
dmha: a.lst:2: expected 'path' or 'id path'
dmha: b.lst: no such file
"""

import pickle
import signal
import sys

# Nothing heavy is imported here: ``dmha``'s start-up (dmha_modules.cli) reports Ctrl-C with
# ``interrupted`` while torch and SpeechBrain load; ``input_problems`` imports what it names.


class InputError(Exception):
    """Problems with a verb's inputs that stop it; each message says what to fix.

    Arguments
    ---------
    *problems : str
        One line each, such as ``file:line: what is wrong``.

    Example
    -------
    >>> raise InputError("trials.txt: no trials")
    Traceback (most recent call last):
    ...
    dmha_modules.cli.errors.InputError: trials.txt: no trials
    """

    def __init__(self, *problems):
        self.problems = problems
        super().__init__("\n".join(problems))


def input_problems():
    """The input problems of every kind the verbs meet; any other ValueError is an option value.

    Returns
    -------
    tuple of type
    """
    from dmha_modules.folders.safety import ModelFolderError
    from dmha_modules.io.audio import AudioError
    from dmha_modules.original import OriginalFormatError
    from dmha_modules.prepare import BadInputError, DownloadError

    return (InputError, BadInputError, DownloadError, AudioError, OriginalFormatError,
            ModelFolderError, OSError, pickle.UnpicklingError)


# The shell's status of a process that SIGINT (Ctrl-C) ended.
INTERRUPTED = 128 + signal.SIGINT


def interrupted():
    """Says on one line that ``dmha`` was interrupted (Ctrl-C); returns ``INTERRUPTED``.

    Outputs are written whole or not at all, so none is left half-written.

    Example
    -------
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as stderr:
    ...     status = interrupted()
    >>> status, stderr.getvalue().count("\\n")
    (130, 1)
    """
    print("dmha: interrupted; no output is left half-written (earlier ones are kept as "
          "they were)", file=sys.stderr)
    return INTERRUPTED


def exit_status(run, args):
    """Runs a verb and turns what went wrong into its exit status.

    Arguments
    ---------
    run : callable
        The verb's ``run(args)``; returns 0, or 1 when it skipped bad files.
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    int
    """
    try:
        return run(args)
    except input_problems() as error:
        for problem in str(error).splitlines():  # one problem a line, each prefixed
            print(f"dmha: {problem}", file=sys.stderr)
        return 1
    except ValueError as error:  # option values the function refuses
        print(f"dmha: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted()


def report_skipped(error):
    """Reports a file a batch verb skipped: ``dmha: skipped <file>: <problem>``."""
    print(f"dmha: skipped {error}", file=sys.stderr)


def require_output(count, out):
    """Refuses to replace ``out`` with an empty output: no input could be used.

    Example
    -------
    >>> require_output(0, "emb.npz")
    Traceback (most recent call last):
    ...
    dmha_modules.cli.errors.InputError: emb.npz: not written: no input could be used (an existing emb.npz is left as it was)
    """
    if not count:
        raise InputError(
            f"{out}: not written: no input could be used (an existing {out} is left as it was)"
        )


def batch_status(summary, skipped, what="files failed"):
    """Prints a batch verb's summary; returns 1 when it ``skipped`` some inputs, else 0.

    Arguments
    ---------
    summary : str
        What was written, e.g. ``3 embeddings written to emb.npz``.
    skipped : int
        How many inputs were left out for bad files.
    what : str
        What they are, after their count.

    Returns
    -------
    int

    Example
    -------
    >>> batch_status("2 ages written to ages.csv", 1)
    2 ages written to ages.csv; 1 files failed
    1
    """
    print(summary + (f"; {skipped} {what}" if skipped else ""))
    return 1 if skipped else 0
