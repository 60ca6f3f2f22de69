"""Converts speech corpora into SpeechBrain CSV manifests.

Every source ends in the same manifests, one CSV per split, with the columns
``ID, duration, wav, spk_id`` and, when the source knows them, ``age``
(years), ``age_group`` and ``gender`` (Kaldi ``segments`` add ``start`` and
``stop`` in samples). ``wav`` starts with ``$data_root``, so a manifest moves
with its data: load it with
``DynamicItemDataset.from_csv(csv, replacements={"data_root": data_folder})``.

Sources (one public function each, also ``dmha prepare <source>``):

- :func:`prepare_labels_file`: the original code's labels files
  (``path label -1``) and trial files (``pathA pathB``);
- :func:`prepare_kaldi`: Kaldi data dirs (``wav.scp``, ``utt2spk``, optional
  ``spk2age``, ``spk2gender``, ``segments``); speechocean762 is downloaded
  by :func:`download_speechocean762` when its folder is absent;
- :func:`prepare_commonvoice`: Common Voice release folders;
- :func:`prepare_voxceleb`: VoxCeleb1/2 trees and official trial lists;
- :func:`extract_features`: the original's feature-extraction step over a
  list of audio files (``dmha features``), one ``.npy`` per file.

Bad input is never half-handled: every problem of a run is collected in one
pass and reported together as a :class:`BadInputError` (file, line, what is
wrong), and nothing is written. With ``skip_bad=True`` the bad rows are
dropped instead and listed in ``rejects.csv``; problems that dropping rows
cannot fix (a missing listing file, a gap in the labels) still stop the run.
Outputs are written to temporary files and renamed into place, and a run is
skipped when its inputs and options are unchanged since the last one.

Authors
 * dmha contributors
"""

import bisect
import contextlib
import csv
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy
import soundfile
from tqdm import tqdm

logger = logging.getLogger(__name__)

SPEECHOCEAN762_URL = "https://www.openslr.org/resources/101/speechocean762.tar.gz"
DEFAULT_AGE_BINS = (13, 20, 30)
DEFAULT_AGE_GROUPS = ("child", "teens", "twenties", "thirties+")
# Common Voice's own spelling, "fourties" included.
COMMONVOICE_AGE_GROUPS = (
    "teens",
    "twenties",
    "thirties",
    "fourties",
    "fifties",
    "sixties",
    "seventies",
    "eighties",
    "nineties",
)
SPLITS = ("train", "valid", "test")
OPTIONS_FILE = "prepare_options.json"
SUMMARY_FILE = "summary.json"
REJECTS_FILE = "rejects.csv"
TRIALS_FILE = "trials.csv"

# Bumped whenever the manifests' content changes, so older outputs are redone.
_FORMAT_VERSION = 1
_AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".mp3", ".m4a", ".mp4", ".ogg", ".opus", ".sph", ".aif", ".aiff"}
)
# Paths handed to one header-reading task: large enough to amortise the
# scheduling, small enough for a smooth progress bar.
_PROBE_CHUNK = 1024


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

    def __init__(self, problems, skip_bad_helps):
        self.problems = list(problems)
        advice = (
            "; use --skip-bad (skip_bad=True) to drop the bad rows instead"
            if skip_bad_helps
            else ""
        )
        super().__init__(
            f"{len(self.problems)} problem(s) in the input, nothing was written"
            f"{advice}:\n" + "\n".join(str(problem) for problem in self.problems)
        )


class DownloadError(RuntimeError):
    """Raised when a corpus cannot be downloaded, verified or unpacked.

    Its message says what failed and, without network, how to get the
    corpus by hand (see :func:`download_speechocean762`).

    Example
    -------
    >>> data = str(getfixture("tmp_path"))
    >>> url = "http://127.0.0.1:9/speechocean762.tar.gz"  # nothing listens
    >>> try:
    ...     download_speechocean762(os.path.join(data, "so762"), url, timeout=5)
    ... except DownloadError as error:
    ...     print("by hand" in str(error))
    True
    """


class _ProblemLog:
    """Collects the problems of one run and decides what they stop."""

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

    def raise_if_bad(self, skip_bad):
        """Raises :class:`BadInputError` unless every problem may be skipped."""
        if self.fatal or (self.problems and not skip_bad):
            raise BadInputError(self.problems, skip_bad_helps=not self.fatal)


@dataclass(slots=True, eq=False)
class _Utterance:
    """One manifest row while it is being built and checked."""

    id: str
    rel: str  # audio path relative to the data folder, "/"-separated
    origin: tuple  # (listing file, line) the audio path comes from
    spk_id: str = ""
    age: float | None = None
    age_group: str | None = None
    gender: str | None = None
    duration: float | None = None
    start: float | None = None  # seconds, Kaldi segments only
    sample_rate: int | None = None
    bad: bool = False


# ---------------------------------------------------------------- audio headers


def read_audio_header(path):
    """Returns the duration and sample rate of an audio file from its header.

    WAV (PCM / float), FLAC and MP4 (``.m4a``) headers are parsed directly,
    which is several times faster than libsndfile on short files; any header
    these parsers do not fully understand is handed to ``soundfile.info``,
    so they never decide on a file libsndfile would read differently.
    MP4 is the exception: libsndfile cannot read it, so its duration comes
    from the movie header (``mvhd`` box) alone and the sample rate is None.

    Arguments
    ---------
    path : str
        The audio file.

    Returns
    -------
    duration : float
        Seconds.
    sample_rate : int or None
        Hz; None for MP4.

    Raises
    ------
    ValueError
        When the file is empty, unreadable, corrupt or holds no samples.
    OSError
        When the file cannot be opened (FileNotFoundError when it is absent).

    Example
    -------
    >>> path = os.path.join(getfixture("tmp_path"), "a.wav")
    >>> soundfile.write(path, numpy.zeros(8000), 16000)
    >>> read_audio_header(path)
    (0.5, 16000)
    """
    with open(path, "rb") as audio:
        size = os.fstat(audio.fileno()).st_size
        if size == 0:
            raise ValueError("the audio file is empty (0 bytes)")
        magic = audio.read(12)
        try:
            if magic[:4] == b"RIFF":
                info = _parse_wav(audio, magic, size)
            elif magic[:4] == b"fLaC":
                info = _parse_flac(audio)
            elif magic[4:8] == b"ftyp":
                duration = _parse_mp4_duration(audio, size)
                if duration is None:
                    raise ValueError("no MP4 movie header (mvhd box) found")
                if duration <= 0:
                    raise ValueError("the audio has no samples (zero length)")
                return duration, None
            else:
                info = None
        except struct.error:  # a box or chunk cut short by the end of the file
            raise ValueError("corrupt header (truncated)") from None
    if info is None:
        try:
            header = soundfile.info(path)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise ValueError(f"unreadable or corrupt audio ({error})") from None
        # libsndfile reports an unknown length as a huge count.
        if header.frames >= 2**62 or header.samplerate <= 0:
            raise ValueError("unreadable audio (unknown length)")
        info = header.frames, header.samplerate
    frames, sample_rate = info
    if frames <= 0:
        raise ValueError("the audio has no samples (zero length)")
    return frames / sample_rate, sample_rate


def _parse_wav(audio, magic, size):
    """Returns (frames, sample_rate) of a plain RIFF/WAVE file, else None."""
    if magic[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= size:
        audio.seek(position)
        chunk_id, chunk_size = struct.unpack("<4sI", audio.read(8))
        if chunk_id == b"fmt ":
            body = audio.read(min(chunk_size, 40))
            if len(body) < 16:
                return None
            tag, _, sample_rate, _, block_align, _ = struct.unpack_from("<HHIIHH", body)
            if tag == 0xFFFE and len(body) >= 26:
                # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag.
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = tag, sample_rate, block_align
        elif chunk_id == b"data":
            if fmt is None:
                return None
            tag, sample_rate, block_align = fmt
            # Compressed formats, streamed files (size 0 or past the end) and
            # truncated files are left to libsndfile's judgement.
            if (
                tag not in (1, 3)  # PCM, IEEE float
                or sample_rate == 0
                or block_align == 0
                or chunk_size == 0
                or position + 8 + chunk_size > size
            ):
                return None
            return chunk_size // block_align, sample_rate
        position += 8 + chunk_size + (chunk_size & 1)
    return None


def _parse_flac(audio):
    """Returns (frames, sample_rate) from a FLAC STREAMINFO block, else None."""
    audio.seek(4)
    block = audio.read(38)
    if len(block) < 38 or block[0] & 0x7F != 0:
        return None
    info = block[4:]
    sample_rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    frames = ((info[13] & 0x0F) << 32) | int.from_bytes(info[14:18], "big")
    # A total of 0 means "unknown" in FLAC, not "empty".
    if sample_rate == 0 or frames == 0:
        return None
    return frames, sample_rate


def _iter_mp4_boxes(audio, start, end):
    """Yields (type, payload offset, box end) of the MP4 boxes in a range."""
    position = start
    while position + 8 <= end:
        audio.seek(position)
        box_size, box_type = struct.unpack(">I4s", audio.read(8))
        header = 8
        if box_size == 1:
            box_size = struct.unpack(">Q", audio.read(8))[0]
            header = 16
        elif box_size == 0:
            box_size = end - position
        if box_size < header:
            return
        yield box_type, position + header, min(position + box_size, end)
        position += box_size


def _parse_mp4_duration(audio, size):
    """Returns the duration in seconds from an MP4 ``moov/mvhd`` box, else None."""
    for box_type, payload, box_end in _iter_mp4_boxes(audio, 0, size):
        if box_type != b"moov":
            continue
        for child_type, child_payload, _ in _iter_mp4_boxes(audio, payload, box_end):
            if child_type != b"mvhd":
                continue
            audio.seek(child_payload)
            version = audio.read(4)[:1]
            if version == b"\x01":
                timescale, duration = struct.unpack(">16xIQ", audio.read(28))
            else:
                timescale, duration = struct.unpack(">8xII", audio.read(16))
            return duration / timescale if timescale else None
    return None


def _probe(path, suffixes):
    """Finds the audio file ``path + suffix`` and reads its header.

    Returns (suffix found, duration, sample rate, error message); opening
    the candidates directly is cheaper than testing their existence first.
    """
    for suffix in suffixes:
        try:
            duration, sample_rate = read_audio_header(path + suffix)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            return suffix, None, None, f"{path + suffix}: {error}"
        return suffix, duration, sample_rate, None
    tried = ", ".join(path + suffix for suffix in suffixes)
    return None, None, None, f"audio file not found (tried {tried})"


def _probe_chunk(items):
    return [_probe(path, suffixes) for path, suffixes in items]


def _read_headers(items, jobs=None, desc="Reading audio headers"):
    """Probes many audio files in parallel, in order, with a progress bar.

    Processes, not threads: with the headers cached, the work is Python
    parsing, which threads only slow down (GIL contention; measured on 2
    cores: 35k files/s with 2 threads, 46k serial, 75k with 2 processes).
    A single chunk is read in-process, as starting workers would cost more.

    Arguments
    ---------
    items : list of (str, tuple of str)
        Audio path and the suffixes to try on it ("" for the path as is).
    jobs : int or None
        Processes; None for one per core. On network storage, more
        processes than cores hide the latency.
    desc : str
        Progress-bar label.

    Returns
    -------
    list of tuple
        One :func:`_probe` result per item.
    """
    jobs = jobs or os.cpu_count() or 1
    chunks = [items[i : i + _PROBE_CHUNK] for i in range(0, len(items), _PROBE_CHUNK)]
    results = []
    with contextlib.ExitStack() as stack:
        mapper = map
        if jobs > 1 and len(chunks) > 1:
            mapper = stack.enter_context(ProcessPoolExecutor(max_workers=jobs)).map
        progress = stack.enter_context(
            tqdm(total=len(items), desc=desc, unit="file", mininterval=1.0)
        )
        for chunk_results in mapper(_probe_chunk, chunks):
            results.extend(chunk_results)
            progress.update(len(chunk_results))
    return results


def _audio_suffixes(path, default_extensions):
    """Suffixes to try: none when ``path`` names its format, else the defaults."""
    if os.path.splitext(path)[1].lower() in _AUDIO_EXTENSIONS:
        return ("",)
    return default_extensions


def _probe_utterances(rows, data_folder, log, jobs, extensions=(".wav", ".flac")):
    """Fills duration and sample rate of ``rows``, rejecting unusable audio.

    A row's ``rel`` may lack its extension: then ``extensions`` are tried
    (see :func:`_audio_suffixes`) and the one found is appended to it.
    """
    items = [
        (os.path.join(data_folder, row.rel), _audio_suffixes(row.rel, extensions))
        for row in rows
    ]
    for row, (suffix, duration, sample_rate, error) in zip(
        rows, _read_headers(items, jobs)
    ):
        if error is not None:
            log.reject_row(row, *row.origin, error)
            continue
        row.rel += suffix
        row.duration, row.sample_rate = duration, sample_rate


# ------------------------------------------------------------- listing files


def _read_fields(path, log, expected, count, keep_rest=False):
    """Yields (line number, fields) of a whitespace-separated listing file.

    Blank lines are ignored; a line without exactly ``count`` fields is
    rejected (with ``keep_rest``, the last field takes the rest of the line,
    for paths with spaces).
    """
    with open(path, encoding="utf-8") as listing:
        for line_number, line in enumerate(listing, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            fields = (
                stripped.split(maxsplit=count - 1) if keep_rest else stripped.split()
            )
            if len(fields) != count:
                log.reject(
                    path,
                    line_number,
                    f"malformed line, expected '{expected}', got {stripped!r}",
                )
                continue
            yield line_number, fields


def _read_keyed(path, log, expected, count, keep_rest=False):
    """Reads a listing file into ``{first field: (line number, fields)}``.

    A repeated first field is rejected and its first occurrence kept.
    """
    table = {}
    for line_number, fields in _read_fields(path, log, expected, count, keep_rest):
        key = fields[0]
        if key in table:
            log.reject(
                path,
                line_number,
                f"duplicate ID {key!r} (first on line {table[key][0]})",
            )
            continue
        table[key] = (line_number, fields)
    return table


def _require_file(path, log, what):
    """Stops the run when a required listing file is missing."""
    if os.path.isfile(path):
        return True
    log.stop(path, None, f"missing: {what}")
    return False


def _parse_age(text):
    """Returns ``text`` as an age in years, or None when it is not one."""
    try:
        age = float(text)
    except ValueError:
        return None
    return age if math.isfinite(age) and age >= 0 else None


def _relative_path(path, folder, data_folder):
    """Returns ``path`` (absolute or relative to ``folder``) relative to
    ``data_folder``, "/"-separated."""
    # os.path.relpath is slow; most paths need only normalising.
    if os.path.isabs(path) or folder != data_folder:
        path = os.path.relpath(os.path.join(folder, path), data_folder)
    return os.path.normpath(path).replace(os.sep, "/")


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
    stem = _strip_audio_extension(audio_path)
    if out_dir is None:
        return stem + ".npy"
    return os.path.join(out_dir, os.path.relpath(stem, data_dir or os.getcwd()) + ".npy")


def _strip_audio_extension(path):
    """Removes an audio extension (any case) from ``path``, if it has one."""
    stem, extension = os.path.splitext(path)
    return stem if extension.lower() in _AUDIO_EXTENSIONS else path


def _utterance_id(rel):
    """Returns the ID of an audio path: the path without extension, "--" for "/".

    Example
    -------
    >>> _utterance_id("id10001/1zcIwhmdeo4/00001.wav")
    'id10001--1zcIwhmdeo4--00001'
    """
    return _strip_audio_extension(rel).replace("/", "--")


# ------------------------------------------------------------------ age groups


def age_group(age, age_bins=DEFAULT_AGE_BINS, age_groups=DEFAULT_AGE_GROUPS):
    """Returns the name of the age group holding ``age``.

    Arguments
    ---------
    age : float
        Age in years.
    age_bins : sequence of float
        Increasing bin edges in years; an age equal to an edge belongs to
        the group above it.
    age_groups : sequence of str
        Group names, one more than the edges.

    Returns
    -------
    str

    Example
    -------
    >>> [age_group(age) for age in (6, 12.9, 13, 19.9, 20, 30, 43)]
    ['child', 'child', 'teens', 'teens', 'twenties', 'thirties+', 'thirties+']
    """
    return age_groups[bisect.bisect_right(age_bins, age)]


def _check_age_bins(age_bins, age_groups):
    if len(age_groups) != len(age_bins) + 1:
        raise ValueError(
            f"{len(age_bins)} age bin edges need {len(age_bins) + 1} group names, "
            f"got {len(age_groups)}: {list(age_groups)}"
        )
    if any(low >= high for low, high in zip(age_bins, age_bins[1:])):
        raise ValueError(f"age bin edges must increase: {list(age_bins)}")
    if len(set(age_groups)) != len(age_groups):
        raise ValueError(f"age group names must differ: {list(age_groups)}")


# -------------------------------------------------------------------- splitting


def _check_ratios(valid_ratio, test_ratio):
    if not (
        0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1
    ):
        raise ValueError(
            f"valid_ratio ({valid_ratio}) and test_ratio ({test_ratio}) must be in "
            "[0, 1) with a sum below 1"
        )


def _round_half_up(value):
    return math.floor(value + 0.5)


def _allocate(target, ratio, sizes, capacity, tie_order):
    """Splits ``target`` speakers over strata in proportion to ``ratio``.

    Largest-remainder allocation: each stratum gets the floor of its share,
    and the speakers left over go to the largest fractional parts (ties in
    ``tie_order``), never beyond a stratum's capacity.
    """
    quota = {
        group: min(math.floor(ratio * n), capacity[group]) for group, n in sizes.items()
    }
    by_remainder = sorted(
        sizes, key=lambda group: (-(ratio * sizes[group] % 1), tie_order[group])
    )
    left = target - sum(quota.values())
    for group in by_remainder:
        if left <= 0:
            break
        if quota[group] < capacity[group]:
            quota[group] += 1
            left -= 1
    return quota


def _split_speakers(speaker_strata, ratios, seed):
    """Assigns speakers to splits, stratified and deterministic for a seed.

    Arguments
    ---------
    speaker_strata : dict
        Speaker ID -> stratum (age group, or "" when there are no ages).
    ratios : dict
        Held-out split name -> share of the speakers; the rest is "train".
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict
        Speaker ID -> split name.

    Example
    -------
    >>> strata = {f"s{i}": "child" if i < 6 else "teens" for i in range(10)}
    >>> split = _split_speakers(strata, {"valid": 0.2, "test": 0.2}, seed=1)
    >>> sorted(Counter(split.values()).items())
    [('test', 2), ('train', 6), ('valid', 2)]
    """
    members = defaultdict(list)
    for speaker, stratum in speaker_strata.items():
        members[stratum].append(speaker)
    sizes = {stratum: len(speakers) for stratum, speakers in members.items()}
    rng = random.Random(seed)
    tie_order = sorted(sizes)
    rng.shuffle(tie_order)
    tie_order = {stratum: index for index, stratum in enumerate(tie_order)}
    # Each split gets round(ratio * speakers) speakers. They are allocated
    # cumulatively (valid + test, then valid inside it), which keeps the
    # rounding from favouring the same stratum in every held-out split.
    total = len(speaker_strata)
    names = list(ratios)
    capacity, cumulative = sizes, {}
    for count in range(len(names), 0, -1):
        target = sum(_round_half_up(ratios[name] * total) for name in names[:count])
        share = sum(ratios[name] for name in names[:count])
        capacity = cumulative[count] = _allocate(
            target, share, sizes, capacity, tie_order
        )
    quotas = {
        name: {
            stratum: taken - (cumulative[index][stratum] if index else 0)
            for stratum, taken in cumulative[index + 1].items()
        }
        for index, name in enumerate(names)
    }
    assignment = {}
    for stratum in sorted(members):
        speakers = sorted(members[stratum])
        rng.shuffle(speakers)
        for split, quota in quotas.items():
            for speaker in speakers[: quota[stratum]]:
                assignment[speaker] = split
            speakers = speakers[quota[stratum] :]
        for speaker in speakers:
            assignment[speaker] = "train"
    return assignment


def _speaker_strata(rows):
    """Speaker -> most frequent age group of its utterances ("" without ages)."""
    groups = defaultdict(Counter)
    for row in rows:
        groups[row.spk_id][row.age_group or ""] += 1
    return {
        speaker: min(counts, key=lambda group: (-counts[group], group))
        for speaker, counts in groups.items()
    }


def _hold_out(rows, held_out, ratios, seed):
    """Splits ``rows`` (not yet in a split) by speaker into train and ``ratios``.

    ``held_out`` maps split names to rows already assigned (e.g. a corpus'
    own test split); the result adds the new splits to it.
    """
    assignment = _split_speakers(_speaker_strata(rows), ratios, seed)
    splits = {name: list(split_rows) for name, split_rows in held_out.items()}
    for row in rows:
        splits.setdefault(assignment[row.spk_id], []).append(row)
    return splits


def _check_disjoint(splits, log):
    """Stops the run when a speaker appears in more than one split.

    Reported once per speaker, at its first row in the later split.
    """
    first_split, reported = {}, set()
    for name in SPLITS:
        for row in splits.get(name, ()):
            if not row.spk_id or row.spk_id in reported:
                continue
            seen = first_split.setdefault(row.spk_id, name)
            if seen != name:
                reported.add(row.spk_id)
                log.stop(
                    *row.origin,
                    f"speaker {row.spk_id!r} is in both the {seen} and the {name} "
                    "split; splits must be speaker-disjoint",
                )


# --------------------------------------------------------------------- writing


def _fingerprint(paths):
    """Size and modification time of listing files (not of every audio file)."""
    prints = {}
    for path in paths:
        stat = os.stat(path)
        prints[os.path.abspath(path)] = [stat.st_size, stat.st_mtime_ns]
    return prints


def _run_record(source, options, inputs):
    return {
        "format_version": _FORMAT_VERSION,
        "source": source,
        "options": options,
        "inputs": inputs,
    }


def _previous_outputs(save_folder, record):
    """Returns the outputs of an identical earlier run, or None."""
    try:
        with open(os.path.join(save_folder, OPTIONS_FILE), encoding="utf-8") as saved:
            previous = json.load(saved)
    except (OSError, ValueError):
        return None
    outputs = previous.pop("outputs", None)
    if previous != record or not outputs:
        return None
    outputs = {name: os.path.join(save_folder, file) for name, file in outputs.items()}
    if not all(os.path.isfile(path) for path in outputs.values()):
        return None
    logger.info(
        "Skipping preparation: inputs and options are unchanged since the last run "
        "(delete %s to force it).",
        os.path.join(save_folder, OPTIONS_FILE),
    )
    return outputs


def _write_atomic(path, write, binary=False):
    """Writes a file through a temporary file renamed into place.

    ``write`` gets the open temporary file (text, UTF-8, no newline
    translation; or binary). The temporary name holds the process ID, so
    parallel workers never share one.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        if binary:
            with open(temporary, "wb") as output:
                write(output)
        else:
            with open(temporary, "w", encoding="utf-8", newline="") as output:
                write(output)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _format_number(value):
    """Writes seconds or years to the microsecond, without trailing zeros."""
    if value is None:
        return ""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _write_manifest(path, rows):
    """Writes one manifest; optional columns appear when any row has them."""
    columns = ["ID", "duration", "wav", "spk_id"]
    segmented = any(row.start is not None for row in rows)
    if segmented:
        columns += ["start", "stop"]
    has_age = any(row.age is not None for row in rows)
    has_group = any(row.age_group is not None for row in rows)
    has_gender = any(row.gender is not None for row in rows)
    columns += [
        name
        for name, present in (
            ("age", has_age),
            ("age_group", has_group),
            ("gender", has_gender),
        )
        if present
    ]

    def write(output):
        writer = csv.writer(output)
        writer.writerow(columns)
        for row in rows:
            values = [
                row.id,
                _format_number(row.duration),
                f"$data_root/{row.rel}",
                row.spk_id,
            ]
            if segmented:
                values += [
                    round(row.start * row.sample_rate),
                    round((row.start + row.duration) * row.sample_rate),
                ]
            if has_age:
                values.append(_format_number(row.age))
            if has_group:
                values.append(row.age_group or "")
            if has_gender:
                values.append(row.gender or "")
            writer.writerow(values)

    _write_atomic(path, write)


def _write_trials(path, trials):
    def write(output):
        writer = csv.writer(output)
        writer.writerow(["ID", "label", "enrol", "test"])
        for index, (label, enrol, test) in enumerate(trials):
            writer.writerow([f"trial{index:07d}", label, enrol, test])

    _write_atomic(path, write)


def _summarise(source, splits, extra, group_order):
    """Per split: speakers, utterances, hours, and counts per age group / gender.

    Age groups are listed in ``group_order``, unknown ones after by name.
    """

    def group_rank(item):
        group = item[0]
        position = group_order.index(group) if group in group_order else None
        return (position is None, position, group)

    summary = {"source": source, "splits": {}, **extra}
    for name, rows in splits.items():
        groups = defaultdict(lambda: [set(), 0])
        genders = Counter()
        for row in rows:
            if row.age_group is not None:
                groups[row.age_group][0].add(row.spk_id)
                groups[row.age_group][1] += 1
            if row.gender is not None:
                genders[row.gender] += 1
        summary["splits"][name] = {
            "speakers": len({row.spk_id for row in rows if row.spk_id}),
            "utterances": len(rows),
            "hours": round(sum(row.duration for row in rows) / 3600, 4),
            "age_groups": {
                group: {"speakers": len(speakers), "utterances": count}
                for group, (speakers, count) in sorted(groups.items(), key=group_rank)
            },
            "genders": dict(sorted(genders.items())),
        }
    return summary


def format_summary(summary):
    """Renders a preparation summary as a text table.

    Arguments
    ---------
    summary : dict
        The content of ``summary.json``.

    Returns
    -------
    str

    Example
    -------
    >>> summary = {"source": "kaldi", "splits": {"train": {"speakers": 2,
    ...     "utterances": 5, "hours": 0.01, "age_groups": {"child": {
    ...     "speakers": 2, "utterances": 5}}, "genders": {}}}}
    >>> print(format_summary(summary))
    split  speakers  utterances  hours  child
    train         2           5   0.01  2 / 5
    (age groups: speakers / utterances)
    """
    groups = list(
        dict.fromkeys(
            g for split in summary["splits"].values() for g in split["age_groups"]
        )
    )
    header = ["split", "speakers", "utterances", "hours", *groups]
    lines = []
    for name, split in summary["splits"].items():
        cells = [
            name,
            str(split["speakers"]),
            str(split["utterances"]),
            f"{split['hours']:.2f}",
        ]
        for group in groups:
            counts = split["age_groups"].get(group, {"speakers": 0, "utterances": 0})
            cells.append(f"{counts['speakers']} / {counts['utterances']}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        for row in [header, *lines]
    ]
    if groups:
        text.append("(age groups: speakers / utterances)")
    extra = {k: v for k, v in summary.items() if k not in ("source", "splits") and v}
    text += [f"{key.replace('_', ' ')}: {value}" for key, value in extra.items()]
    return "\n".join(text)


def _finish(
    save_folder, source, record, splits, log, trials=None, extra=None, group_order=()
):
    """Writes manifests, trials, summary and rejects, then the run record.

    The run record goes last and the old one first, so an interrupted run is
    never mistaken for a finished one.
    """
    os.makedirs(save_folder, exist_ok=True)
    record_path = os.path.join(save_folder, OPTIONS_FILE)
    if os.path.exists(record_path):
        os.remove(record_path)
    outputs = {}
    for name in SPLITS:
        path = os.path.join(save_folder, f"{name}.csv")
        if splits.get(name):
            _write_manifest(path, splits[name])
            outputs[name] = path
        elif os.path.exists(path):
            os.remove(path)  # a stale split of an earlier run would mislead
    trials_path = os.path.join(save_folder, TRIALS_FILE)
    if trials:
        _write_trials(trials_path, trials)
        outputs["trials"] = trials_path
    elif os.path.exists(trials_path):
        os.remove(trials_path)

    rejects_path = os.path.join(save_folder, REJECTS_FILE)
    if log.problems:

        def write_rejects(output):
            writer = csv.writer(output)
            writer.writerow(["file", "line", "problem"])
            for problem in log.problems:
                writer.writerow([problem.file, problem.line or "", problem.message])

        _write_atomic(rejects_path, write_rejects)
        logger.warning(
            "Dropped the rows of %d problem(s), listed in %s",
            len(log.problems),
            rejects_path,
        )
    elif os.path.exists(rejects_path):
        os.remove(rejects_path)

    summary = _summarise(
        source,
        {name: splits[name] for name in SPLITS if splits.get(name)},
        {"rejected_problems": len(log.problems), **(extra or {})},
        tuple(group_order),
    )
    _write_atomic(
        os.path.join(save_folder, SUMMARY_FILE),
        lambda output: json.dump(summary, output, indent=2),
    )
    logger.info(
        "Prepared %s manifests in %s:\n%s", source, save_folder, format_summary(summary)
    )
    saved = {
        **record,
        "outputs": {name: os.path.basename(path) for name, path in outputs.items()},
    }
    _write_atomic(record_path, lambda output: json.dump(saved, output, indent=2))
    return outputs


def _kept(rows):
    return [row for row in rows if not row.bad]


# ------------------------------------------------------------ labels files


def prepare_labels_file(
    data_folder,
    save_folder,
    train_labels,
    valid_labels=None,
    trials_clients=None,
    trials_impostors=None,
    label_kind="speaker",
    num_classes=None,
    valid_data_folder=None,
    skip_bad=False,
    jobs=None,
):
    """Converts the original code's labels and trial files into manifests.

    A labels file holds one ``path label -1`` per line: an audio path
    relative to ``data_folder`` (extension optional: ``.wav`` then ``.flac``
    are tried) and a class index. Its classes must be exactly ``0..N-1``.
    The files are already the splits the original trained on, so they are
    kept as they are: the train labels file gives ``train.csv``, the valid one
    ``valid.csv``. Trial files hold ``pathA pathB`` per line, same-speaker
    pairs in the clients file and different-speaker pairs in the impostors
    file; they give ``trials.csv`` (``ID, label, enrol, test``, label 1 for
    clients, enrol/test being IDs of ``valid.csv``). Without a valid labels
    file, ``valid.csv`` holds the trial files' audio (speakers unknown).

    Arguments
    ---------
    data_folder : str
        Folder the labels-file paths are relative to (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    train_labels : str
        The train labels file.
    valid_labels : str, optional
        The validation labels file; its labels must lie in the train range.
    trials_clients, trials_impostors : str, optional
        Trial files of same-speaker and different-speaker pairs; both or neither.
    label_kind : str
        What the labels are: "speaker" (``spk_id``, the speaker-verification
        code) or "age_group" (``age_group``, the age-classification variant,
        whose files do not name speakers: ``spk_id`` stays empty).
    num_classes : int, optional
        N; by default the largest train label + 1.
    valid_data_folder : str, optional
        Folder the valid labels and trial paths are relative to, when not
        ``data_folder`` (the original's ``--valid_data_dir``); its manifest
        paths still start with ``$data_root``, relative to ``data_folder``.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        "train", "valid" (when any) and "trials" (when given) -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.

    Example
    -------
    >>> data = str(getfixture("tmp_path"))
    >>> for name in ("a", "b"):
    ...     soundfile.write(os.path.join(data, name + ".wav"), numpy.zeros(1600), 16000)
    >>> with open(os.path.join(data, "train.lst"), "w") as labels:
    ...     _ = labels.write("a 0 -1\\nb 1 -1\\n")
    >>> labels = os.path.join(data, "train.lst")
    >>> out = prepare_labels_file(data, os.path.join(data, "prep"), labels)
    >>> print(open(out["train"]).read().strip())
    ID,duration,wav,spk_id
    a,0.1,$data_root/a.wav,0
    b,0.1,$data_root/b.wav,1
    """
    if label_kind not in ("speaker", "age_group"):
        raise ValueError(
            f"label_kind must be 'speaker' or 'age_group', got {label_kind!r}"
        )
    if (trials_clients is None) != (trials_impostors is None):
        raise ValueError(
            "trials_clients and trials_impostors go together: give both or neither"
        )
    valid_data_folder = valid_data_folder or data_folder
    listings = [train_labels, valid_labels, trials_clients, trials_impostors]
    listings = [path for path in listings if path is not None]
    log = _ProblemLog()
    present = [
        path for path in listings if _require_file(path, log, "labels or trials file")
    ]
    log.raise_if_bad(skip_bad)
    record = _run_record(
        "labels",
        {
            "data_folder": os.path.abspath(data_folder),
            "valid_data_folder": os.path.abspath(valid_data_folder),
            "label_kind": label_kind,
            "num_classes": num_classes,
            "skip_bad": skip_bad,
        },
        _fingerprint(present),
    )
    previous = _previous_outputs(save_folder, record)
    if previous is not None:
        return previous

    train, train_labels_of = _read_labels(train_labels, data_folder, data_folder, log)
    valid, valid_labels_of = [], {}
    if valid_labels is not None:
        valid, valid_labels_of = _read_labels(
            valid_labels, valid_data_folder, data_folder, log
        )
    trials = []
    if trials_clients is not None:
        valid, trials = _read_trial_pairs(
            [(trials_clients, 1), (trials_impostors, 0)],
            valid_data_folder,
            data_folder,
            valid if valid_labels is not None else None,
            log,
        )
    n_classes = num_classes
    if n_classes is None:
        n_classes = max(train_labels_of.values(), default=-1) + 1
    for rows, labels_of in ((train, train_labels_of), (valid, valid_labels_of)):
        for row in rows:
            label = labels_of.get(row)
            if label is None:
                continue
            if not 0 <= label < n_classes:
                log.reject_row(
                    row, *row.origin, f"label {label} is outside 0..{n_classes - 1}"
                )
            elif label_kind == "speaker":
                row.spk_id = str(label)
            else:
                row.age_group = str(label)
    _reject_duplicates(train + valid, log)
    _probe_utterances(train + valid, data_folder, log, jobs)
    if not _kept(train):
        log.stop(train_labels, None, "no usable utterance")
    _check_label_gaps(_kept(train), train_labels_of, n_classes, train_labels, log)
    log.raise_if_bad(skip_bad)

    kept_valid = _kept(valid)
    kept_ids = {row.id for row in kept_valid}
    # Under skip_bad, a trial whose audio was dropped goes with it.
    trials = [
        trial for trial in trials if trial[1] in kept_ids and trial[2] in kept_ids
    ]
    return _finish(
        save_folder,
        "labels",
        record,
        {"train": _kept(train), "valid": kept_valid},
        log,
        trials,
        group_order=[str(label) for label in range(n_classes)],
    )


def _read_labels(path, folder, data_folder, log):
    """Reads a labels file into rows and {row: label}."""
    rows, labels_of = [], {}
    for line_number, fields in _read_fields(path, log, "path label -1", 3):
        rel = _relative_path(fields[0], folder, data_folder)
        row = _Utterance(_utterance_id(rel), rel, (path, line_number))
        rows.append(row)
        try:
            labels_of[row] = int(fields[1])
        except ValueError:
            log.reject_row(
                row, path, line_number, f"label {fields[1]!r} is not an integer"
            )
    return rows, labels_of


def _read_trial_pairs(files, folder, data_folder, known, log):
    """Reads trial files of ``pathA pathB`` pairs.

    Returns the utterances the trials use (``known`` when given, after
    rejecting trial paths not in it; else one row per distinct path) and
    the trials as (label, enrol ID, test ID).
    """
    by_id = {row.id: row for row in known} if known is not None else {}
    rows = list(known) if known is not None else []
    trials = []
    for path, label in files:
        for line_number, fields in _read_fields(path, log, "pathA pathB", 2):
            ids = []
            for field in fields:
                rel = _relative_path(field, folder, data_folder)
                row_id = _utterance_id(rel)
                if row_id not in by_id:
                    if known is not None:
                        log.reject(
                            path,
                            line_number,
                            f"unknown utterance: {field!r} is not in the "
                            "valid labels file",
                        )
                        break
                    by_id[row_id] = _Utterance(row_id, rel, (path, line_number))
                    rows.append(by_id[row_id])
                ids.append(row_id)
            else:
                trials.append((label, *ids))
    return rows, trials


def _check_label_gaps(rows, labels_of, n_classes, path, log):
    """Stops the run when labels in ``0..n_classes-1`` are never used."""
    first_line = {}
    for row in rows:  # in file order
        if row in labels_of:
            first_line.setdefault(labels_of[row], row.origin[1])
    missing = [label for label in range(n_classes) if label not in first_line]
    runs = []
    for label in missing:
        if runs and runs[-1][1] == label - 1:
            runs[-1][1] = label
        else:
            runs.append([label, label])
    for low, high in runs:
        unused = f"label {low}" if low == high else f"labels {low}..{high}"
        problem = (
            f"{unused} never used by a usable row "
            f"(labels must cover 0..{n_classes - 1})"
        )
        if high + 1 < n_classes:
            log.stop(
                path, first_line[high + 1], f"label {high + 1} follows a gap: {problem}"
            )
        else:
            log.stop(path, None, problem)


# ------------------------------------------------------------------------ Kaldi


def prepare_kaldi(
    data_folder,
    save_folder,
    train_dir="train",
    test_dir="test",
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    age_bins=DEFAULT_AGE_BINS,
    age_groups=DEFAULT_AGE_GROUPS,
    download_url=SPEECHOCEAN762_URL,
    skip_bad=False,
    jobs=None,
):
    """Converts Kaldi-style data dirs (speechocean762's layout) into manifests.

    ``data_folder/train_dir`` (and ``data_folder/test_dir`` when present)
    hold ``wav.scp`` (``UTTID PATH``, paths relative to ``data_folder`` or
    absolute; pipe commands are not supported), ``utt2spk`` and optionally
    ``spk2age`` (years), ``spk2gender`` (m/f) and ``segments``
    (``UTTID RECID START END`` in seconds, END -1 for the end of the file).
    The test dir is the test split and valid speakers are held out of train;
    without one, valid and test speakers are both held out of train. Splits
    are speaker-disjoint, deterministic for ``seed`` and stratified by age
    group when ages exist. When ``data_folder`` does not exist and
    ``download_url`` is set, speechocean762 is downloaded and unpacked there
    first (see :func:`download_speechocean762`).

    Arguments
    ---------
    data_folder : str
        Corpus root (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    train_dir, test_dir : str
        Data dirs inside ``data_folder``; the test dir is optional.
    valid_ratio, test_ratio : float
        Shares of the train dir's speakers held out (test_ratio only without
        a test dir).
    seed : int
        Seed of the speaker split.
    age_bins : sequence of float
        Age-group edges in years (see :func:`age_group`).
    age_groups : sequence of str
        Age-group names, one more than the edges.
    download_url : str or None
        Where to get speechocean762 when ``data_folder`` is absent; None to
        never download.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name ("train", "valid", "test") -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    DownloadError
        When the corpus is absent and cannot be downloaded.
    """
    _check_ratios(valid_ratio, test_ratio)
    _check_age_bins(age_bins, age_groups)
    if not os.path.isdir(data_folder):
        if download_url is None:
            raise FileNotFoundError(f"{data_folder}: no such corpus folder")
        download_speechocean762(data_folder, url=download_url)
    dirs = {"train": os.path.join(data_folder, train_dir)}
    if os.path.isdir(os.path.join(data_folder, test_dir)):
        dirs["test"] = os.path.join(data_folder, test_dir)
    log = _ProblemLog()
    for kaldi_dir in dirs.values():
        for name in ("wav.scp", "utt2spk"):
            _require_file(
                os.path.join(kaldi_dir, name),
                log,
                "a Kaldi data dir needs wav.scp and utt2spk",
            )
    log.raise_if_bad(skip_bad)
    listings = [
        os.path.join(kaldi_dir, name)
        for kaldi_dir in dirs.values()
        for name in ("wav.scp", "utt2spk", "spk2age", "spk2gender", "segments")
        if os.path.isfile(os.path.join(kaldi_dir, name))
    ]
    record = _run_record(
        "kaldi",
        {
            "data_folder": os.path.abspath(data_folder),
            "dirs": sorted(dirs),
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
            "age_bins": list(age_bins),
            "age_groups": list(age_groups),
            "skip_bad": skip_bad,
        },
        _fingerprint(listings),
    )
    previous = _previous_outputs(save_folder, record)
    if previous is not None:
        return previous

    rows_of = {
        name: _read_kaldi_dir(kaldi_dir, data_folder, age_bins, age_groups, log, jobs)
        for name, kaldi_dir in dirs.items()
    }
    _reject_duplicates([row for rows in rows_of.values() for row in rows], log)
    log.raise_if_bad(skip_bad)
    train = _kept(rows_of["train"])
    if "test" in rows_of:
        splits = _hold_out(
            train, {"test": _kept(rows_of["test"])}, {"valid": valid_ratio}, seed
        )
    else:
        splits = _hold_out(train, {}, {"valid": valid_ratio, "test": test_ratio}, seed)
    _check_disjoint(splits, log)
    log.raise_if_bad(skip_bad)
    return _finish(save_folder, "kaldi", record, splits, log, group_order=age_groups)


def _reject_duplicates(rows, log):
    """Rejects rows whose ID an earlier row (e.g. of another dir) has."""
    first = {}
    for row in rows:
        if row.id in first:
            log.reject_row(
                row, *row.origin, f"duplicate ID {row.id!r} (first at {first[row.id]})"
            )
        else:
            first[row.id] = "{}:{}".format(*row.origin)


def _read_speaker_table(path, log, expected, parse, problem):
    """Reads ``spk2age``-like files into {speaker: value} and bad speakers.

    ``parse`` returns a value or None; ``problem`` says what is wrong then.
    """
    values, bad = {}, set()
    for speaker, (line_number, fields) in _read_keyed(path, log, expected, 2).items():
        value = parse(fields[1])
        if value is None:
            log.reject(
                path, line_number, f"{fields[1]!r} (speaker {speaker!r}) {problem}"
            )
            bad.add(speaker)
        else:
            values[speaker] = value
    return values, bad


def _parse_gender(text):
    return text if text in ("m", "f") else None


def _read_kaldi_dir(kaldi_dir, data_folder, age_bins, age_groups, log, jobs):
    """Reads one Kaldi data dir into checked utterance rows."""
    wav_scp = os.path.join(kaldi_dir, "wav.scp")
    utt2spk = os.path.join(kaldi_dir, "utt2spk")
    segments = os.path.join(kaldi_dir, "segments")
    recordings = _read_keyed(wav_scp, log, "ID PATH", 2, keep_rest=True)
    speakers = _read_keyed(utt2spk, log, "UTTID SPEAKER", 2)
    tables = {}
    for name, expected, parse, problem in (
        (
            "spk2age",
            "SPEAKER AGE",
            _parse_age,
            "is not an age: ages must be numbers (years)",
        ),
        ("spk2gender", "SPEAKER m|f", _parse_gender, "is not a gender: m or f"),
    ):
        path = os.path.join(kaldi_dir, name)
        if os.path.isfile(path):
            tables[name] = (
                path,
                *_read_speaker_table(path, log, expected, parse, problem),
            )

    # Recordings are probed once, whether utterances are whole files or segments.
    recording_rows = {}
    for rec_id, (line_number, (_, location)) in recordings.items():
        if location.endswith("|"):
            log.reject(
                wav_scp,
                line_number,
                "pipe commands are not supported: convert the audio to files",
            )
            continue
        recording_rows[rec_id] = _Utterance(
            rec_id,
            _relative_path(location, data_folder, data_folder),
            (wav_scp, line_number),
        )
    _probe_utterances(list(recording_rows.values()), data_folder, log, jobs)

    if os.path.isfile(segments):
        rows = _read_segments(segments, recordings, recording_rows, log)
    else:
        rows = [
            _Utterance(rec.id, rec.rel, rec.origin, duration=rec.duration, bad=rec.bad)
            for rec in recording_rows.values()
        ]
    for row in rows:
        if row.id not in speakers:
            log.reject_row(
                row, *row.origin, f"utterance {row.id!r} has no speaker in {utt2spk}"
            )
            continue
        line_number, (_, speaker) = speakers[row.id]
        row.spk_id = speaker
        for name, (path, values, bad) in tables.items():
            if speaker in bad:
                row.bad = True  # reported once, on the speaker's line
            elif speaker not in values:
                log.reject_row(
                    row,
                    utt2spk,
                    line_number,
                    f"unknown speaker {speaker!r}: not in {path}",
                )
            elif name == "spk2age":
                row.age = values[speaker]
                row.age_group = age_group(row.age, age_bins, age_groups)
            else:
                row.gender = values[speaker]
    known = {row.id for row in rows}
    for utt_id, (line_number, _) in speakers.items():
        if utt_id not in known and utt_id not in recordings:
            log.reject(
                utt2spk, line_number, f"utterance {utt_id!r} has no audio in {wav_scp}"
            )
    return rows


def _read_segments(path, recordings, recording_rows, log):
    """Reads a Kaldi ``segments`` file into utterance rows cut from recordings."""
    rows = []
    for utt_id, (line_number, fields) in _read_keyed(
        path, log, "UTTID RECID START END", 4
    ).items():
        rec_id = fields[1]
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            log.reject(
                path,
                line_number,
                f"start {fields[2]!r} / end {fields[3]!r} are not numbers",
            )
            continue
        row = _Utterance(utt_id, "", (path, line_number), start=start)
        rows.append(row)
        if rec_id not in recordings:
            log.reject_row(
                row, path, line_number, f"unknown recording {rec_id!r}: not in wav.scp"
            )
            continue
        recording = recording_rows.get(rec_id)
        if recording is None or recording.bad:
            row.bad = True  # reported on its wav.scp line
            continue
        if recording.sample_rate is None:
            log.reject_row(
                row,
                path,
                line_number,
                f"{recording.rel}: segments need a sample rate, "
                "which MP4 headers lack",
            )
            continue
        end = recording.duration if end == -1 else end
        if not 0 <= start < end <= recording.duration + 1e-3:
            log.reject_row(
                row,
                path,
                line_number,
                f"segment {start}..{fields[3]} s lies outside recording {rec_id!r} "
                f"(0..{recording.duration:g} s) or is empty",
            )
            continue
        row.rel, row.sample_rate = recording.rel, recording.sample_rate
        row.duration = min(end, recording.duration) - start
    return rows


# ------------------------------------------------------------------ download


def download_speechocean762(data_folder, url=SPEECHOCEAN762_URL, timeout=60.0):
    """Downloads and unpacks speechocean762 into ``data_folder``.

    The archive goes next to ``data_folder`` (``<parent>/<archive name>``),
    downloaded through a ``.part`` file that a later call resumes (HTTP
    Range). Its SHA-256 is recorded in ``<archive>.sha256`` the first time
    and verified every time after. It is unpacked safely (no absolute paths,
    no ``..``, no links out of the folder) into a temporary folder that is
    renamed to ``data_folder`` when complete. The archive is kept, so
    unpacking again needs no download.

    Arguments
    ---------
    data_folder : str
        Folder the corpus root ends up in.
    url : str
        Archive URL (OpenSLR resource 101 by default; a mirror may be given).
    timeout : float
        Seconds to wait for the server.

    Raises
    ------
    DownloadError
        With a message saying how to get the corpus by hand when there is no
        network, and on checksum mismatch or an unsafe archive.
    """
    data_folder = os.path.abspath(data_folder)
    parent = os.path.dirname(data_folder)
    os.makedirs(parent, exist_ok=True)
    archive = os.path.join(
        parent,
        os.path.basename(urllib.parse.urlsplit(url).path) or "speechocean762.tar.gz",
    )
    if not os.path.isfile(archive):
        try:
            _download(url, archive + ".part", timeout)
        except (OSError, urllib.error.URLError) as error:
            unpacked = os.path.join(data_folder, "train", "wav.scp")
            raise DownloadError(
                f"Could not download speechocean762 from {url} ({error}).\n"
                "To get it by hand: on a machine with internet access, download "
                "speechocean762.tar.gz from https://www.openslr.org/101/ and copy "
                f"it to {archive}, then run this again (it is unpacked into "
                f"{data_folder}); or unpack it yourself so that {unpacked} exists."
            ) from error
        _verify_checksum(archive + ".part", archive + ".sha256")
        os.replace(archive + ".part", archive)
    else:
        _verify_checksum(archive, archive + ".sha256")
    _extract_tar(archive, data_folder)


def _download(url, part, timeout):
    """Downloads ``url`` into ``part``, resuming what an earlier call left."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(
        url, headers={"Range": f"bytes={have}-"} if have else {}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:
            raise
        # The server refuses the range: the part is stale; start again.
        os.remove(part)
        return _download(url, part, timeout)
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range and sends everything
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as output, tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"Downloading {os.path.basename(url)}",
        ) as progress:
            while block := response.read(1 << 20):
                output.write(block)
                progress.update(len(block))
    if total is not None and os.path.getsize(part) != total:
        raise OSError(
            f"incomplete download: {os.path.getsize(part)} of {total} bytes; "
            "run again to resume"
        )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify_checksum(path, sidecar):
    """Checks ``path`` against the SHA-256 in ``sidecar`` (recorded the first time)."""
    digest = _sha256(path)
    if not os.path.isfile(sidecar):
        name = os.path.basename(sidecar).removesuffix(".sha256")
        _write_atomic(sidecar, lambda output: output.write(f"{digest}  {name}\n"))
        logger.info("Recorded SHA-256 %s in %s", digest, sidecar)
        return
    with open(sidecar, encoding="utf-8") as recorded:
        expected = recorded.read().split()[0]
    if digest != expected:
        os.remove(path)
        raise DownloadError(
            f"{path}: SHA-256 {digest} does not match {expected} recorded in "
            f"{sidecar}; the file was removed. Download it again, or delete the "
            "checksum file if the archive legitimately changed."
        )


def _extract_tar(archive, data_folder):
    """Unpacks ``archive`` into ``data_folder`` through a temporary folder."""
    staging = tempfile.mkdtemp(dir=os.path.dirname(data_folder), prefix=".unpacking-")
    try:
        with tarfile.open(archive) as tar:
            # tarfile's "data" filter refuses absolute paths, "..", links
            # leaving the folder and device files.
            tar.extractall(
                staging, members=tqdm(tar, desc="Unpacking", unit="file"), filter="data"
            )
        entries = os.listdir(staging)
        root = staging
        if len(entries) == 1 and os.path.isdir(os.path.join(staging, entries[0])):
            root = os.path.join(staging, entries[0])  # the archive's top folder
        os.replace(root, data_folder)
    except tarfile.FilterError as error:
        raise DownloadError(
            f"{archive}: unsafe archive, refused to unpack: {error}"
        ) from None
    except tarfile.TarError as error:
        raise DownloadError(
            f"{archive}: corrupt archive ({error}); delete it and run again"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------- Common Voice


def prepare_commonvoice(
    data_folder,
    save_folder,
    use_official_splits=True,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    skip_bad=False,
    jobs=None,
):
    """Converts a Common Voice release folder into manifests with age groups.

    Reads ``train.tsv`` / ``dev.tsv`` / ``test.tsv`` (Common Voice's own
    speaker-disjoint splits) when ``use_official_splits`` and all three
    exist, else ``validated.tsv`` split by speaker (``client_id``) here,
    stratified by age group. Columns used: ``client_id``, ``path`` (a clip in
    ``clips/``), ``age`` and, when present, ``gender``. Rows without an age
    are dropped and counted in the summary; Common Voice's age names
    (``teens``, ``twenties``, ...) are the age groups (``age`` in years is
    unknown, so that column is absent). Durations come from the MP3 headers.

    Arguments
    ---------
    data_folder : str
        Release folder holding the TSVs and ``clips/``.
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    use_official_splits : bool
        Use train/dev/test.tsv when present.
    valid_ratio, test_ratio : float
        Speaker shares held out when splitting ``validated.tsv``.
    seed : int
        Seed of that split.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    """
    _check_ratios(valid_ratio, test_ratio)
    official = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}
    if use_official_splits and all(
        os.path.isfile(os.path.join(data_folder, name)) for name in official.values()
    ):
        tables = {
            split: os.path.join(data_folder, name) for split, name in official.items()
        }
    else:
        tables = {"validated": os.path.join(data_folder, "validated.tsv")}
    log = _ProblemLog()
    for path in tables.values():
        _require_file(
            path,
            log,
            "a Common Voice release needs validated.tsv (or train/dev/test.tsv)",
        )
    log.raise_if_bad(skip_bad)
    record = _run_record(
        "commonvoice",
        {
            "data_folder": os.path.abspath(data_folder),
            "tables": sorted(tables),
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
            "skip_bad": skip_bad,
        },
        _fingerprint(tables.values()),
    )
    previous = _previous_outputs(save_folder, record)
    if previous is not None:
        return previous

    rows_of, without_age = {}, 0
    for split, path in tables.items():
        rows_of[split], dropped = _read_commonvoice_tsv(path, log)
        without_age += dropped
    everything = [row for rows in rows_of.values() for row in rows]
    _reject_duplicates(everything, log)
    _probe_utterances(everything, data_folder, log, jobs, extensions=(".mp3",))
    log.raise_if_bad(skip_bad)
    if "validated" in rows_of:
        splits = _hold_out(
            _kept(rows_of["validated"]),
            {},
            {"valid": valid_ratio, "test": test_ratio},
            seed,
        )
    else:
        splits = {split: _kept(rows) for split, rows in rows_of.items()}
    _check_disjoint(splits, log)
    log.raise_if_bad(skip_bad)
    logger.info("Dropped %d Common Voice rows without an age", without_age)
    return _finish(
        save_folder,
        "commonvoice",
        record,
        splits,
        log,
        extra={"rows_without_age": without_age},
        group_order=COMMONVOICE_AGE_GROUPS,
    )


def _read_commonvoice_tsv(path, log):
    """Reads one Common Voice TSV into rows; returns them and the count without age."""
    rows, without_age = [], 0
    with open(path, encoding="utf-8", newline="") as table:
        # Sentences hold quotes: Common Voice does not quote its fields.
        reader = csv.reader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        missing = [
            column for column in ("client_id", "path", "age") if column not in header
        ]
        if missing:
            log.stop(path, 1, f"the header lacks column(s) {', '.join(missing)}")
            return rows, 0
        index = {column: header.index(column) for column in header}
        for fields in reader:
            line_number = reader.line_num
            if not any(fields):
                continue
            if len(fields) != len(header):
                log.reject(
                    path,
                    line_number,
                    f"malformed line: {len(fields)} fields, "
                    f"the header has {len(header)}",
                )
                continue
            age = fields[index["age"]].strip()
            if not age:
                without_age += 1
                continue
            clip = fields[index["path"]]
            row = _Utterance(
                _utterance_id(clip),
                f"clips/{clip}",
                (path, line_number),
                spk_id=fields[index["client_id"]],
            )
            rows.append(row)
            if age not in COMMONVOICE_AGE_GROUPS:
                log.reject_row(
                    row,
                    path,
                    line_number,
                    f"age {age!r} is not a Common Voice age group "
                    f"({', '.join(COMMONVOICE_AGE_GROUPS)})",
                )
            row.age_group = age
            if "gender" in index:
                row.gender = fields[index["gender"]] or None
    return rows, without_age


# -------------------------------------------------------------------- VoxCeleb

_VOXCELEB_SPEAKER = re.compile(r"id\d+")


def prepare_voxceleb(
    data_folder,
    save_folder,
    trials_file=None,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    skip_bad=False,
    jobs=None,
):
    """Converts VoxCeleb1/2 trees (``id*/video/*.wav`` or ``.m4a``) into manifests.

    Every folder named ``id<digits>`` below ``data_folder`` (at any depth,
    e.g. ``vox1/wav/`` and ``vox2/dev/aac/`` side by side) is a speaker; its
    sub-folders are videos holding the utterances. IDs are
    ``speaker--video--utterance``. With a trial list (``veri_test2.txt``
    format: ``1|0 pathA pathB`` per line, paths ``id*/video/file``), the
    speakers it names form the test split, its trials become ``trials.csv``
    and valid speakers are held out of the rest; without one, valid and test
    speakers are both held out. ``.m4a`` durations come from the MP4 header
    (libsndfile cannot decode AAC).

    Arguments
    ---------
    data_folder : str
        Folder holding the VoxCeleb trees (``$data_root``).
    save_folder : str
        Where the manifests, ``summary.json`` and the run record go.
    trials_file : str, optional
        Official trial list.
    valid_ratio, test_ratio : float
        Speaker shares held out (test_ratio only without a trial list).
    seed : int
        Seed of the speaker split.
    skip_bad : bool
        Drop bad rows (listed in ``rejects.csv``) instead of failing.
    jobs : int, optional
        Processes reading audio headers; default one per core.

    Returns
    -------
    dict
        Split name and "trials" (with a trial list) -> CSV path.

    Raises
    ------
    BadInputError
        Listing every problem; nothing is written.
    """
    _check_ratios(valid_ratio, test_ratio)
    log = _ProblemLog()
    if trials_file is not None:
        _require_file(trials_file, log, "trial list")
    if not os.path.isdir(data_folder):
        log.stop(data_folder, None, "missing: the VoxCeleb folder")
    log.raise_if_bad(skip_bad)
    audio_paths = _scan_voxceleb(data_folder)
    if not audio_paths:
        log.stop(data_folder, None, "no id*/video/*.wav or *.m4a files found")
        log.raise_if_bad(skip_bad)
    # The tree itself is the input: a hash of its file list, not of every file.
    inputs = {"tree": hashlib.sha256("\n".join(audio_paths).encode()).hexdigest()}
    if trials_file is not None:
        inputs.update(_fingerprint([trials_file]))
    record = _run_record(
        "voxceleb",
        {
            "data_folder": os.path.abspath(data_folder),
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
            "skip_bad": skip_bad,
        },
        inputs,
    )
    previous = _previous_outputs(save_folder, record)
    if previous is not None:
        return previous

    rows = []
    for rel in audio_paths:
        parts = rel.split("/")
        # A tree has no lines: problems name the folder and the audio file.
        row = _Utterance(
            _utterance_id("/".join(parts[-3:])),
            rel,
            (data_folder, None),
            spk_id=parts[-3],
        )
        rows.append(row)
    _reject_duplicates(rows, log)
    _probe_utterances(rows, data_folder, log, jobs)
    by_id = {row.id: row for row in rows}
    trials = []
    if trials_file is not None:
        trials = _read_voxceleb_trials(trials_file, by_id, data_folder, log)
    log.raise_if_bad(skip_bad)

    kept = _kept(rows)
    # Under skip_bad, a trial whose audio was dropped goes with it.
    trials = [
        trial for trial in trials if not (by_id[trial[1]].bad or by_id[trial[2]].bad)
    ]
    if trials_file is not None:
        test_speakers = {by_id[utt].spk_id for trial in trials for utt in trial[1:]}
        test = [row for row in kept if row.spk_id in test_speakers]
        rest = [row for row in kept if row.spk_id not in test_speakers]
        splits = _hold_out(rest, {"test": test}, {"valid": valid_ratio}, seed)
    else:
        splits = _hold_out(kept, {}, {"valid": valid_ratio, "test": test_ratio}, seed)
    return _finish(save_folder, "voxceleb", record, splits, log, trials)


def _scan_voxceleb(data_folder):
    """Lists ``id*/video/*.wav|.m4a`` below ``data_folder``, sorted, relative."""
    found = []
    pending = [data_folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        for folder in folders:
            if not _VOXCELEB_SPEAKER.fullmatch(folder.name):
                pending.append(folder.path)
                continue
            # One relpath per speaker: per file it would dominate on 1 M files.
            speaker = os.path.relpath(folder.path, data_folder).replace(os.sep, "/")
            with os.scandir(folder.path) as videos:
                videos = [v for v in videos if v.is_dir()]
            for video in videos:
                with os.scandir(video.path) as files:
                    found += [
                        f"{speaker}/{video.name}/{audio.name}"
                        for audio in files
                        if os.path.splitext(audio.name)[1].lower() in (".wav", ".m4a")
                    ]
    return sorted(found)


def _read_voxceleb_trials(path, by_id, data_folder, log):
    """Reads a ``veri_test2.txt`` trial list into (label, enrol ID, test ID)."""
    trials = []
    for line_number, (label, *paths) in _read_fields(path, log, "1|0 pathA pathB", 3):
        if label not in ("0", "1"):
            log.reject(path, line_number, f"trial label {label!r} is not 0 or 1")
            continue
        ids = [_utterance_id(trial_path) for trial_path in paths]
        unknown = [p for p, trial_id in zip(paths, ids) if trial_id not in by_id]
        if unknown:
            log.reject(
                path,
                line_number,
                f"unknown utterance(s) {', '.join(unknown)}: "
                f"no such id*/video/file under {data_folder}",
            )
            continue
        trials.append((int(label), *ids))
    return trials


# -------------------------------------------------------------------- features


def extract_features(
    list_file, out_dir=None, data_dir=None, jobs=None, overwrite=False
):
    """Computes log-mel features of the audio files in a list, one ``.npy`` each.

    The original's feature-extraction step (``featureExtractor.py -i
    files.lst``): one audio path per line, extension optional (``.wav``
    then ``.flac`` are tried). Each file's ``(frames, 80)`` float32 raw
    log-mel matrix (:class:`dmha_modules.features.LogMelFeatures`, no mean
    normalisation: the recipe normalises per utterance) goes next to the
    audio with the extension ``.npy``, or under ``out_dir`` at the list's
    relative path. Multi-channel audio is averaged to mono. Files are done
    in parallel processes; existing features newer than their audio are
    kept unless ``overwrite``, so an interrupted run resumes. Bad lines are
    reported together at the end, after every good file is done.

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
    """
    data_dir = data_dir or os.getcwd()
    log = _ProblemLog()
    _require_file(list_file, log, "the list of audio files")
    log.raise_if_bad(skip_bad=False)
    tasks, outputs, first_line = [], [], {}
    for line_number, (entry,) in _read_fields(
        list_file, log, "audio path", 1, keep_rest=True
    ):
        path = os.path.join(data_dir, entry)
        if out_dir is not None and _relative_path(
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
        outputs.append(target)
        tasks.append(
            (
                line_number,
                path,
                _audio_suffixes(path, (".wav", ".flac")),
                target,
                overwrite,
            )
        )
    jobs = jobs or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        mapper = map
        if jobs > 1 and len(tasks) > 1:
            # "spawn": the caller may run torch threads, which a fork breaks.
            pool = ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=get_context("spawn"),
                initializer=_features_worker_init,
            )
            chunksize = max(1, min(64, len(tasks) // (jobs * 8)))
            mapper = functools.partial(
                stack.enter_context(pool).map, chunksize=chunksize
            )
        results = mapper(_features_worker, tasks)
        for line_number, error in tqdm(
            results, total=len(tasks), desc="Extracting features", unit="file"
        ):
            if error is not None:
                log.reject(list_file, line_number, error)
    log.raise_if_bad(skip_bad=False)
    return outputs


def _features_worker_init():
    import torch

    # One thread per process: the pool supplies the parallelism.
    torch.set_num_threads(1)


_EXTRACTORS = {}


def _features_worker(task):
    """Computes and atomically saves one file's features; returns (line, error)."""
    # torch only here: preparing manifests should not pay for importing it.
    import torch

    from dmha_modules.audio import read_audio
    from dmha_modules.features import LogMelFeatures

    line_number, path, suffixes, target, overwrite = task
    for suffix in suffixes:
        if os.path.isfile(path + suffix):
            audio_path = path + suffix
            break
    else:
        tried = ", ".join(path + suffix for suffix in suffixes)
        return line_number, f"audio file not found (tried {tried})"
    if (
        not overwrite
        and os.path.isfile(target)
        and os.path.getmtime(target) >= os.path.getmtime(audio_path)
    ):
        return line_number, None
    try:
        signal, sample_rate = read_audio(audio_path)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        return line_number, f"{audio_path}: unreadable or corrupt audio ({error})"
    if signal.shape[0] == 0:
        return line_number, f"{audio_path}: the audio has no samples (zero length)"
    if sample_rate not in _EXTRACTORS:
        _EXTRACTORS[sample_rate] = LogMelFeatures(sample_rate=sample_rate, n_mels=80)
    extractor = _EXTRACTORS[sample_rate]
    if extractor.num_frames(signal.shape[0]) == 0:
        return line_number, (
            f"{audio_path}: {signal.shape[0]} samples are too short for one "
            f"{extractor.win_length}-sample analysis window"
        )
    with torch.no_grad():
        features = extractor(signal[None])[0]
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    matrix = features.numpy().astype(numpy.float32)
    _write_atomic(
        target,
        lambda output: numpy.save(output, matrix, allow_pickle=False),
        binary=True,
    )
    return line_number, None
