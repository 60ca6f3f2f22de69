"""VoxCeleb2-size bookkeeping: preparation and the recipe's start-up at 10 %, 30 % and 100 %.

Writes a tree in VoxCeleb2 dev's layout (``vox2/dev/aac/id*/VIDEO/NNNNN.m4a``)
of ``--utterances`` files (default 1,092,009, as VoxCeleb2 dev) over
``--speakers`` speakers (5,994) and about 7.5 utterances per video, each file
a real AAC ``.m4a`` (silence, made once per duration with PyAV's encoder and
copied; 4 to 20 s, so the durations the preparation reads vary). The smaller
shares are the first speakers of the same tree, linked (one symbolic link
per speaker folder) into a folder of their own. Generation is not timed.

For each share, in a fresh child process each (so that its peak RSS is its
own, read with ``os.wait4``):

- ``prepare``: ``prepare_voxceleb`` of the tree, as ``dmha prepare voxceleb``
  and the recipe run it (listing, header reads in ``--jobs`` processes, split,
  manifests);
- ``startup``: what ``recipes/train.py`` does with those manifests before
  its first batch, with the recipe's own functions: ``load_hparams`` of
  ``hparams/voxceleb_dmha_paper.yaml`` (a small model: the model's size does
  not grow with the data), ``check_manifests``, ``make_label_encoder`` for
  each split, ``dataio_prep`` and ``bucketed_loader_kwargs`` (SpeechBrain's
  ``DynamicBatchSampler``) with the training batches drawn once;
- ``csv``: SpeechBrain's ``load_data_csv`` of the training manifest alone
  (what the start-up reads each manifest with), three times, the best kept:
  its cost per row says whether the start-up grows faster than the data.

The files were just written, so their headers are in the page cache: this
measures the bookkeeping, not the disk. Prints one table (Markdown) with the
ratios to the 10 % row; linear growth gives about 3 and 10.

Usage::

    python bench/bench_voxceleb_prepare.py [--utterances 1092009] [--speakers 5994]
        [--shares 0.1,0.3,1] [--folder /tmp] [--jobs N] [--keep]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATIONS = (4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0, 10.0, 11.0, 12.0, 14.0, 16.0, 20.0)
PER_VIDEO = 7.5  # VoxCeleb2 dev: 1,092,009 utterances of 145,569 videos


def _template(seconds, rate=16000):
    """The bytes of a real AAC ``.m4a`` of ``seconds`` of silence (PyAV's encoder)."""
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = 16000
        samples = np.zeros((1, int(seconds * rate)), np.float32)
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start:start + 1024]), "fltp", "mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def speaker_counts(utterances, speakers):
    """Utterances per speaker: as even as the totals allow, summing to ``utterances``."""
    counts = np.full(speakers, utterances // speakers)
    counts[: utterances % speakers] += 1
    return counts


def _write_speakers(task):
    """Writes the files of speakers ``first..last-1``; returns how many files."""
    root, first, counts, templates = task
    written = 0
    for offset, count in enumerate(counts):
        speaker = first + offset
        folder = os.path.join(root, f"id{speaker:05d}")
        videos = max(1, round(count / PER_VIDEO))
        for index in range(count):
            video = os.path.join(folder, f"v{speaker:05d}_{index % videos:04d}")
            if index < videos:
                os.makedirs(video)
            data = templates[(speaker * 7 + index) % len(templates)]
            with open(os.path.join(video, f"{index // videos + 1:05d}.m4a"), "wb") as out:
                out.write(data)
            written += 1
    return written


def generate_tree(folder, utterances, speakers):
    """Writes the full tree under ``folder/full/vox2/dev/aac``; returns that speaker root."""
    root = os.path.join(folder, "full", "vox2", "dev", "aac")
    os.makedirs(root)
    templates = [_template(seconds) for seconds in DURATIONS]
    counts = speaker_counts(utterances, speakers)
    step = 100
    tasks = [(root, first, counts[first:first + step].tolist(), templates)
             for first in range(0, speakers, step)]
    with ProcessPoolExecutor() as pool:
        assert sum(pool.map(_write_speakers, tasks)) == utterances
    return root


def share_tree(folder, root, share, speakers):
    """A data folder holding the first ``share`` of the speakers (links to their folders)."""
    if share == 1:
        return os.path.join(folder, "full")
    data = os.path.join(folder, f"share{share:g}")
    target = os.path.join(data, "vox2", "dev", "aac")
    os.makedirs(target)
    for speaker in range(round(share * speakers)):
        name = f"id{speaker:05d}"
        os.symlink(os.path.join(root, name), os.path.join(target, name))
    return data


def child_prepare(data_folder, save_folder, jobs):
    """The child's work for ``prepare``; returns what it measured."""
    from dmha_modules.prepare import prepare_voxceleb

    start = time.perf_counter()
    outputs = prepare_voxceleb(data_folder, save_folder, valid_ratio=0.02, test_ratio=0.01,
                               jobs=jobs)
    seconds = time.perf_counter() - start
    with open(outputs["train"], encoding="utf-8") as manifest:
        rows = sum(1 for _ in manifest) - 1
    return {"seconds": seconds, "train_rows": rows}


def child_startup(data_folder, manifest_folder, output_folder):
    """The child's work for ``startup``: the recipe's steps before its first batch."""
    sys.path.insert(0, os.path.join(REPO, "recipes"))
    import resource

    from train import load_hparams

    from dmha_modules.recipe.build import make_label_encoder
    from dmha_modules.recipe.datasets import SPLITS, dataio_prep
    from dmha_modules.recipe.inputs import check_manifests
    from dmha_modules.recipe.training import bucketed_loader_kwargs

    overrides = {"data_folder": data_folder, "output_folder": output_folder,
                 "manifest_folder": manifest_folder, "trials_file": None,
                 "channels": 16, "heads": 4, "emb_dim": 32, "num_workers": 0}
    hparams = load_hparams(os.path.join(REPO, "hparams", "voxceleb_dmha_paper.yaml"),
                           overrides)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = {}
    start = time.perf_counter()
    check_manifests(hparams, manifest_folder)
    steps["check_manifests"] = time.perf_counter() - start
    mark = time.perf_counter()
    encoders = {split: make_label_encoder(hparams, split) for split in SPLITS}
    steps["label_encoders"] = time.perf_counter() - mark
    mark = time.perf_counter()
    datasets = dataio_prep(hparams, encoders, ("label",))
    steps["dataio_prep"] = time.perf_counter() - mark
    mark = time.perf_counter()
    loader = bucketed_loader_kwargs(hparams, datasets["train"], train=True)
    batches = list(iter(loader["batch_sampler"]))
    steps["sampler"] = time.perf_counter() - mark
    return {"seconds": time.perf_counter() - start, "steps": steps,
            "rss_after_load_mb": before / 1024, "batches": len(batches),
            "speakers": len(encoders["train"])}


def child_csv(manifest_folder):
    """The child's work for ``csv``: the best of three reads of ``train.csv``, per row."""
    from speechbrain.dataio.dataio import load_data_csv

    times = []
    for _ in range(3):
        start = time.perf_counter()
        rows = len(load_data_csv(os.path.join(manifest_folder, "train.csv"),
                                 replacements={"data_root": "/data"}))
        times.append(time.perf_counter() - start)
    return {"rows": rows, "us_per_row": 1e6 * min(times) / rows}


def run_child(*args):
    """Runs this script as a child; returns its JSON result and its peak RSS (MB)."""
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *args],
                               stdout=subprocess.PIPE, cwd=REPO)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with status {process.returncode}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    # ru_maxrss (KB) of the child and of the processes it waited for: the largest one.
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def measure(folder, root, shares, speakers, utterances, jobs):
    """Prepares each share and starts the recipe on it; one row per share."""
    rows = []
    for share in shares:
        data = share_tree(folder, root, share, speakers)
        save = os.path.join(folder, f"prepared{share:g}")
        prepared = run_child("prepare", data, save, str(jobs or 0))
        startup = run_child("startup", data, save, os.path.join(folder, f"out{share:g}"))
        startup["csv"] = run_child("csv", save)
        count = int(speaker_counts(utterances, speakers)[: round(share * speakers)].sum())
        rows.append({"share": share, "utterances": count, "prepare": prepared,
                     "startup": startup})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows):
    """The Markdown table, with ratios to the first row."""
    first = rows[0]
    print("| share | utterances | prepare s | prepare peak RSS MB | start-up s "
          "| start-up peak RSS MB (after loading) | ratios to the first row: utt., prepare s, "
          "prepare RSS, start-up s, start-up RSS growth |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        prepare, startup = row["prepare"], row["startup"]
        growth = startup["peak_rss_mb"] - startup["rss_after_load_mb"]
        first_growth = first["startup"]["peak_rss_mb"] - first["startup"]["rss_after_load_mb"]
        ratios = [row["utterances"] / first["utterances"],
                  prepare["seconds"] / first["prepare"]["seconds"],
                  prepare["peak_rss_mb"] / first["prepare"]["peak_rss_mb"],
                  startup["seconds"] / first["startup"]["seconds"],
                  growth / max(first_growth, 1e-9)]
        print(f"| {row['share']:g} | {row['utterances']:,} | {prepare['seconds']:.1f} "
              f"| {prepare['peak_rss_mb']:.0f} | {startup['seconds']:.1f} "
              f"| {startup['peak_rss_mb']:.0f} ({startup['rss_after_load_mb']:.0f}) | "
              + ", ".join(f"{ratio:.2f}" for ratio in ratios) + " |")
    for row in rows:
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds
                          in row["startup"]["steps"].items())
        print(f"start-up steps at {row['share']:g}: {steps}; "
              f"{row['startup']['batches']:,} training batches; load_data_csv of train.csv "
              f"{row['startup']['csv']['us_per_row']:.1f} us/row (best of 3)")


def child_main(argv):
    """``--child``: ``prepare DATA SAVE JOBS``, ``startup DATA MANIFESTS OUT``, ``csv M``"""
    import logging

    logging.basicConfig(level=logging.WARNING)
    kind, *args = argv
    if kind == "prepare":
        result = child_prepare(args[0], args[1], int(args[2]) or None)
    elif kind == "csv":
        result = child_csv(args[0])
    else:
        result = child_startup(*args)
    print(json.dumps(result), flush=True)


def main():
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=1092009)
    parser.add_argument("--speakers", type=int, default=5994)
    parser.add_argument("--shares", default="0.1,0.3,1")
    parser.add_argument("--folder", default=tempfile.gettempdir(),
                        help="where the tree is written (and removed after)")
    parser.add_argument("--jobs", type=int, default=None, help="header-reading processes")
    parser.add_argument("--keep", action="store_true", help="keep the tree")
    args = parser.parse_args()
    shares = [float(share) for share in args.shares.split(",")]
    folder = tempfile.mkdtemp(prefix="dmha-bench-voxceleb-", dir=args.folder)
    try:
        start = time.perf_counter()
        root = generate_tree(folder, args.utterances, args.speakers)
        print(f"generated {args.utterances:,} .m4a files of {args.speakers:,} speakers in "
              f"{time.perf_counter() - start:.0f} s (not timed below); {os.cpu_count()} cores; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        rows = measure(folder, root, shares, args.speakers, args.utterances, args.jobs)
        print_table(rows)
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
