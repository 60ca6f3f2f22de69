"""What moves DMHA's speaker EER under the CPU budget: one change at a time.

Trains ``hparams/speaker.yaml``'s DMHA through ``recipes/train.py`` on
speechocean762 (the split and seed of ``bench/quality.py``) once per
variant below: the former YAML defaults (``START``) changed as its row says.
Reports the best validation EER (the variants are chosen on it), the test EER
and minDCF of that checkpoint, its EER on ``librispeech-test-other-10spk``
(as in ``bench/quality.py``), the last epoch's training loss and the
wall-clock.

    python bench/tune.py [--epochs 5] [--jobs 2] [--only base nomask ...]

``--jobs N`` trains N variants at once, each on cores / N threads (on a
small model, two single-thread runs get more done than one two-thread run;
minutes are then per run, side by side). Finished runs are reused, as in
``bench/quality.py``. The table goes to stdout and ``<out>/tune.md``.
"""

import argparse
import datetime
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import (  # noqa: E402
    REPO,
    cross_corpus_eer,
    librispeech_trials,
    publish_table,
    read_json,
    train,
)

# Every run starts from the YAML defaults as they were before this sweep
# (head drop 0.3, lr 1e-3; its outcome, no head drop and lr 3e-4, is today's
# default) and changes what its row says.
START = {"mask_prob": "0.3", "lr": "0.001"}
NO_HEAD_DROP = {"mask_prob": "0.0"}
VARIANTS = [
    ("base", "none (8 heads, head drop 0.3, m 0.4, lr 1e-3, 3.0 s crops, augmented)", {}),
    ("heads2", "2 heads (pooled size 320 instead of 80)", {"heads": "2"}),
    ("heads4", "4 heads (pooled size 160)", {"heads": "4"}),
    ("nomask", "no head drop", NO_HEAD_DROP),
    ("margin0.2", "AM-Softmax margin 0.2", {"margin": "0.2"}),
    ("lr3e-3", "lr 3e-3", {"lr": "0.003"}),
    ("crop3.5", "3.5 s crops (the paper's)", {"crop_seconds": "3.5"}),
    ("noaug", "no waveform augmentation", {"wav_augment": "null"}),
    # Second round: no head drop plus one more change (the longest run first).
    ("nomask+k256", "no head drop, front-end k=256 (1.40 M parameters, 4x the convolutions)",
     {**NO_HEAD_DROP, "channels": "256"}),
    ("nomask+noaug", "no head drop, no augmentation", {**NO_HEAD_DROP, "wav_augment": "null"}),
    ("nomask+crop3.5", "no head drop, 3.5 s crops", {**NO_HEAD_DROP, "crop_seconds": "3.5"}),
    ("nomask+lr3e-4", "no head drop, lr 3e-4 (today's defaults)", {**NO_HEAD_DROP, "lr": "0.0003"}),
    ("nomask+heads4", "no head drop, 4 heads", {**NO_HEAD_DROP, "heads": "4"}),
    ("nomask+crop3.5+noaug", "no head drop, 3.5 s crops, no augmentation",
     {**NO_HEAD_DROP, "crop_seconds": "3.5", "wav_augment": "null"}),
]


def log_summary(folder):
    """Best validation EER, its epoch, and the last training loss from ``train_log.txt``."""
    with open(os.path.join(folder, "train_log.txt")) as f:
        epochs = [line for line in f if line.startswith("epoch:")]
    eers = [float(re.search(r"valid eer: ([0-9.e+-]+)", line).group(1)) for line in epochs]
    loss = float(re.search(r"train loss: ([0-9.e+-]+)", epochs[-1]).group(1))
    best = min(range(len(eers)), key=eers.__getitem__)
    return eers[best], best + 1, loss


def main():
    data = os.environ.get("DMHA_DATA", os.path.join(REPO, "..", "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=data, help="DMHA_DATA folder")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these variants only")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "tune"))
    args = parser.parse_args()
    known = {name: (text, extra) for name, text, extra in VARIANTS}
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {list(known)}")
    runs = [(name, *known[name]) for name in args.only or known]
    os.makedirs(args.out, exist_ok=True)
    trials = os.path.join(args.out, "librispeech_trials.txt")
    root, _ = librispeech_trials(args.data, trials)
    threads = max(1, torch.get_num_threads() // args.jobs)

    def run(variant):
        name, text, overrides = variant
        extra = [arg for key, value in {**START, **overrides}.items()
                 for arg in (f"--{key}", value)]
        folder = train("speaker", name, text, extra, args, threads=threads)
        valid, epoch, loss = log_summary(folder)
        test = read_json(folder, "test_metrics.json")
        cross = cross_corpus_eer(folder, root, trials, os.path.join(folder, "librispeech_scores.txt"))
        minutes = read_json(folder, "wall_clock.json")["seconds"] / 60
        return (f"| {name} | {text} | {100 * valid:.2f} % (epoch {epoch}) | "
                f"{100 * test['eer']:.2f} % | {test['min_dcf']:.3f} | {100 * cross:.2f} % | "
                f"{loss:.2f} | {minutes:.1f} |")

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, runs))
    publish_table(os.path.join(args.out, "tune.md"), [
        f"Measured {datetime.date.today()} by `python bench/tune.py --epochs {args.epochs} "
        f"--jobs {args.jobs}` ({threads} CPU thread(s) per run); DMHA speaker model, "
        "speechocean762, same split and seed; test = held-out speakers.",
        "",
        "| run | change from head drop 0.3, lr 1e-3 | best valid EER | test EER | test minDCF | "
        "EER on LibriSpeech (unseen) | last train loss | minutes |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


if __name__ == "__main__":
    main()
