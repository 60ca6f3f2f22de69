"""Outputs that appear whole or not at all.

Every file or folder the toolkit writes for a user goes through
:func:`atomic_paths`: the work writes temporary paths beside the outputs
(same folder, so the rename is atomic), which replace the outputs only when
all of it succeeded. A crash, Ctrl-C or error leaves the old outputs as they
were and no temporary behind.

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "scores.txt")
>>> write_atomic(path, lambda f: f.write("a b 0.5\\n")) == path
True
>>> try:
...     with atomic_paths(path) as (temporary,):
...         with open(temporary, "w") as f:
...             _ = f.write("half")
...         raise KeyboardInterrupt
... except KeyboardInterrupt:
...     pass
>>> open(path).read(), sorted(os.listdir(folder))
('a b 0.5\\n', ['scores.txt'])
"""

import contextlib
import os
import shutil
import uuid


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)


@contextlib.contextmanager
def atomic_paths(*paths):
    """Temporary paths that replace ``paths`` together when the block succeeds.

    Each temporary is a hidden name beside its output that keeps the output's
    extension (so writers that go by the extension still work) and is unique
    to this call (parallel workers never share one). The block writes files or
    makes folders there; an output folder that exists is replaced whole.
    Missing parent folders are created.

    Arguments
    ---------
    *paths : str or os.PathLike
        The outputs.

    Yields
    ------
    list of str
        One temporary path per output, in order.
    """
    paths = [os.path.abspath(os.fspath(path)) for path in paths]
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temporaries = []
    for path in paths:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        stem, extension = os.path.splitext(name)
        temporaries.append(os.path.join(folder, f".{stem}.{tag}.tmp{extension}"))
    try:
        yield temporaries
        for temporary, path in zip(temporaries, paths):
            if os.path.isdir(temporary) and os.path.isdir(path):
                shutil.rmtree(path)  # os.replace cannot replace a non-empty folder
            os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            _remove(temporary)


def write_atomic(path, write, binary=False):
    """Writes one file through :func:`atomic_paths`; returns ``path``.

    Arguments
    ---------
    path : str or os.PathLike
        The file to write.
    write : callable
        Gets the open temporary file: text (UTF-8, no newline translation)
        or, with ``binary``, bytes.
    binary : bool
        Open the file in binary mode.

    Returns
    -------
    str or os.PathLike
        ``path``.
    """
    with atomic_paths(path) as (temporary,):
        if binary:
            with open(temporary, "xb") as output:
                write(output)
        else:
            with open(temporary, "x", encoding="utf-8", newline="") as output:
                write(output)
    return path
