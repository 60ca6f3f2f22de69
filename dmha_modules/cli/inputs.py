"""What the verbs that use a model read: audio files, model folders, embeddings of files.

Audio is named as files on the command line (ids: the paths without
extension), a ``--list`` (``path`` or ``id path`` per line, Kaldi
``wav.scp`` style) or a ``--folder`` (ids: the paths below it without
extension). Problems found before any work stop the verb with every one
listed; a file that fails while being embedded is reported and skipped.

Example
-------
>>> import argparse, os, tempfile
>>> folder = tempfile.mkdtemp()
>>> listing = os.path.join(folder, "wav.scp")
>>> _ = open(listing, "w").write("utt1 a.wav\\nb.flac\\n")
>>> read_audio_inputs(argparse.Namespace(inputs=["c.wav"], list_file=listing, folder=None))
(['c', 'utt1', 'b'], ['c.wav', 'a.wav', 'b.flac'])
"""

import contextlib
import os
import tempfile

import numpy as np

from dmha_modules.audio import AUDIO_EXTENSIONS
from dmha_modules.cli.errors import InputError, report_skipped
from dmha_modules import inference
from dmha_modules.inference import AudioError, DMHAClassifier


def check_out_folder(path):
    """Refuses an output whose folder does not exist, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: the folder {folder} does not exist")


def _listed(list_file):
    """``(id, path)`` of a ``--list`` file; every bad line is an ``InputError``."""
    entries, problems = [], []
    with open(list_file, encoding="utf-8") as listing:
        for number, line in enumerate(listing, 1):
            fields = line.split()
            if len(fields) > 2:
                problems.append(
                    f"{list_file}:{number}: expected 'path' or 'id path', "
                    f"got {len(fields)} fields"
                )
            elif fields:
                utterance = fields[0] if len(fields) == 2 else os.path.splitext(fields[0])[0]
                entries.append((utterance, fields[-1]))
    if problems:
        raise InputError(*problems)
    return entries


def _found(folder):
    """``(id, path)`` of the audio files under ``folder``, sorted by path."""
    found = sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(folder)
        for name in files
        if name.lower().endswith(AUDIO_EXTENSIONS)
    )
    if not found:
        raise InputError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return [(os.path.splitext(os.path.relpath(path, folder))[0], path) for path in found]


def read_audio_inputs(args):
    """``(ids, paths)`` of the audio given as arguments, ``--list`` and ``--folder``.

    Arguments
    ---------
    args : argparse.Namespace
        With ``inputs``, ``list_file`` and ``folder``.

    Returns
    -------
    tuple
        The utterance ids and the audio paths, in the order given.
    """
    entries = [(os.path.splitext(path)[0], path) for path in args.inputs]
    if args.list_file:
        entries += _listed(args.list_file)
    if args.folder:
        entries += _found(args.folder)
    if not entries:
        raise InputError("no audio given: pass files, --list or --folder")
    ids = [utterance for utterance, _ in entries]
    seen = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]
    if repeated:
        raise InputError(f"repeated utterance ids: {repeated[:5]}")
    return ids, [path for _, path in entries]


@contextlib.contextmanager
def load_model(folder, device, cls=DMHAClassifier):
    """A model folder loaded with ``cls`` (its files linked into a temporary folder).

    Arguments
    ---------
    folder : str
        A model folder (``hyperparams.yaml`` and checkpoints).
    device : str
        Torch device.
    cls : type
        ``DMHAClassifier`` or a subclass.

    Yields
    ------
    DMHAClassifier
    """
    if not os.path.exists(os.path.join(folder, "hyperparams.yaml")):
        raise InputError(f"{folder}: not a model folder (no hyperparams.yaml)")
    with tempfile.TemporaryDirectory(prefix="dmha-model-") as savedir:
        yield cls.from_hparams(
            source=os.path.abspath(folder), savedir=savedir, run_opts={"device": device}
        )


def embed_paths(model, paths, args, embed=None):
    """Embeddings of audio files, each bad file reported on stderr.

    Arguments
    ---------
    model : DMHAClassifier
        The loaded model (its sample rate; its ``embed`` unless ``embed``).
    paths : list of str
        Audio files.
    args : argparse.Namespace
        With ``batch_seconds`` and ``no_progress``.
    embed : callable, optional
        ``embed(wavs, lengths)`` of a padded batch, such as an ONNX session.

    Returns
    -------
    embeddings : numpy.ndarray
        ``(N, E)`` float32, NaN rows for the bad files.
    failed : list of int
        The indices of the bad files, sorted.
    """
    results = dict(
        inference.embed_files(
            model.embed if embed is None else embed, paths, model.hparams.sample_rate,
            batch_seconds=args.batch_seconds, progress=not args.no_progress,
        )
    )
    failed = sorted(i for i, result in results.items() if isinstance(result, AudioError))
    for index in failed:
        report_skipped(results[index])
    good = [result for i, result in results.items() if i not in failed]
    embeddings = np.full((len(paths), good[0].shape[-1] if good else 0), np.nan, np.float32)
    for index, result in results.items():
        if index not in failed:
            embeddings[index] = result.numpy()
    return embeddings, failed
