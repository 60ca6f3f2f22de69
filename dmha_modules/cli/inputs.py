"""What the verbs that use a model read: audio files, model folders, embeddings of files.

A model folder's ``calibration.json`` (``dmha calibrate``) is read by
:func:`read_calibration`; folders without one give cosine scores as before.

Audio is named as files on the command line (ids: the paths without
extension), a ``--list`` (``path`` or ``id path`` per line, Kaldi
``wav.scp`` style: everything after the id is the path, spaces included) or
a ``--folder`` (ids: the paths below it without extension). Problems found
before any work (bad lists, a model folder refused or unreadable, an output
that cannot be written) stop the verb with every one listed; a file that
fails while being embedded is reported and skipped.

Example
-------
>>> import argparse, os, tempfile
>>> folder = tempfile.mkdtemp()
>>> listing = os.path.join(folder, "wav.scp")
>>> _ = open(listing, "w").write("\\ufeffutt1 a.wav\\nb.flac\\nutt3 my file.wav\\n")
>>> read_audio_inputs(argparse.Namespace(inputs=["c.wav"], list_file=listing, folder=None))
(['c', 'utt1', 'b', 'utt3'], ['c.wav', 'a.wav', 'b.flac', 'my file.wav'])
"""

import contextlib
import os
import sys
import tempfile

import numpy as np

from dmha_modules.io.audio import AUDIO_EXTENSIONS, audio_info
from dmha_modules.scoring.calibration import SCORE_CALIBRATION_FILE, load_calibration
from dmha_modules.cli.errors import InputError, report_skipped
from dmha_modules import inference
from dmha_modules.inference import AudioError, DMHAClassifier
from dmha_modules.scoring.list_norm import normalised_cosines


def check_writable(path, folder=False, parent_must_exist=False):
    """Refuses, before any work, an output that cannot be written.

    A file is created and removed where the output would go (the nearest
    existing folder above it), so a read-only folder, a full quota or a file
    in the way is found before hours of work rather than after.

    Arguments
    ---------
    path : str
        The output file (or folder, with ``folder``).
    folder : bool
        The output is a folder (it may exist; files are written inside it).
    parent_must_exist : bool
        Refuse an output whose folder does not exist (rather than create it).

    Example
    -------
    >>> in_the_way = tempfile.mkstemp()[1]
    >>> check_writable(os.path.join(in_the_way, "emb.npz"))
    Traceback (most recent call last):
    ...
    dmha_modules.cli.errors.InputError: /.../emb.npz: cannot be created: /... is a file
    """
    path = os.path.abspath(path)
    if os.path.isdir(path) != folder and os.path.exists(path):
        raise InputError(f"{path}: is {'a file' if folder else 'a folder'}; "
                         f"give {'a folder' if folder else 'a file name'}")
    parent = os.path.dirname(path)
    if parent_must_exist and not os.path.isdir(parent):
        raise InputError(f"{path}: the folder {parent} does not exist")
    existing = path if folder else parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{path}: cannot be created: {existing} is a file")
    try:
        handle, probe = tempfile.mkstemp(prefix=".dmha-probe-", dir=existing)
    except OSError as error:
        raise InputError(f"{path}: cannot be written in {existing} ({error.strerror})") from None
    os.close(handle)
    os.remove(probe)


def _same(a, b):
    """Whether paths ``a`` and ``b`` name one file or folder (links and ``..`` resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _inside(path, folder):
    """Whether ``path`` lies strictly inside ``folder`` (links and ``..`` resolved)."""
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(folder), ""))


def _overlap(label, path, inputs, read_folders, own):
    """Why the output ``label path`` would overwrite or replace an input; None when it would not."""
    for what, given in inputs:
        if _same(path, given):
            return f"{label} {path} is the input {what} {given}"
        if _inside(given, path):
            return f"{label} {path} contains the input {what} {given}"
    for what, folder in read_folders:
        if _same(path, folder) or _inside(folder, path):
            return f"{label} {path} {'is' if _same(path, folder) else 'contains'} the input " \
                   f"{what} {folder}"
        if _inside(path, folder) and os.path.lexists(path) \
                and not any(_same(path, mine) for mine in own):
            return f"{label} {path} is part of the input {what} {folder}"
    return None


def check_outputs(outputs, inputs=(), read_folders=(), own=()):
    """Refuses, before any work, outputs that would destroy an input or each other.

    The one check of every verb's outputs. An output is refused (a
    ``ValueError``: exit status 2, one line naming the output and the input)
    when it is an input, contains one, lies in a folder whose every file is an
    input and would overwrite one of them, or is another output. Then a model
    folder output must be new, empty or a model folder dmha wrote
    (:func:`dmha_modules.folders.replace.check_replaceable`), and every
    output must be writable (:func:`check_writable`).

    Arguments
    ---------
    outputs : sequence of (str, str or None, str)
        ``(option, path, kind)``; kind ``"file"`` (written whole, its folder
        must exist), ``"model"`` (a model folder, replaced whole) or
        ``"folder"`` (files are written into it). None paths are left out.
    inputs : sequence of (str, str or None)
        ``(what, path)``: files and folders the verb reads. None paths are left out.
    read_folders : sequence of (str, str)
        ``(what, folder)`` whose every file is an input (a model folder).
    own : sequence of str
        The verb's own outputs inside ``read_folders`` (``calibration.json``).

    Example
    -------
    >>> folder = tempfile.mkdtemp()
    >>> trials = os.path.join(folder, "t.txt")
    >>> _ = open(trials, "w").write("1 a.wav b.wav\\n")
    >>> check_outputs([("--out", trials, "file")], [("--trials", trials)])
    Traceback (most recent call last):
    ...
    ValueError: --out /.../t.txt is the input --trials /.../t.txt; give the output another path
    >>> check_outputs([("--out", folder, "model")], [("--trials", trials)])
    Traceback (most recent call last):
    ...
    ValueError: --out /... contains the input --trials /.../t.txt; give the output another path
    """
    from dmha_modules.folders.replace import check_replaceable  # builds no model

    inputs = [(what, path) for what, path in inputs if path is not None]
    outputs = [(label, path, kind) for label, path, kind in outputs if path is not None]
    for index, (label, path, kind) in enumerate(outputs):
        problem = _overlap(label, path, inputs, read_folders, own)
        other = next((f"{other} {given}" for other, given, _ in outputs[:index]
                      if _same(path, given)), None)
        if other is not None:
            problem = f"{label} {path} is also {other}"
        if problem:
            raise ValueError(f"{problem}; give the output another path")
    for label, path, kind in outputs:
        if kind == "model":
            check_replaceable(path)
        check_writable(path, folder=kind != "file", parent_must_exist=kind == "file")


def listed_lines(list_file):
    """``(line number, id, path)`` of a ``--list`` file: ``path`` or ``id path...`` per line.

    The path is the rest of the line (spaces included); empty lines are skipped.
    """
    entries = []
    with open(list_file, encoding="utf-8-sig") as listing:  # -sig: a leading BOM is no id
        for number, line in enumerate(listing, 1):
            fields = line.strip().split(maxsplit=1)
            if len(fields) == 2:
                entries.append((number, fields[0], fields[1]))
            elif fields:
                entries.append((number, os.path.splitext(fields[0])[0], fields[0]))
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
        entries += [(utterance, path) for _, utterance, path in listed_lines(args.list_file)]
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


def check_audio_outputs(args, paths, outputs):
    """:func:`check_outputs` of a verb reading audio (``read_audio_inputs``) with ``--model``.

    Arguments
    ---------
    args : argparse.Namespace
        With ``inputs``, ``list_file``, ``folder`` and ``model``.
    paths : list of str
        The audio files, as ``read_audio_inputs`` returns them.
    outputs : sequence of (str, str, str)
        As :func:`check_outputs`.
    """
    check_outputs(outputs, [("--list", args.list_file), ("--folder", args.folder),
                            *(("audio file", path) for path in paths)],
                  [("--model", args.model)])


@contextlib.contextmanager
def load_model(folder, device, cls=DMHAClassifier, trust_model=False, precision="fp32"):
    """A model folder loaded with ``cls`` (its files linked into a temporary folder).

    Its ``hyperparams.yaml`` is checked first (see
    :func:`dmha_modules.folders.safety.check_hyperparams`) unless ``trust_model``.

    Arguments
    ---------
    folder : str
        A model folder (``hyperparams.yaml`` and checkpoints).
    device : str
        Torch device.
    cls : type
        ``DMHAClassifier`` or a subclass.
    trust_model : bool
        Load it without the check (``--trust_model``).
    precision : str
        ``fp32``, ``bf16`` or ``int8`` (``--precision``; see :func:`use_precision`).

    Yields
    ------
    DMHAClassifier
    """
    int8 = _int8_embedder(folder) if precision == "int8" else None  # before loading anything
    with tempfile.TemporaryDirectory(prefix="dmha-model-") as savedir:
        model = cls.from_hparams(
            source=os.path.abspath(folder), savedir=savedir, run_opts={"device": device},
            trust_model=trust_model,
        )
        yield use_precision(model, precision, device, int8)


def _int8_embedder(folder):
    """``(OnnxEmbedder of <folder>/embedding_int8.onnx, line saying what it is)``."""
    from dmha_modules.folders.quantize import INT8_FILE, describe, read_record

    path = os.path.join(folder, INT8_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{path}: not found; write it with dmha export --model {folder} "
                         "--precision int8 --calibration_list LIST")
    from dmha_modules.folders.onnx_export import OnnxEmbedder  # ONNX Runtime: an optional extra

    try:
        embedder = OnnxEmbedder(path)
    except Exception as error:  # ONNX Runtime's own errors (a truncated or foreign file)
        raise InputError(f"{path}: ONNX Runtime cannot load it "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                         ) from None
    return embedder, describe(read_record(folder))


def use_precision(model, precision, device, int8=None):
    """``model`` made to embed in ``precision``, with one line on stderr saying what runs.

    ``fp32``: as loaded. ``bf16``: the embedding model under bf16 autocast,
    features and normalisation in fp32 (:class:`dmha_modules.nn.precision.BF16Embedding`),
    or fp32 where the device has no native bf16
    (:func:`dmha_modules.nn.precision.resolve_precision`). ``int8``: the
    folder's ``embedding_int8.onnx`` in ONNX Runtime computes the embeddings
    (waveforms to embeddings; what follows them, such as the age heads, runs as
    loaded).

    Arguments
    ---------
    model : DMHAClassifier
        A loaded model.
    precision : str
        ``fp32``, ``bf16`` or ``int8``.
    device : str
        Torch device.
    int8 : tuple, optional
        ``(embedder, line)`` of the folder's int8 graph (``int8`` only).

    Returns
    -------
    DMHAClassifier
        ``model``.
    """
    from dmha_modules.nn.precision import BF16Embedding, resolve_precision
    from dmha_modules.nn.waveform import WaveformEmbedding

    precision, line = resolve_precision(precision, device)
    if precision == "int8":
        embedder, line = int8
        # Every embedding of the classifier (embed, embed_file, embed_files, the age
        # model's chunks) goes through encode_batch: the graph takes its place.
        model.encode_batch = lambda wavs, wav_lens=None, normalize=False: embedder(
            wavs, wav_lens).to(model.device)[:, None]
    elif precision == "bf16":
        outer = model.mods["embedding_model"]
        if isinstance(outer, WaveformEmbedding):  # the folder layout of dmha_modules.nn.waveform
            outer.embedding_model = BF16Embedding(outer.embedding_model)
        else:
            model.mods["embedding_model"] = BF16Embedding(outer)
    if line:
        print(line, file=sys.stderr)
    return model


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


# What the verbs say of a model folder without calibration.json.
NOT_CALIBRATED = "not calibrated: cosine scores (dmha calibrate stores a calibration to LLRs)"


def read_calibration(folder):
    """The ``Calibration`` of a model folder, None without ``calibration.json``.

    A ``calibration.json`` that cannot be used is an ``InputError`` naming it.
    """
    try:
        return load_calibration(folder)
    except ValueError as error:
        raise InputError(str(error)) from None


def calibrated_cosines(calibration, embeddings, pairs, folder):
    """``normalised_cosines``, its failure an ``InputError`` naming ``folder``'s calibration file."""
    try:
        return normalised_cosines(calibration, embeddings, pairs)
    except ValueError as error:
        raise InputError(f"{os.path.join(folder, SCORE_CALIBRATION_FILE)}: {error}") from None


def trial_inputs(trials_file, trials):
    """The inputs of a trial list for :func:`check_outputs`: the list and its audio files.

    Example
    -------
    >>> trial_inputs("t.txt", [("a.wav", "b.wav", 1), ("a.wav", "c.wav", 0)])
    [('--trials', 't.txt'), ('audio file of --trials', 'a.wav'), \
('audio file of --trials', 'b.wav'), ('audio file of --trials', 'c.wav')]
    """
    audio = dict.fromkeys(path for trial in trials for path in trial[:2])  # once each, in order
    return [("--trials", trials_file), *(("audio file of --trials", path) for path in audio)]


def trial_seconds(trials):
    """``(N, 2)`` durations in seconds of the two files of each ``(enrol, test, ...)`` trial.

    Example
    -------
    >>> import soundfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(path, np.zeros(8000), 16000)
    >>> trial_seconds([(path, path, 1)]).tolist()
    [[0.5, 0.5]]
    """
    seconds = {}
    for path in {path for trial in trials for path in trial[:2]}:
        info = audio_info(path)
        seconds[path] = info.frames / info.samplerate
    return np.array([[seconds[enrol], seconds[test]] for enrol, test, *_ in trials],
                    dtype=np.float64).reshape(-1, 2)
