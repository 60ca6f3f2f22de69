"""Writing embeddings: NumPy ``.npz`` / ``.npy`` or Kaldi ``.ark`` + ``.scp``.

Every writer writes all its files (a pair for ``.npy`` and ``.ark``) to
temporary files first and only then renames them into place, so a write that
fails (a full disk, say) leaves the old output whole and no temporary file,
and an interrupted one never leaves half a file.
"""

import contextlib
import io
import os
import struct

import numpy as np

FORMATS = (".npz", ".npy", ".ark")


def _atomic(files):
    """Writes ``{path: bytes}``: every file to ``<path>.tmp``, then all renamed into place."""
    written = []
    try:
        for path, data in files.items():
            with open(path + ".tmp", "wb") as f:
                written.append(path + ".tmp")
                f.write(data)
    except BaseException:
        for tmp in written:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise
    for path in files:
        os.replace(path + ".tmp", path)


def kaldi_vector(vector):
    """Kaldi's binary float-vector record (``FV``) of a 1-D float32 array."""
    vector = np.asarray(vector, dtype="<f4")
    return b"\0B" + b"FV " + b"\x04" + struct.pack("<i", len(vector)) + vector.tobytes()


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
    stem, suffix = os.path.splitext(path)
    if suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **dict(zip(ids, embeddings)))
        _atomic({path: buffer.getvalue()})
        return [path]
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        _atomic({path: buffer.getvalue(),
                 stem + ".txt": "".join(f"{i}\n" for i in ids).encode("utf-8")})
        return [path, stem + ".txt"]
    if suffix == ".ark":
        ark, scp = bytearray(), []
        for utterance, vector in zip(ids, embeddings):
            ark += utterance.encode("utf-8") + b" "
            scp.append(f"{utterance} {os.path.abspath(path)}:{len(ark)}\n")
            ark += kaldi_vector(vector)
        _atomic({path: bytes(ark), stem + ".scp": "".join(scp).encode("utf-8")})
        return [path, stem + ".scp"]


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
