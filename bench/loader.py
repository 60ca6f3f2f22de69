"""Training crops per second of the recipe's own data pipeline, per format and worker count.

Builds a VoxCeleb-shaped tree (``id*/video/NNNNN.{wav,flac,m4a}``) in a
temporary folder from real speech (speechocean762 under ``DMHA_DATA``: each
speaker's utterances joined and cut into ``--seconds`` pieces, VoxCeleb2's
mean utterance being 7.8 s), one tree per format, the same audio in each
(WAV 16-bit, FLAC, AAC at FFmpeg's default bit rate through PyAV). Then,
for each format and worker count, it runs what ``recipes/train.py`` trains
from: the train dataset of :func:`dmha_modules.recipe.datasets.dataio_prep`
(header, random ``--crop_seconds`` crop, decode, resampling when needed)
in SpeechBrain's ``make_dataloader`` (``PaddedBatch`` collation), batches
of ``--batch_size`` drawn with replacement. Features and augmentation are
not in the loader: the recipe computes them in ``compute_forward``, on the
training device.

Each row: crops per second of wall time (after a first batch that pays for
starting the workers), and crops per CPU-second of the processes that did
the loading (the workers' when there are any, measured with ``getrusage``
after they exit; the main process's with 0 workers), which is what one
worker delivers on a core of its own, whatever else the machine runs. The
projection for ``--target`` crops/s divides by that per-worker rate.

A second table times one file at a time, in process, in CPU time: the
header (``audio_info``), the whole file decoded (``read_audio``: libsndfile
for WAV and FLAC, PyAV for AAC), the header and a crop; and in wall time
the header and a crop with the file evicted from the page cache first
(``posix_fadvise DONTNEED``): the cost of a cold open on this machine's disk.

Usage::

    python bench/loader.py [--files 256] [--workers 0,1,2] [--formats wav,flac,m4a]
"""

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy
import soundfile
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dmha_modules.io.audio import audio_info, read_audio  # noqa: E402
from dmha_modules.nn.features import LogMelFeatures  # noqa: E402
from dmha_modules.recipe.datasets import dataio_prep  # noqa: E402
from tests.audio_helpers import write_m4a  # noqa: E402

RATE = 16000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_data = os.environ.get(
        "DMHA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument("--files", type=int, default=256, help="utterances per format")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each utterance")
    parser.add_argument("--crop_seconds", type=float, default=3.5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per row")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--formats", default="wav,flac,m4a")
    parser.add_argument("--target", type=float, default=1000.0, help="crops/s to feed")
    parser.add_argument("--folder", type=Path, default=None, help="keep the trees here")
    return parser.parse_args(argv)


def speech_pieces(data, count, seconds):
    """``count`` pieces of ``seconds`` of speechocean762, as (speaker, float32 samples)."""
    root = data / "speechocean762" / "WAVE"
    if not root.is_dir():
        sys.exit(f"loader.py: no speechocean762 at {root} (set DMHA_DATA)")
    length = int(seconds * RATE)
    pieces = []
    for speaker in sorted(root.iterdir()):
        joined = numpy.concatenate([
            soundfile.read(path, dtype="float32")[0] for path in sorted(speaker.glob("*.flac"))
        ])
        for start in range(0, len(joined) - length + 1, length):
            pieces.append((speaker.name, joined[start : start + length]))
            if len(pieces) == count:
                return pieces
    return pieces


def write_tree(folder, pieces, extension):
    """Writes the VoxCeleb-shaped tree of ``pieces`` and its manifests; returns their folder."""
    rows = []
    for index, (speaker, samples) in enumerate(pieces):
        rel = f"id{int(speaker[-4:]):05d}/vid{index // 4:04d}/{index % 4 + 1:05d}.{extension}"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if extension == "m4a":
            write_m4a(path, samples, RATE)
        else:
            soundfile.write(path, samples, RATE, subtype="PCM_16")
        rows.append((rel.replace("/", "--"), len(samples) / RATE, f"$data_root/{rel}",
                     rel.split("/")[0]))
    manifests = folder / "manifests"
    manifests.mkdir()
    for split in ("train", "valid"):
        with open(manifests / f"{split}.csv", "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["ID", "duration", "wav", "spk_id"])
            writer.writerows(rows)
    return manifests


def train_dataset(folder, manifests, crop_seconds):
    """The recipe's train dataset over the tree (``dataio_prep``, waveform input)."""
    hparams = dict(manifest_folder=str(manifests), data_folder=str(folder), task="speaker",
                   crop_seconds=crop_seconds, sample_rate=RATE, precomputed_features=False)
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(sorted({p.name for p in folder.iterdir() if p.is_dir()
                                         and p.name.startswith("id")}))
    encoders = dict.fromkeys(("train", "valid", "test"), encoder)
    return dataio_prep(hparams, encoders, ("label",))["train"]


def crops_per_second(dataset, workers, batch_size, batches, crop_seconds):
    """(crops/s of wall time, crops per CPU-second of the loading processes)."""
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=batch_size * (batches + 1),
        generator=torch.Generator().manual_seed(0))
    loader = sb.dataio.dataloader.make_dataloader(
        dataset, batch_size=batch_size, num_workers=workers, sampler=sampler)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = time.process_time()
    iterator = iter(loader)
    first = next(iterator)  # starts the workers
    assert first.sig[0].shape == (batch_size, int(crop_seconds * RATE))
    start = time.perf_counter()
    count = sum(len(batch.sig[0]) for batch in iterator)
    wall = time.perf_counter() - start
    del iterator  # the workers exit and are waited for
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
           if workers else time.process_time() - own)
    return count / wall, batch_size * (batches + 1) / cpu


def features_per_cpu_second(batch_size, crop_seconds, repeats=5):
    """Crops per CPU-second of the paper recipe's log-mel features (80 mels, original framing).

    Not part of the loader: the recipe computes them in ``compute_forward``,
    on the training device. Timed here on one CPU thread, for a CPU-only run.
    """
    features = LogMelFeatures(sample_rate=RATE, n_mels=80, framing="original")
    wavs = 0.1 * torch.randn(batch_size, int(crop_seconds * RATE))
    with torch.inference_mode():
        features(wavs)
        start = time.process_time()
        for _ in range(repeats):
            features(wavs)
    return batch_size * repeats / (time.process_time() - start)


def evicted(path):
    """Drops ``path`` from the page cache (only this file; nothing else is touched)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def per_file_costs(paths, crop_seconds):
    """Median milliseconds per file, in process: CPU time warm, wall time cold (evicted first)."""
    crop = int(crop_seconds * RATE)

    def header_and_crop(path):
        info = audio_info(path)
        begin = int(torch.randint(0, info.frames - crop + 1, ()).item())
        read_audio(path, RATE, begin, begin + crop)

    steps = {"header": audio_info, "whole decode": read_audio, "header + crop": header_and_crop}
    times = {name: [] for name in [*steps, "cold header + crop"]}
    for path in paths:
        for name, step in steps.items():
            start = time.process_time()
            step(path)
            times[name].append(time.process_time() - start)
        evicted(path)
        start = time.perf_counter()
        header_and_crop(path)
        times["cold header + crop"].append(time.perf_counter() - start)
    return {name: 1000 * numpy.median(values) for name, values in times.items()}


def main(argv=None):
    args = parse_args(argv)
    # As in a DataLoader worker; the main process's default threads make the
    # in-process row collapse on a busy machine (collation with two OpenMP threads).
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]
    formats = args.formats.split(",")
    pieces = speech_pieces(args.data, args.files, args.seconds)
    with tempfile.TemporaryDirectory(dir=args.folder) as temporary:
        print(f"# {len(pieces)} utterances of {args.seconds:g} s per format, crops of "
              f"{args.crop_seconds:g} s, batch {args.batch_size}, {args.batches} timed batches; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
        results, costs = {}, {}
        for extension in formats:
            folder = Path(temporary) / extension
            manifests = write_tree(folder, pieces, extension)
            dataset = train_dataset(folder, manifests, args.crop_seconds)
            paths = sorted(folder.rglob(f"*.{extension}"))
            costs[extension] = per_file_costs(paths[:64], args.crop_seconds)
            size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
            for count in workers:
                results[extension, count] = crops_per_second(
                    dataset, count, args.batch_size, args.batches, args.crop_seconds)
            costs[extension]["KiB"] = size
        print_tables(results, costs, formats, workers, args.target)
        rate = features_per_cpu_second(args.batch_size, args.crop_seconds)
        print(f"\nlog-mel features (on the training device in the recipe, not in the loader): "
              f"{rate:,.0f} crops per CPU-second on one thread")
        print(f"# load {os.getloadavg()[0]:.2f} at the end")


def print_tables(results, costs, formats, workers, target):
    print("\n| format | workers | crops/s (wall) | crops per worker CPU-second |"
          f" workers for {target:,.0f} crops/s |")
    print("|---|---|---|---|---|")
    for extension in formats:
        for count in workers:
            wall, per_cpu = results[extension, count]
            print(f"| {extension} | {count} | {wall:,.0f} | {per_cpu:,.0f} |"
                  f" {int(numpy.ceil(target / per_cpu))} |")
    print("\n| format | KiB per file | header (CPU ms) | whole decode (CPU ms) |"
          " header + crop (CPU ms) | cold header + crop (wall ms) |")
    print("|---|---|---|---|---|---|")
    for extension in formats:
        cost = costs[extension]
        print(f"| {extension} | {cost['KiB']:.0f} | {cost['header']:.3f} |"
              f" {cost['whole decode']:.2f} | {cost['header + crop']:.2f} |"
              f" {cost['cold header + crop']:.2f} |")


if __name__ == "__main__":
    main()
