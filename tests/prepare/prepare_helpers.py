"""What the data-preparation tests share: writing small corpora and checking reports.

Imported by name (``tests/prepare`` is on ``sys.path`` under pytest).
"""

import csv
import struct
from pathlib import Path

import numpy
import soundfile

from dmha_modules import prepare


def write_audio(path, seconds=0.1, sample_rate=16000, channels=1, **kwargs):
    """Writes noise of ``seconds`` to ``path``; returns its exact duration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = round(seconds * sample_rate)
    rng = numpy.random.default_rng(frames)
    shape = (frames, channels) if channels > 1 else frames
    soundfile.write(path, 0.1 * rng.standard_normal(shape), sample_rate, **kwargs)
    return frames / sample_rate


def write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as table:
        return list(csv.DictReader(table))


def duration_text(seconds):
    return f"{seconds:.6f}".rstrip("0").rstrip(".")


def assert_nothing_written(save_folder):
    """No manifest, trials, summary or run record exists."""
    written = (
        sorted(p.name for p in Path(save_folder).glob("*"))
        if Path(save_folder).exists()
        else []
    )
    assert not [n for n in written if n.endswith((".csv", ".json", ".tmp"))], written


def assert_reports(error, file, line, *words):
    """The error names ``file:line`` on one line holding all ``words``."""
    where = f"{file}:{line}:" if line is not None else f"{file}:"
    lines = [text for text in str(error).splitlines() if text.startswith(where)]
    assert lines, f"no problem reported at {where} in:\n{error}"
    assert any(all(word in text for word in words) for text in lines), (
        where,
        words,
        str(error),
    )


def mp4_bytes(duration_units, timescale=1000, version=0, moov_last=True):
    """A minimal MP4 (.m4a): ftyp, mdat and moov holding an mvhd box."""

    def box(kind, payload):
        return struct.pack(">I4s", 8 + len(payload), kind) + payload

    if version == 0:
        mvhd = struct.pack(">B3xIIII", 0, 0, 0, timescale, duration_units)
    else:
        mvhd = struct.pack(">B3xQQIQ", 1, 0, 0, timescale, duration_units)
    mvhd += bytes(80)  # rate, volume, matrix, next track: unused here
    moov = box(b"moov", box(b"mvhd", mvhd))
    parts = [box(b"ftyp", b"M4A \x00\x00\x02\x00isomM4A "), box(b"mdat", bytes(300))]
    return b"".join(parts + [moov] if moov_last else [parts[0], moov, parts[1]])


def prepare_labels(data, save, **kwargs):
    return prepare.prepare_labels_file(
        str(data), str(save), str(data / "train.lst"), jobs=1, **kwargs
    )


def append(path, text):
    with open(path, "a", encoding="utf-8") as listing:
        listing.write(text)


SPEAKERS = {
    # speaker: (age, gender); ages cover every default group.
    "0001": (6, "m"),
    "0002": (8, "f"),
    "0003": (10, "m"),
    "0004": (12, "f"),
    "0005": (13, "f"),
    "0006": (15, "m"),
    "0007": (21, "f"),
    "0008": (25, "m"),
    "0009": (29, "f"),
    "0010": (30, "m"),
    "0011": (43, "f"),
    "0012": (24, "m"),
}


def make_kaldi_dir(root, split, speakers, utterances=2, suffix=".WAV"):
    """A speechocean762-like data dir; returns {utt: (rel path, duration)}."""
    audio = {}
    for speaker in speakers:
        for index in range(utterances):
            utt = f"{speaker}{split[:2]}{index}"
            rel = f"WAVE/SPEAKER{speaker}/{utt}{suffix}"
            audio[utt] = (
                rel,
                write_audio(root / rel, 0.05 + 0.01 * index, format="WAV"),
            )
    write_text(
        root / split / "wav.scp",
        "".join(f"{u}\t{rel}\n" for u, (rel, _) in audio.items()),
    )
    write_text(root / split / "utt2spk", "".join(f"{u} {u[:4]}\n" for u in audio))
    write_text(
        root / split / "spk2age", "".join(f"{s}\t{SPEAKERS[s][0]}\n" for s in speakers)
    )
    write_text(
        root / split / "spk2gender",
        "".join(f"{s}\t{SPEAKERS[s][1]}\n" for s in speakers),
    )
    return audio
