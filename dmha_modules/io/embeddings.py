"""Writing embeddings: NumPy ``.npz`` / ``.npy`` or Kaldi ``.ark`` + ``.scp``.

Every writer writes all its files (a pair for ``.npy`` and ``.ark``) through
:func:`dmha_modules.io.atomic.atomic_paths`: temporary files first, renamed into
place only when all are written, so a write that fails (a full disk, say)
leaves the old output whole and no temporary file, and an interrupted one
never leaves half a file.
"""

import os
import struct

import numpy as np

from dmha_modules.io.atomic import atomic_paths

FORMATS = (".npz", ".npy", ".ark")


def kaldi_vector(vector):
    """Kaldi's binary float-vector record (``FV``) of a 1-D float32 array."""
    vector = np.asarray(vector, dtype="<f4")
    return b"\0B" + b"FV " + b"\x04" + struct.pack("<i", len(vector)) + vector.tobytes()


def written_files(path):
    """The files ``write_embeddings(path, ...)`` writes: ``path`` and its ids or index file.

    Example
    -------
    >>> written_files("out/emb.npy"), written_files("emb.npz")
    (['out/emb.npy', 'out/emb.txt'], ['emb.npz'])
    """
    stem, suffix = os.path.splitext(path)
    companion = {".npy": ".txt", ".ark": ".scp"}.get(suffix)
    return [path] if companion is None else [path, stem + companion]


def write_embeddings(path, ids, embeddings):
    """Writes embeddings in the format of ``path``'s extension.

    - ``.npz``: one array per id.
    - ``.npy``: an ``(N, E)`` float32 matrix, plus ``<stem>.txt`` with the ids
      of its rows, one per line.
    - ``.ark``: Kaldi binary float vectors, plus ``<stem>.scp`` pointing into
      it (ids must not contain whitespace).

    Arguments
    ---------
    path : str
        Output file ending in ``.npz``, ``.npy`` or ``.ark``.
    ids : list of str
        Utterance ids, one per row.
    embeddings : numpy.ndarray
        ``(N, E)`` float32.

    Returns
    -------
    list of str
        The files written.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "emb.npz")
    >>> _ = write_embeddings(path, ["a", "b"], np.eye(2, dtype=np.float32))
    >>> np.load(path)["b"]
    array([0., 1.], dtype=float32)
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
    check_output(path, ids)
    files = written_files(path)
    suffix = os.path.splitext(path)[1]
    with atomic_paths(*files) as temporaries:
        if suffix == ".npz":
            np.savez(temporaries[0], **dict(zip(ids, embeddings)))
        elif suffix == ".npy":
            np.save(temporaries[0], embeddings)
            with open(temporaries[1], "x", encoding="utf-8", newline="") as listing:
                listing.writelines(f"{i}\n" for i in ids)
        else:
            _write_ark(*temporaries, os.path.abspath(path), ids, embeddings)
    return files


def _write_ark(ark_path, scp_path, final_ark, ids, embeddings):
    """Writes the ``.ark`` and its ``.scp``, whose offsets point into ``final_ark``."""
    with open(ark_path, "xb") as ark, open(scp_path, "x", encoding="utf-8", newline="") as scp:
        for utterance, vector in zip(ids, embeddings):
            ark.write(utterance.encode("utf-8") + b" ")
            scp.write(f"{utterance} {final_ark}:{ark.tell()}\n")
            ark.write(kaldi_vector(vector))


def check_output(path, ids):
    """Raises the ``ValueError`` that ``write_embeddings(path, ids, ...)`` would raise
    for the format or the ids, so a caller can refuse them before computing anything.

    Example
    -------
    >>> check_output("emb.ark", ["a", "b c"])
    Traceback (most recent call last):
    ...
    ValueError: Kaldi ids cannot hold whitespace: ['b c']
    """
    suffix = os.path.splitext(path)[1]
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown embedding format; use one of {', '.join(FORMATS)}")
    if len(set(ids)) != len(ids):
        raise ValueError("utterance ids repeat; each id must name one embedding")
    if suffix == ".ark":
        spaced = [i for i in ids if not i or any(c.isspace() for c in i)]
        if spaced:
            raise ValueError(f"Kaldi ids cannot hold whitespace: {spaced[:3]}")
