"""What moves DMHA's speaker EER and age errors under the CPU budget: one change at a time.

Trains DMHA through ``recipes/train.py`` on speechocean762 (the split and seed
of ``bench/quality.py``'s first seed) once per variant of the task chosen: the
YAML defaults changed as the row says. Variants are chosen on validation, never
on test: on the validation figures of the epoch the recipe tested (speakers:
EER; age: macro-F1 and MAE). Also shown: the test figures of that
checkpoint, the last epoch's training loss and the wall-clock.

    python bench/tune.py --task speaker [--epochs 8] [--jobs 2] [--only base lr1e-3 ...]
    python bench/tune.py --task age [--epochs 8] [--jobs 2]

``--jobs N`` trains N variants at once, each on cores / N threads (on a
small model, two single-thread runs get more done than one two-thread run;
minutes are then per run, side by side). Finished runs are reused, as in
``bench/quality.py``. The table goes to stdout and ``<out>/tune_<task>.md``.
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
    logged,
    publish_table,
    read_json,
    train,
)

# Each row names every setting it changes from today's YAML defaults. The VGG
# rows start from the original's front-end at the former default size (VGG4L
# k=128, 8 heads, 400-d) with BatchNorm and the warm-up + cosine schedule.
VGG = {"embedding": "dmha", "emb_dim": "400", "heads": "8", "lr": "0.0003"}
# The default model of 2026-11-25 spelled out (means-only pooling, 4 heads), at
# ECAPA-TDNN's 5 epochs. The defaults since (each head's std, 7 epochs, 2 heads for
# speakers) were chosen over three splits by bench/quality.py.
ECAPA_DMHA = {"embedding": "ecapa_dmha", "emb_dim": "192", "heads": "4", "lr": "0.001",
              "with_std": "False", "ecapa_channels": "[256,256,256,256,768]",
              "number_of_epochs": "5"}
VARIANTS = {
    "speaker": [
        ("base", "VGG4L k=128 + BatchNorm, 8 heads, lr 3e-4, 8 epochs", VGG),
        ("lr1e-3", "as base, peak lr 1e-3", {**VGG, "lr": "0.001"}),
        ("lr3e-3", "as base, peak lr 3e-3", {**VGG, "lr": "0.003"}),
        ("ecapa_dmha", "ECAPA-TDNN C=256 frames + Double MHA (4 heads), lr 1e-3, 5 epochs",
         ECAPA_DMHA),
        ("heads2", "as ecapa_dmha, 2 heads (384-d pooled)", {**ECAPA_DMHA, "heads": "2"}),
        ("epochs6", "as ecapa_dmha, 6 epochs (ECAPA-TDNN's 5 epochs' wall-clock then)",
         {**ECAPA_DMHA, "number_of_epochs": "6"}),
    ],
    "age": [
        ("lr1e-3", "VGG4L k=128 + BatchNorm, 8 heads, lr 1e-3, 8 epochs", {**VGG, "lr": "0.001"}),
        ("ecapa_dmha", "ECAPA-TDNN C=256 frames + Double MHA (4 heads), lr 1e-3, 5 epochs",
         ECAPA_DMHA),
    ],
}
# What a variant is chosen on, per task: (log key, table header, format).
VALIDATION = {
    "speaker": [("eer", "valid EER", "{:.2%}")],
    "age": [("macro_f1", "valid macro-F1", "{:.3f}"), ("mae_years", "valid MAE", "{:.2f}")],
}


def log_summary(folder, task):
    """Validation figures of the tested epoch, that epoch and the last training loss.

    The tested epoch is the one the recipe selected by the YAML's selection
    metric (the best validation EER for speakers; the last epoch for age,
    whose runs before 2026-11-25 kept the best validation macro-F1), read from
    the test line of ``train_log.txt``.
    """
    with open(os.path.join(folder, "train_log.txt")) as f:
        chosen = int(re.search(r"Epoch loaded: (\d+)", f.read()).group(1)) - 1
    figures = [logged(folder, f"valid {name}")[chosen] for name, _, _ in VALIDATION[task]]
    loss = logged(folder, "train loss")[-1]
    return figures, chosen + 1, loss


def main():
    data = os.environ.get("DMHA_DATA", os.path.join(REPO, "..", "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(VARIANTS), default="speaker")
    parser.add_argument("--data", default=data, help="DMHA_DATA folder")
    parser.add_argument("--epochs", type=int, default=8,
                        help="epochs of every run that does not set its own")
    parser.add_argument("--seed", type=int, default=1986, help="split and training seed")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these variants only")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "tune"))
    args = parser.parse_args()
    known = {name: (text, extra) for name, text, extra in VARIANTS[args.task]}
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
        settings = {"seed": args.seed, "number_of_epochs": args.epochs, **overrides}
        extra = [arg for key, value in settings.items() for arg in (f"--{key}", str(value))]
        run_name = f"{name}_{args.task}_{args.seed}_e{settings['number_of_epochs']}"
        folder = train(args.task, run_name, text, extra, args, threads=threads)
        figures, epoch, loss = log_summary(folder, args.task)
        valid = " | ".join(fmt.format(value) for value, (_, _, fmt)
                           in zip(figures, VALIDATION[args.task]))
        test = read_json(folder, "test_metrics.json")
        minutes = read_json(folder, "wall_clock.json")["seconds"] / 60
        if args.task == "age":
            tested = f"{test['macro_f1']:.3f} | {test['mae_years']:.2f}"
        else:
            cross = cross_corpus_eer(folder, root, trials,
                                     os.path.join(folder, "librispeech_scores.txt"))
            tested = f"{test['eer']:.2%} | {test['min_dcf']:.3f} | {cross:.2%}"
        return f"| {name} | {text} | {valid} (epoch {epoch}) | {tested} | {loss:.2f} | {minutes:.1f} |"

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, runs))
    valid_headers = [header for _, header, _ in VALIDATION[args.task]]
    test_headers = (["test macro-F1", "test MAE"] if args.task == "age"
                    else ["test EER", "test minDCF", "EER on LibriSpeech (unseen)"])
    headers = ["run", "what it trains", *valid_headers, *test_headers,
               "last train loss", "minutes"]
    publish_table(os.path.join(args.out, f"tune_{args.task}.md"), [
        f"Measured {datetime.date.today()} by `python bench/tune.py --task {args.task} "
        f"--epochs {args.epochs} --seed {args.seed} --jobs {args.jobs}` ({threads} CPU "
        f"thread(s) per run); DMHA {args.task} model, speechocean762, one split; "
        "test = held-out speakers, shown, never used to choose.",
        "",
        "| " + " | ".join(headers) + " |",
        "|---|---|" + "---:|" * (len(headers) - 2),
        *rows,
    ])


if __name__ == "__main__":
    main()
