"""Feature files: log-mel features of audio files saved as ``.npy``, one per file.

:func:`extract_features` is the original's feature-extraction step
(``dmha features -i files.lst``); :func:`features_path` says where a file's
features go, which the recipe uses to find them.
"""

import contextlib
import functools
import os
from multiprocessing import get_context

import numpy
from tqdm import tqdm

from dmha_modules.io.atomic import write_atomic
from dmha_modules.io.audio_headers import (
    audio_not_found,
    audio_suffixes,
    strip_audio_extension,
    worker_pool,
)
from dmha_modules.prepare.listings import read_fields, relative_path
from dmha_modules.prepare.problems import ProblemLog


def features_path(audio_path, out_dir=None, data_dir=None):
    """Where :func:`extract_features` puts the features of ``audio_path``.

    Arguments
    ---------
    audio_path : str
        The audio file.
    out_dir : str, optional
        Features folder; None for the ``.npy`` next to the audio.
    data_dir : str, optional
        Folder whose layout ``out_dir`` mirrors (default: the current one).

    Returns
    -------
    str
        The ``.npy`` path.

    Example
    -------
    >>> features_path("corpus/spk1/a.flac")
    'corpus/spk1/a.npy'
    >>> features_path("corpus/spk1/a.flac", out_dir="feats", data_dir="corpus")
    'feats/spk1/a.npy'
    """
    stem = strip_audio_extension(audio_path)
    if out_dir is None:
        return stem + ".npy"
    relative = os.path.relpath(stem, data_dir or os.getcwd())
    return os.path.join(out_dir, relative + ".npy")


def extract_features(
    list_file, out_dir=None, data_dir=None, jobs=None, overwrite=False
):
    """Computes log-mel features of the audio files in a list, one ``.npy`` each.

    The original's feature-extraction step (``featureExtractor.py -i
    files.lst``): one audio path per line, extension optional (``.wav``
    then ``.flac`` are tried). Each file's ``(frames, 80)`` float32 raw
    log-mel matrix (:class:`dmha_modules.nn.features.LogMelFeatures`, no mean
    normalisation: the recipe normalises per utterance) goes next to the
    audio with the extension ``.npy``, or under ``out_dir`` at the list's
    relative path. Multi-channel audio is averaged to mono. Files are done
    in parallel processes; existing features newer than their audio are
    kept unless ``overwrite``, so an interrupted run resumes. Bad lines, and
    files that fail the audio check of every command
    (:func:`dmha_modules.io.audio.read_checked_audio`: missing, empty, corrupt,
    truncated, silent, NaN or Inf samples), are reported together at the end,
    after every good file is done.

    Arguments
    ---------
    list_file : str
        The list of audio paths.
    out_dir : str, optional
        Folder for the features, mirroring the list's paths.
    data_dir : str, optional
        Folder relative paths are resolved against; default the current one.
    jobs : int, optional
        Worker processes; default one per core; 1 computes in this process.
    overwrite : bool
        Recompute features that already exist.

    Returns
    -------
    list of str
        The ``.npy`` paths, in list order.

    Raises
    ------
    BadInputError
        After all good files are done, listing the bad lines.

    Example
    -------
    >>> import numpy, soundfile
    >>> data = getfixture("tmp_path")
    >>> soundfile.write(data / "a.wav", 0.1 * numpy.ones(1600), 16000)
    >>> soundfile.write(data / "nan.wav", numpy.full(1600, numpy.nan), 16000, subtype="FLOAT")
    >>> _ = (data / "files.lst").write_text("a\\nnan\\n")
    >>> extract_features(str(data / "files.lst"), data_dir=str(data), jobs=1)
    Traceback (most recent call last):
    ...
    dmha_modules.prepare.problems.BadInputError: 1 problem(s) in the input, the features of the other 1 files are written:
    .../files.lst:2: .../nan.wav: 1600 samples are NaN or infinite
    """
    data_dir = data_dir or os.getcwd()
    log = ProblemLog()
    log.require_file(list_file, "the list of audio files")
    log.raise_if_bad(skip_bad=False)
    tasks = _read_list(list_file, out_dir, data_dir, overwrite, log)
    jobs = jobs or os.cpu_count() or 1
    failed = 0
    with contextlib.ExitStack() as stack:
        mapper = _task_mapper(stack, jobs, len(tasks))
        results = mapper(_extract_one, tasks)
        for line_number, error in tqdm(
            results, total=len(tasks), desc="Extracting features", unit="file"
        ):
            if error is not None:
                log.reject(list_file, line_number, error)
                failed += 1
    log.raise_if_bad(
        skip_bad=False, outcome=f"the features of the other {len(tasks) - failed} files are written"
    )
    return [target for _, _, _, target, _ in tasks]


def _task_mapper(stack, jobs, n_tasks):
    """The ``map`` to run ``n_tasks`` tasks with.

    A pool of ``jobs`` processes, closed with ``stack``, when there are
    several jobs and several tasks; else the builtin ``map``, in this process.
    """
    if jobs > 1 and n_tasks > 1:
        # "spawn": the caller may run torch threads, which a fork breaks.
        pool = worker_pool(jobs, get_context("spawn"), _worker_init)
        chunksize = max(1, min(64, n_tasks // (jobs * 8)))
        return functools.partial(stack.enter_context(pool).map, chunksize=chunksize)
    return map


def _read_list(list_file, out_dir, data_dir, overwrite, log):
    """The tasks of the list's good lines: (line, path, suffixes, target, overwrite)."""
    tasks, first_line = [], {}
    for line_number, (entry,) in read_fields(
        list_file, log, "audio path", 1, spaced="last"
    ):
        path = os.path.join(data_dir, entry)
        if out_dir is not None and relative_path(
            entry, data_dir, data_dir
        ).startswith("../"):
            log.reject(
                list_file,
                line_number,
                f"{entry!r} lies outside {data_dir}, "
                f"so it has no place under {out_dir}",
            )
            continue
        target = features_path(path, out_dir, data_dir)
        if target in first_line:
            log.reject(
                list_file,
                line_number,
                f"duplicate entry {entry!r} (first on line {first_line[target]})",
            )
            continue
        first_line[target] = line_number
        suffixes = audio_suffixes(path, (".wav", ".flac"))
        tasks.append((line_number, path, suffixes, target, overwrite))
    return tasks


def _worker_init():
    import torch

    # One thread per process: the pool supplies the parallelism.
    torch.set_num_threads(1)


_EXTRACTORS = {}


def _extract_one(task):
    """Computes and atomically saves one file's features; returns (line, error)."""
    # torch only here: listing the files should not pay for importing it.
    import torch

    from dmha_modules.io.audio import AudioError, read_checked_audio
    from dmha_modules.nn.features import LogMelFeatures

    line_number, path, suffixes, target, overwrite = task
    candidates = [path + suffix for suffix in suffixes]
    # lexists: a folder or a broken link named like the audio is reported as what it is.
    audio_path = next((c for c in candidates if os.path.lexists(c)), None)
    if audio_path is None:
        return line_number, audio_not_found(path, suffixes)
    if (
        not overwrite
        and os.path.isfile(target)
        and os.path.isfile(audio_path)
        and os.path.getmtime(target) >= os.path.getmtime(audio_path)
    ):
        return line_number, None
    try:
        signal, sample_rate = read_checked_audio(audio_path)
    except AudioError as error:
        return line_number, str(error)
    if sample_rate not in _EXTRACTORS:
        # The original's framing, so the files equal its featureExtractor's pickles.
        _EXTRACTORS[sample_rate] = LogMelFeatures(
            sample_rate=sample_rate, n_mels=80, framing="original"
        )
    extractor = _EXTRACTORS[sample_rate]
    if extractor.num_frames(signal.shape[0]) == 0:
        return line_number, (
            f"{audio_path}: {signal.shape[0]} samples are too short for one "
            f"{extractor.frame_length}-sample frame"
        )
    with torch.no_grad():
        features = extractor(signal[None])[0]
    matrix = features.numpy().astype(numpy.float32)
    write_atomic(
        target,
        lambda output: numpy.save(output, matrix, allow_pickle=False),
        binary=True,
    )
    return line_number, None
