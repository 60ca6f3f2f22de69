"""Embedding files read back by independent readers (kaldiio, NumPy); atomic writes."""

import builtins
import errno
import os

import kaldiio
import numpy as np
import pytest

from dmha_modules.io.embeddings import check_output, write_embeddings

IDS = ["spk1/utt-1", "b_2", "ü3", "x"]


def random_embeddings(rows=len(IDS), size=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((rows, size)).astype(dtype)


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*.tmp*"))


def fail_writing(monkeypatch, folder, name):
    """Writing a new file in ``folder`` with ``name``'s extension fails, as on a full disk."""
    real_open = builtins.open
    extension = os.path.splitext(name)[1]

    def open_or_fail(file, mode="r", *args, **kwargs):
        path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if (("w" in mode or "x" in mode) and os.path.dirname(path) == str(folder)
                and path.endswith(extension)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_or_fail)


def test_ark_and_scp_read_back_with_kaldiio(tmp_path):
    embeddings = random_embeddings()
    ark, scp = tmp_path / "emb.ark", tmp_path / "emb.scp"
    assert write_embeddings(str(ark), IDS, embeddings) == [str(ark), str(scp)]

    table = kaldiio.load_scp(str(scp))
    assert list(table) == IDS
    for utterance, expected in zip(IDS, embeddings):
        vector = table[utterance]
        assert vector.dtype == np.float32 and vector.shape == (6,)
        np.testing.assert_array_equal(vector, expected)
    read = list(kaldiio.load_ark(str(ark)))
    assert [key for key, _ in read] == IDS
    np.testing.assert_array_equal(np.stack([vector for _, vector in read]), embeddings)

    # Byte for byte what kaldiio writes for the same vectors.
    kaldiio.save_ark(str(tmp_path / "kaldiio.ark"), dict(zip(IDS, embeddings)),
                     scp=str(tmp_path / "kaldiio.scp"))
    assert ark.read_bytes() == (tmp_path / "kaldiio.ark").read_bytes()
    assert leftovers(tmp_path) == []


def test_scp_points_into_the_ark_from_any_folder(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    embeddings = random_embeddings(seed=1)
    monkeypatch.chdir(tmp_path)
    write_embeddings("emb.ark", IDS, embeddings)  # a relative path
    lines = (tmp_path / "emb.scp").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[1].rsplit(":", 1)[0] for line in lines] == [
        str(tmp_path / "emb.ark")
    ] * len(IDS)
    monkeypatch.chdir(tmp_path / "elsewhere")
    table = kaldiio.load_scp(str(tmp_path / "emb.scp"))
    np.testing.assert_array_equal(np.stack([table[i] for i in IDS]), embeddings)


def test_npz_round_trip(tmp_path):
    embeddings = random_embeddings(seed=2, dtype=np.float64)
    ids = IDS[:3] + ["with space"]  # fine outside Kaldi files
    path = tmp_path / "emb.npz"
    assert write_embeddings(str(path), ids, embeddings) == [str(path)]
    with np.load(path, allow_pickle=False) as saved:
        assert saved.files == ids
        for utterance, expected in zip(ids, embeddings):
            assert saved[utterance].dtype == np.float32
            np.testing.assert_array_equal(saved[utterance], expected.astype(np.float32))
    assert leftovers(tmp_path) == []


def test_npy_round_trip(tmp_path):
    embeddings = random_embeddings(seed=3)
    path = tmp_path / "emb.npy"
    assert write_embeddings(str(path), IDS, embeddings) == [str(path), str(tmp_path / "emb.txt")]
    matrix = np.load(path, allow_pickle=False)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, embeddings)
    assert (tmp_path / "emb.txt").read_text(encoding="utf-8").splitlines() == IDS
    assert leftovers(tmp_path) == []


def test_no_embeddings_gives_empty_files(tmp_path):
    write_embeddings(str(tmp_path / "emb.ark"), [], np.zeros((0, 6), np.float32))
    assert (tmp_path / "emb.ark").read_bytes() == b""
    assert kaldiio.load_scp(str(tmp_path / "emb.scp")) == {}
    write_embeddings(str(tmp_path / "emb.npy"), [], np.zeros((0, 6), np.float32))
    assert np.load(tmp_path / "emb.npy").shape == (0, 6)


@pytest.mark.parametrize("bad_id", ["a b", "a\tb", "a\nb", ""])
def test_kaldi_ids_with_whitespace_are_refused(tmp_path, bad_id):
    ids = ["good", bad_id]
    with pytest.raises(ValueError, match="Kaldi ids cannot hold whitespace") as error:
        write_embeddings(str(tmp_path / "emb.ark"), ids, random_embeddings(2))
    assert repr(bad_id) in str(error.value)
    with pytest.raises(ValueError, match="whitespace"):
        check_output(str(tmp_path / "emb.ark"), ids)
    assert list(tmp_path.iterdir()) == []
    check_output(str(tmp_path / "emb.npz"), ids)  # other formats take them


def test_bad_arguments_are_refused_before_writing(tmp_path):
    embeddings = random_embeddings(3)
    with pytest.raises(ValueError, match="4 ids for 3 embeddings"):
        write_embeddings(str(tmp_path / "emb.npz"), IDS, embeddings)
    with pytest.raises(ValueError, match="ids repeat"):
        write_embeddings(str(tmp_path / "emb.npy"), ["a", "b", "a"], embeddings)
    for name in ("emb.csv", "emb", "emb.ark.txt"):
        with pytest.raises(ValueError, match=f"{tmp_path / name}: unknown embedding format"):
            write_embeddings(str(tmp_path / name), IDS[:3], embeddings)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_whole_output(tmp_path):
    ark = tmp_path / "emb.ark"
    write_embeddings(str(ark), [f"u{i}" for i in range(50)], random_embeddings(50, seed=4))
    small = random_embeddings(2, seed=5)
    write_embeddings(str(ark), ["new1", "new2"], small)
    assert [key for key, _ in kaldiio.load_ark(str(ark))] == ["new1", "new2"]
    table = kaldiio.load_scp(str(tmp_path / "emb.scp"))
    np.testing.assert_array_equal(np.stack([table["new1"], table["new2"]]), small)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "name, failing",
    [("emb.npy", "emb.npy"), ("emb.npy", "emb.txt"), ("emb.ark", "emb.ark"),
     ("emb.ark", "emb.scp")],
)
def test_a_failed_write_leaves_the_old_pair_whole(tmp_path, monkeypatch, name, failing):
    """A write that fails on either file of a pair changes neither (nor leaves temporaries)."""
    old = random_embeddings(4, seed=6)
    write_embeddings(str(tmp_path / name), IDS, old)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fail_writing(monkeypatch, tmp_path, failing)  # that file cannot be written
    with pytest.raises(OSError):
        write_embeddings(str(tmp_path / name), ["n1", "n2"], random_embeddings(2, seed=7))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
