"""How good: DMHA vs SpeechBrain's ECAPA-TDNN at equal training budget, over several splits.

Each model is trained by ``recipes/train.py`` on speechocean762 once per split
seed (``--seeds``; the seed draws the speaker-disjoint train / valid / test
split and the training's randomness): with ``hparams/speaker.yaml`` for
verification and ``hparams/age.yaml`` for age. Equal budget means equal
wall-clock: each model trains the number of epochs that fills the same minutes
on the same machine (``MODELS``; the table shows the minutes measured).
Reported per model as mean and spread (sample standard deviation, and the
range) over the splits, on the held-out test speakers of each: speaker EER and
minDCF (p_target 0.01), age macro-F1, balanced accuracy and MAE in years;
cross-corpus, the EER of each speaker model on every pair of
``librispeech-test-other-10spk`` (never trained on), scored by ``dmha score``;
training minutes and parameters. The zero-training floors come from the first
split's manifests. How stable the age model is, apart from which speakers a
split tests on: ``--training_seeds S ...`` trains the default DMHA age model
again on the first split (``--split_seed``) with other training seeds, and
``--thread_check N`` on N threads (the table's runs use cores / jobs each),
as thread count changes the arithmetic; the spread of their test MAE is
printed. Each model's difference to ECAPA-TDNN is also shown split by split
(paired: the same test speakers on both sides), with the number of splits it
wins. The paper-size DMHA (VGG4L k=1024, 16 heads) is trained only where a
GPU is present; otherwise its row says skipped. ``--models resemblyzer`` adds the external
reference, a pretrained speaker encoder measured on the same splits without training
(``bench/reference_encoder.py``, which says how to install it); alone, it trains nothing.

    python bench/quality.py [--seeds 1986 7 42] [--jobs 2] [--training_seeds 1 2]
        [--thread_check 2] [--models dmha ecapa resemblyzer ...] [--out results/quality]

``--precisions fp32 int8 bf16`` measures instead how the default DMHA speaker
model of each split fares in int8 and bf16 against fp32 (test EER, minDCF,
cosine to fp32; ``bench/precision_quality.py``), training only those runs;
``--epochs N`` overrides the models' epochs (economical runs, named ``_eN``).

Runs that finished are reused (each writes ``test_metrics.json`` and
``wall_clock.json``); an interrupted one resumes from its checkpoint, its
wall-clock then covering only the last attempt. The tables go to stdout and
``<out>/quality.md``, the training curves (loss and validation metric per
epoch, per model and split) to ``<out>/curves.png``.
"""

import argparse
import datetime
import itertools
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from matplotlib.figure import Figure

import precision_quality  # bench/, beside this script
import reference_encoder
from dmha_modules.io.atomic import write_atomic
from dmha_modules.io.plots import save_png
from dmha_modules.recipe.build import read_manifest
from dmha_modules.scoring.metrics import classification_metrics, verification_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (run name, table row, recipe overrides, epochs, needs a GPU); overrides are a
# list for both tasks or a dict of lists by task. The CPU models run ECAPA-TDNN's
# frame layers at C=256 (the YAMLs' ecapa_channels) and differ only in the
# pooling. Double MHA pooling is the cheaper, so DMHA gets the 7 epochs that fit
# ECAPA-TDNN's 5 epochs' wall-clock (README, three splits: 14.2 + 13.6 minutes
# against 14.1 + 16.0); the table's minutes column shows the wall-clock measured.
MODELS = [
    ("dmha", "DMHA (YAML defaults: ECAPA-TDNN C=256 frames + Double MHA pooling of each "
     "head's attentive mean and std; 2 heads for speakers, 4 for age)", [], 7, False),
    ("dmha_heads", "DMHA with the other head count (speakers --heads 4, age --heads 2)",
     {"speaker": ["--heads", "4"], "age": ["--heads", "2"]}, 7, False),
    ("dmha_mean", "DMHA, the paper's mean-only pooling (--with_std False)",
     ["--with_std", "False"], 6, False),
    ("ecapa", "ECAPA-TDNN (C=256, attentive statistics pooling)", ["--embedding", "ecapa"], 5, False),
    ("dmha_paper", "DMHA paper size (VGG4L k=1024, 16 heads, head drop 0.3)",
     ["--embedding", "dmha", "--emb_dim", "400", "--channels", "1024", "--heads", "16",
      "--mask_prob", "0.3", "--batch_norm", "False", "--lr", "0.0001"], 15, True),
]
TASKS = ("speaker", "age")
# Table columns: (header, task, metric key, format, scale).
COLUMNS = [
    ("speaker EER", "speaker", "eer", "{:.2f} %", 100),
    ("minDCF", "speaker", "min_dcf", "{:.3f}", 1),
    ("EER on LibriSpeech (unseen)", "speaker", "librispeech_eer", "{:.2f} %", 100),
    ("age macro-F1", "age", "macro_f1", "{:.3f}", 1),
    ("balanced acc.", "age", "balanced_accuracy", "{:.3f}", 1),
    ("MAE (years)", "age", "mae_years", "{:.2f}", 1),
]

# The validation figures the recipe logs per epoch, same layout.
VALIDATION = [column for column in COLUMNS
              if column[2] in ("eer", "min_dcf", "macro_f1", "mae_years")]


def train(task, run, name, extra, args, threads=None):
    """Runs the recipe with ``extra`` options into ``<out>/<run>`` (or reuses a finished
    run) on ``threads`` CPU threads (default: torch's); returns its output folder."""
    output = os.path.join(args.out, run)
    timing = os.path.join(output, "wall_clock.json")
    if os.path.exists(timing) and os.path.exists(os.path.join(output, "test_metrics.json")):
        return output
    command = [sys.executable, os.path.join(REPO, "recipes", "train.py"),
               os.path.join(REPO, "hparams", f"{task}.yaml"),
               "--data_folder", os.path.join(args.data, "speechocean762"),
               "--output_folder", output, "--noprogressbar"]
    print(f"[{datetime.datetime.now():%H:%M:%S}] training {name}, {task} ({run})", flush=True)
    start = time.perf_counter()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    subprocess.run(command + extra, check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    seconds = time.perf_counter() - start
    write_atomic(timing, lambda f: json.dump({"seconds": seconds}, f))
    return output


def read_json(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def parameters(folder):
    """Parameters of the embedding model of a model folder."""
    state = torch.load(os.path.join(folder, "model", "embedding_model.ckpt"), weights_only=True)
    return sum(v.numel() for k, v in state.items() if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))


def librispeech_trials(data, path):
    """Every pair of the LibriSpeech files, VoxCeleb format; returns the labels."""
    root = os.path.join(data, "librispeech-test-other-10spk")
    files = sorted(os.path.relpath(os.path.join(folder, name), root)
                   for folder, _, names in os.walk(root) for name in names
                   if name.endswith(".flac"))
    pairs = [(int(a.split(os.sep)[0] == b.split(os.sep)[0]), a, b)
             for a, b in itertools.combinations(files, 2)]
    write_atomic(path, lambda f: f.writelines(f"{same} {a} {b}\n" for same, a, b in pairs))
    return root, np.array([same for same, _, _ in pairs])


def cross_corpus_eer(speaker_run, root, trials, out):
    """EER of a speaker model folder on the LibriSpeech trials, via ``dmha score``."""
    result = subprocess.run(
        [sys.executable, "-m", "dmha_modules.cli", "score", "--model",
         os.path.join(speaker_run, "model"), "--trials", trials, "--data_root", root,
         "--out", out, "--no_progress"],
        check=True, capture_output=True, text=True,
    )
    line = [line for line in result.stdout.splitlines() if line.startswith("EER")][0]
    return float(line.split()[1].rstrip("%")) / 100


def age_floors(age_run, data_folder):
    """Majority-group and mean-age floors from an age run's manifests."""
    run = {"manifest_folder": os.path.join(age_run, "manifests"), "data_folder": data_folder}
    train, test = (list(read_manifest(run, split).values()) for split in ("train", "test"))
    groups = sorted({row["age_group"] for row in train + test})
    index = {g: i for i, g in enumerate(groups)}
    majority = max(groups, key=[row["age_group"] for row in train].count)
    target = [index[row["age_group"]] for row in test]
    metrics = classification_metrics([index[majority]] * len(test), target, len(groups))
    mean_age = np.mean([float(row["age"]) for row in train])
    mae = float(np.mean([abs(float(row["age"]) - mean_age) for row in test]))
    return majority, metrics, mean_age, mae


def publish_table(path, lines):
    """Writes a Markdown table to ``path`` and prints it."""
    table = "\n".join(lines)
    write_atomic(path, lambda f: f.write(table + "\n"))
    print("\n" + table)


def mean_and_spread(values, fmt, scale, signed=False):
    """``mean ± sd (min–max)`` of a metric over the splits, in the column's format;
    ``signed`` (differences): ``+mean ± sd (min to max)``, each with its sign."""
    values = scale * np.asarray(values, dtype=float)
    fmt = fmt.replace("{:", "{:+") if signed else fmt
    number = fmt.replace(" %", "")
    spread = number.replace("{:+", "{:").format(values.std(ddof=1)) if len(values) > 1 else "–"
    between = " to " if signed else "–"
    return (f"{fmt.format(values.mean())} ± {spread} "
            f"({number.format(values.min())}{between}{number.format(values.max())})")


def logged(folder, name):
    """One figure per epoch from a run's ``train_log.txt``: ``name`` is e.g.
    ``"train loss"`` or ``"valid eer"``."""
    with open(os.path.join(folder, "train_log.txt")) as f:
        lines = [line for line in f if line.startswith("epoch:")]
    return [float(re.search(rf"{name}: ([0-9.e+-]+)", line).group(1)) for line in lines]


def tested_epoch_figure(folder, name):
    """``name`` (e.g. ``"valid eer"``) at the epoch the run tested ("Epoch loaded")."""
    with open(os.path.join(folder, "train_log.txt")) as f:
        epoch = int(re.search(r"Epoch loaded: (\d+)", f.read()).group(1))
    return logged(folder, name)[epoch - 1]


def validation_rows(args, folders):
    """Each model's validation figures at its tested epoch, mean ± sd over the splits:
    what a choice between models may rest on (the test columns may not). Markdown lines."""
    lines = ["Validation speakers of each split, at the epoch each run tested (model choices "
             "rest on these, not on the test columns):", "",
             "| model | " + " | ".join(f"valid {header}" for header, *_ in VALIDATION) + " |",
             "|---|" + "---:|" * len(VALIDATION)]
    for slug, name, *_ in args.rows:
        if (slug, "speaker", args.seeds[0]) in folders:
            cells = [mean_and_spread([tested_epoch_figure(folders[slug, task, seed], f"valid {key}")
                                      for seed in args.seeds], fmt, scale)
                     for _, task, key, fmt, scale in VALIDATION]
            lines.append(f"| {slug} | {' | '.join(cells)} |")
    return lines


def epoch_curves(folder):
    """Training loss and the selection metric per epoch, from a run's ``train_log.txt``."""
    with open(os.path.join(folder, "train_log.txt")) as f:
        key = "eer" if "valid eer:" in f.read() else "macro_f1"
    return key, logged(folder, "train loss"), logged(folder, f"valid {key}")


def plot_curves(folders, path):
    """Training loss and validation metric per epoch: a panel per task and measure,
    a colour per model, a line per split."""
    figure = Figure(figsize=(11, 7.5))
    axes = figure.subplots(2, 2)
    colours = dict(zip(sorted({slug for slug, _, _ in folders}), ["C0", "C3", "C2", "C1", "C4"]))
    for (slug, task, seed), folder in sorted(folders.items()):
        key, loss, metric = epoch_curves(folder)
        column = TASKS.index(task)
        epochs = range(1, len(loss) + 1)
        label = slug if seed == min(s for _, _, s in folders) else None
        axes[0, column].plot(epochs, loss, colours[slug], alpha=0.7, label=label)
        axes[1, column].plot(epochs, metric, colours[slug], alpha=0.7, label=label)
        axes[0, column].set_title(f"{task}: training loss")
        axes[1, column].set_title(f"{task}: validation {key.replace('_', '-')}")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle("One line per split seed (training minutes: see the table)")
    figure.tight_layout()
    save_png(figure, path)


def overrides(extra, task):
    """A MODELS row's recipe overrides for ``task``."""
    return extra[task] if isinstance(extra, dict) else extra


def train_all(args, threads):
    """Trains (or reuses) every run; returns ``(slug, task, seed) -> output folder``."""
    runs = [(slug, name, extra, args.epochs or epochs, task, seed)
            for seed in args.seeds for task in args.tasks
            for slug, name, extra, epochs, needs_gpu in args.rows
            if torch.cuda.is_available() or not needs_gpu]

    def run(spec):
        slug, name, extra, epochs, task, seed = spec
        options = overrides(extra, task) + ["--seed", str(seed), "--number_of_epochs",
                                            str(epochs)]
        return train(task, f"{slug}_{task}_{seed}_e{epochs}", name, options, args,
                     threads=threads)

    # Queued model by model within each task and split, so the runs side by
    # side are mostly the two models of one split: what else the machine does
    # slows both.
    with ThreadPoolExecutor(args.jobs) as pool:
        folders = list(pool.map(run, runs))
    return {(slug, task, seed): folder
            for (slug, _, _, _, task, seed), folder in zip(runs, folders)}


def run_figures(folder, task, root, trials):
    """A run's test metrics (with the LibriSpeech EER for speakers) and minutes."""
    metrics = read_json(folder, "test_metrics.json")
    if task == "speaker":
        metrics["librispeech_eer"] = cross_corpus_eer(
            folder, root, trials, os.path.join(folder, "librispeech_scores.txt"))
    metrics["minutes"] = read_json(folder, "wall_clock.json")["seconds"] / 60
    return metrics


def stability(args, folders):
    """Test figures of the default DMHA age model on the first split, trained again with
    other ``--training_seeds`` and on ``--thread_check`` threads: how much training alone
    moves them on the same test speakers. Markdown lines."""
    split = args.seeds[0]
    slug, name, extra, epochs, _ = args.rows[0]
    base = overrides(extra, "age") + ["--split_seed", str(split), "--number_of_epochs",
                                      str(epochs)]
    runs = [(split, None, folders[slug, "age", split])]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs += list(pool.map(lambda seed: (seed, None, train(
            "age", f"{slug}_age_{split}_e{epochs}_train{seed}", name,
            base + ["--seed", str(seed)], args, threads=args.threads)), args.training_seeds))
    if args.thread_check:
        runs.append((split, args.thread_check, train(
            "age", f"{slug}_age_{split}_e{epochs}_threads{args.thread_check}", name,
            base + ["--seed", str(split)], args, threads=args.thread_check)))
    lines = [f"Training alone (DMHA age, split {split}: the same test speakers; the first row "
             "is the table's run):", "",
             "| training seed | threads | test MAE (years) | macro-F1 | minutes |",
             "|---:|---:|---:|---:|---:|"]
    maes = []
    for seed, threads, folder in runs:
        test = read_json(folder, "test_metrics.json")
        maes.append(test["mae_years"])
        minutes = read_json(folder, "wall_clock.json")["seconds"] / 60
        lines.append(f"| {seed} | {threads or args.threads} | {test['mae_years']:.2f} | "
                     f"{test['macro_f1']:.3f} | {minutes:.1f} |")
    lines += ["", f"Test MAE over these {len(maes)} runs: sd {np.std(maes, ddof=1):.2f} years, "
              f"range {min(maes):.2f}-{max(maes):.2f}."]
    return lines


def figure_cells(slug, figures, seeds):
    """The table cells of a model's figures ``(task, seed) -> metrics``: its summary cells
    (mean and spread over ``seeds``) and its Markdown rows per split."""
    cells = [mean_and_spread([figures[task, seed][key] for seed in seeds], fmt, scale)
             for _, task, key, fmt, scale in COLUMNS]
    per_split = [f"| {slug} | {seed} | " + " | ".join(
        fmt.format(scale * figures[task, seed][key]) for _, task, key, fmt, scale in COLUMNS)
        + " |" for seed in seeds]
    return cells, per_split


def model_rows(args, folders, root, trials):
    """The summary row of each model (mean and spread), its rows per split and its
    figures: ``slug -> (task, seed) -> metrics``."""
    rows, per_split, by_model = [], [], {}
    for slug, name, _, epochs, _ in args.rows:
        if (slug, "speaker", args.seeds[0]) not in folders:
            rows.append(f"| {name} | skipped: no GPU |" + " |" * (len(COLUMNS) + 2))
            continue
        figures = by_model[slug] = {
            (task, seed): run_figures(folders[slug, task, seed], task, root, trials)
            for task in TASKS for seed in args.seeds}
        cells, split_rows = figure_cells(slug, figures, args.seeds)
        minutes = " + ".join(
            "{:.1f}".format(np.mean([figures[task, seed]["minutes"] for seed in args.seeds]))
            for task in TASKS)
        size = parameters(folders[slug, "speaker", args.seeds[0]]) / 1e6
        rows.append(f"| {name} | {' | '.join(cells)} | {epochs}, {minutes} | {size:.2f} M |")
        per_split += split_rows
        print(rows[-1], flush=True)
    if reference_encoder.REFERENCE in args.models:
        figures, seconds = reference_encoder.measure(args.seeds, args.data, args.out, root, trials)
        by_model[reference_encoder.REFERENCE] = figures
        cells, split_rows = figure_cells(reference_encoder.REFERENCE, figures, args.seeds)
        rows.append(f"| {reference_encoder.NAME} | {' | '.join(cells)} | pretrained "
                    f"({seconds / 60:.1f} minutes to measure) | "
                    f"{reference_encoder.parameters() / 1e6:.2f} M |")
        per_split += split_rows
        print(rows[-1], flush=True)
    return rows, per_split, by_model


def paired_rows(args, by_model, baseline="ecapa"):
    """Each model's difference to ``baseline`` split by split, mean ± sd (min to max), and on
    how many splits it is the better one: the same test speakers on both sides, so the
    splits' own spread drops out. Markdown lines (none without the baseline)."""
    if baseline not in by_model or len(args.seeds) < 2:
        return []
    # Lower is better for the error rates and MAE, higher for macro-F1 and accuracy.
    lower_better = {"eer", "min_dcf", "librispeech_eer", "mae_years"}
    lines = [f"Difference to {baseline}, split by split (model − {baseline}; mean ± sd "
             "(min to max) over the splits, then on how many splits the model is better):", "",
             "| model | " + " | ".join(header for header, *_ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for slug, figures in by_model.items():
        if slug == baseline:
            continue
        cells = []
        for _, task, key, fmt, scale in COLUMNS:
            differences = np.array([figures[task, seed][key] - by_model[baseline][task, seed][key]
                                    for seed in args.seeds])
            better = np.sum(differences < 0 if key in lower_better else differences > 0)
            cells.append(f"{mean_and_spread(differences, fmt, scale, signed=True)}, "
                         f"{better} of {len(differences)}")
        lines.append(f"| {slug} | {' | '.join(cells)} |")
    return lines


def precisions_only(args):
    """``--precisions``: trains (or reuses) the default DMHA speaker run of each split, then
    measures int8 and bf16 embeddings against fp32 (``bench/precision_quality.py``)."""
    args.rows, args.tasks = [MODELS[0]], ("speaker",)
    os.makedirs(args.out, exist_ok=True)
    folders = train_all(args, max(1, torch.get_num_threads() // args.jobs))
    runs = [(seed, folders["dmha", "speaker", seed]) for seed in args.seeds]
    lines = [f"Measured {datetime.date.today()} by `python "
             f"{' '.join(['bench/quality.py'] + sys.argv[1:])}`: the default DMHA speaker model "
             f"({args.epochs or MODELS[0][3]} epochs) of each split, its embeddings in each "
             "precision through `dmha export` / `dmha embed --precision`.", "",
             *precision_quality.precision_lines(runs, args.precisions, args.data)]
    publish_table(os.path.join(args.out, "precision.md"), lines)


def main():
    data = os.environ.get("DMHA_DATA", os.path.join(REPO, "..", "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=data, help="DMHA_DATA folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1986, 7, 42],
                        help="split seeds (speaker-disjoint splits)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once, each on cores / jobs threads")
    parser.add_argument("--training_seeds", type=int, nargs="*", default=[], metavar="SEED",
                        help="also train the first split's DMHA age model with these seeds")
    parser.add_argument("--thread_check", type=int, metavar="N",
                        help="also train the first split's DMHA age model on N threads")
    slugs = [slug for slug, *_ in MODELS]
    parser.add_argument("--models", nargs="+", choices=slugs + [reference_encoder.REFERENCE],
                        default=slugs, metavar="SLUG",
                        help=f"rows to show (default every trained one: {', '.join(slugs)}; "
                        "dmha, the defaults, trains whenever another trained row does); "
                        f"{reference_encoder.REFERENCE}: the pretrained external reference, "
                        "which trains nothing")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "quality"))
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "int8", "bf16"),
                        help="only the default DMHA speaker model: int8 / bf16 against fp32")
    parser.add_argument("--epochs", type=int, help="epochs of every trained model "
                        "(default: each model's own, MODELS)")
    args = parser.parse_args()
    args.tasks = TASKS
    if args.precisions:
        return precisions_only(args)
    trained = set(args.models) - {reference_encoder.REFERENCE}
    args.rows = [row for row in MODELS if row[0] in trained or (trained and row[0] == "dmha")]
    if not args.rows and (args.training_seeds or args.thread_check):
        parser.error("--training_seeds and --thread_check train DMHA: name a trained row "
                     "in --models")
    os.makedirs(args.out, exist_ok=True)
    trials = os.path.join(args.out, "librispeech_trials.txt")
    root, cross_labels = librispeech_trials(args.data, trials)
    threads = args.threads = max(1, torch.get_num_threads() // args.jobs)
    folders = train_all(args, threads)

    rows, per_split, by_model = model_rows(args, folders, root, trials)

    # The reference alone trained nothing: its own copy of the first split's manifests.
    first = folders.get(("dmha", "age", args.seeds[0]), os.path.join(
        args.out, reference_encoder.REFERENCE, f"split_{args.seeds[0]}"))
    majority, floor, mean_age, mae = age_floors(first, os.path.join(args.data, "speechocean762"))
    rng = np.random.default_rng(0)
    random_eer = verification_metrics(rng.random(len(cross_labels)), cross_labels)["eer"]
    rows.append(f"| floor: majority group ({majority}), seed {args.seeds[0]} | | | | "
                f"{floor['macro_f1']:.3f} | {floor['balanced_accuracy']:.3f} | | 0 | 0 |")
    rows.append(f"| floor: mean training age ({mean_age:.1f}), seed {args.seeds[0]} | | | | | | "
                f"{mae:.2f} | 0 | 0 |")
    rows.append(f"| floor: random scores | 50 % (expected) | 1.0 | {100 * random_eer:.2f} % | "
                "| | | 0 | 0 |")
    if folders:
        plot_curves(folders, os.path.join(args.out, "curves.png"))
    headers = [header for header, *_ in COLUMNS]
    lines = [
        f"Measured {datetime.date.today()} by `python {' '.join(['bench/quality.py'] + sys.argv[1:])}` "
        f"({threads} CPU thread(s) per training, {args.jobs} at once, "
        f"{'GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}); "
        f"speechocean762, {len(args.seeds)} speaker-disjoint splits (seeds "
        f"{', '.join(map(str, args.seeds))}); test = each split's held-out speakers; "
        "mean ± sd (min–max) over the splits.",
        "",
        "| model | " + " | ".join(headers) + " | epochs, training minutes (speaker + age) "
        "| parameters |",
        "|---|" + "---:|" * (len(headers) + 2),
        *rows,
        "",
        "| model | seed | " + " | ".join(headers) + " |",
        "|---|---:|" + "---:|" * len(headers),
        *per_split,
        "",
        *paired_rows(args, by_model),
        "",
        *(validation_rows(args, folders) if folders else []),
    ]
    if args.thread_check or args.training_seeds:
        lines += ["", *stability(args, folders)]
    publish_table(os.path.join(args.out, "quality.md"), lines)


if __name__ == "__main__":
    main()
