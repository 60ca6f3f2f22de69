"""Benchmarks ``prepare_labels_file`` on many short generated audio files.

Generates ``--files`` distinct 0.1 s, 16 kHz, 16-bit WAV files (in parallel,
in a temporary folder, not timed), writes a labels file over them in the
original code's format (``path label -1``, paths without extension), then
times the whole preparation: reading the labels file, finding each file,
reading its header, checking, splitting and writing the manifest. Each
repeat writes to a fresh save folder, so none is skipped as unchanged. The
files were just written, so their headers are in the page cache: this
measures the preparer, not the disk.

Target: >= 10,000 files/s on 2 cores (VoxCeleb2's 1.1 M files in under two
minutes).

Usage::

    python bench/bench_prepare.py [--files 50000] [--repeats 3] [--jobs N]
"""

import argparse
import logging
import os
import shutil
import struct
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy

from dmha_modules.prepare import prepare_labels_file

SAMPLE_RATE = 16000
SAMPLES = 1600  # 0.1 s
SPEAKERS = 500


def _wav_header(samples):
    """A canonical 44-byte header of mono 16-bit PCM WAV at SAMPLE_RATE."""
    data_bytes = 2 * samples
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        SAMPLE_RATE,
        2 * SAMPLE_RATE,
        2,
        16,
        b"data",
        data_bytes,
    )


def _generate(task):
    """Writes files ``start..stop-1`` of the corpus with distinct noise."""
    folder, start, stop = task
    rng = numpy.random.default_rng(start)
    header = _wav_header(SAMPLES)
    for index in range(start, stop):
        speaker_dir = os.path.join(folder, f"spk{index % SPEAKERS:04d}")
        os.makedirs(speaker_dir, exist_ok=True)
        noise = rng.integers(-3000, 3000, SAMPLES, dtype=numpy.int16)
        with open(os.path.join(speaker_dir, f"utt{index:07d}.wav"), "wb") as output:
            output.write(header + noise.tobytes())


def generate_corpus(folder, files):
    """Writes ``files`` WAV files under ``folder`` and their labels file."""
    step = 2000
    tasks = [
        (folder, start, min(start + step, files)) for start in range(0, files, step)
    ]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_generate, tasks))
    labels = os.path.join(folder, "train_labels.txt")
    with open(labels, "w", encoding="utf-8") as output:
        for index in range(files):
            speaker = index % SPEAKERS
            output.write(f"spk{speaker:04d}/utt{index:07d} {speaker} -1\n")
    return labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None, help="header-reading processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    folder = tempfile.mkdtemp(prefix="dmha-bench-prepare-")
    try:
        start = time.perf_counter()
        labels = generate_corpus(folder, args.files)
        print(
            f"generated {args.files} files of {SAMPLES / SAMPLE_RATE:g} s in "
            f"{time.perf_counter() - start:.1f} s (not timed below); "
            f"{os.cpu_count()} cores"
        )
        rates = []
        for repeat in range(args.repeats):
            save_folder = os.path.join(folder, f"prepared{repeat}")
            start = time.perf_counter()
            outputs = prepare_labels_file(folder, save_folder, labels, jobs=args.jobs)
            elapsed = time.perf_counter() - start
            with open(outputs["train"], encoding="utf-8") as manifest:
                rows = sum(1 for _ in manifest) - 1
            assert rows == args.files, f"{rows} rows for {args.files} files"
            rates.append(args.files / elapsed)
            print(
                f"run {repeat + 1}: {args.files} files in {elapsed:.2f} s = "
                f"{rates[-1]:,.0f} files/s"
            )
        print(f"prepare_labels_file: best {max(rates):,.0f} files/s (target >= 10,000)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
