"""How good: DMHA vs SpeechBrain's ECAPA-TDNN under the same training budget.

Each model is trained by ``recipes/train.py`` twice on speechocean762 (the
same data, epochs and seed): with ``hparams/speaker.yaml`` for verification
and ``hparams/age.yaml`` for age. Reported on the held-out test speakers:
speaker EER and minDCF (p_target 0.01), age macro-F1, balanced accuracy and
MAE in years, training wall-clock and parameter count; cross-corpus, the EER
of each speaker model on every pair of ``librispeech-test-other-10spk``
(never trained on), scored by ``dmha score``. The zero-training floors come
from the same manifests and trials. The paper-size DMHA (VGG4L k=1024, 16
heads) is trained only where a GPU is present; otherwise its row says skipped.

    python bench/quality.py [--data DIR] [--epochs N] [--jobs N] [--out results/quality]

Runs that finished are reused (each writes ``test_metrics.json`` and
``wall_clock.json``); an interrupted one resumes from its checkpoint, its
wall-clock then covering only the last attempt. The table goes to stdout and
``<out>/quality.md``.
"""

import argparse
import datetime
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dmha_modules.atomic import write_atomic
from dmha_modules.metrics import classification_metrics, verification_metrics
from dmha_modules.model_builder import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (run name, table row, recipe overrides, needs a GPU)
MODELS = [
    ("dmha", "DMHA (YAML defaults: VGG4L k=128, 8 heads, no head drop, lr 3e-4)", [], False),
    # C=256: about the default DMHA's compute per utterance, so that the CPU
    # budget trains both the same number of epochs in similar time.
    # lr 1e-3: bench/tune.py tuned DMHA's lr only; ECAPA keeps the one it was first measured with.
    ("ecapa", "ECAPA-TDNN (C=256, 192-d)",
     ["--embedding", "ecapa", "--emb_dim", "192", "--ecapa_channels", "[256,256,256,256,768]",
      "--lr", "0.001"],
     False),
    ("dmha_paper", "DMHA paper size (VGG4L k=1024, 16 heads, head drop 0.3)",
     ["--channels", "1024", "--heads", "16", "--mask_prob", "0.3"], True),
]


def train(task, slug, name, extra, args, threads=None):
    """Runs the recipe (or reuses a finished run) on ``threads`` CPU threads
    (default: torch's); returns its output folder."""
    output = os.path.join(args.out, f"{slug}_{task}")
    timing = os.path.join(output, "wall_clock.json")
    if os.path.exists(timing) and os.path.exists(os.path.join(output, "test_metrics.json")):
        return output
    command = [sys.executable, os.path.join(REPO, "recipes", "train.py"),
               os.path.join(REPO, "hparams", f"{task}.yaml"),
               "--data_folder", os.path.join(args.data, "speechocean762"),
               "--output_folder", output, "--noprogressbar"]
    if args.epochs:
        command += ["--number_of_epochs", str(args.epochs)]
    print(f"[{datetime.datetime.now():%H:%M:%S}] training {name}, {task}", flush=True)
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


def main():
    data = os.environ.get("DMHA_DATA", os.path.join(REPO, "..", "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=data, help="DMHA_DATA folder")
    parser.add_argument("--epochs", type=int, help="epochs for every run (default: the YAMLs')")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once, each on cores / jobs threads")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "quality"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    trials = os.path.join(args.out, "librispeech_trials.txt")
    root, cross_labels = librispeech_trials(args.data, trials)

    # Both tasks of a model run side by side with --jobs 2, so their minutes compare.
    runs = [(task, slug, name, extra) for slug, name, extra, needs_gpu in MODELS
            if torch.cuda.is_available() or not needs_gpu for task in ("speaker", "age")]
    threads = max(1, torch.get_num_threads() // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        folders = pool.map(lambda run: train(*run, args, threads=threads), runs)
        folders = {(slug, task): folder for (task, slug, _, _), folder in zip(runs, folders)}

    rows = []
    age_run = None
    for slug, name, extra, needs_gpu in MODELS:
        if (slug, "speaker") not in folders:
            rows.append(f"| {name} | skipped: no GPU | | | | | | | |")
            continue
        speaker_run, age_run = folders[slug, "speaker"], folders[slug, "age"]
        speaker = read_json(speaker_run, "test_metrics.json")
        age = read_json(age_run, "test_metrics.json")
        cross = cross_corpus_eer(speaker_run, root, trials,
                                 os.path.join(speaker_run, "librispeech_scores.txt"))
        minutes = (read_json(speaker_run, "wall_clock.json")["seconds"],
                   read_json(age_run, "wall_clock.json")["seconds"])
        rows.append(
            f"| {name} | {100 * speaker['eer']:.2f} % | {speaker['min_dcf']:.3f} | "
            f"{100 * cross:.2f} % | {age['macro_f1']:.3f} | {age['balanced_accuracy']:.3f} | "
            f"{age['mae_years']:.2f} | {minutes[0] / 60:.1f} + {minutes[1] / 60:.1f} | "
            f"{parameters(speaker_run) / 1e6:.2f} M |"
        )
        print(rows[-1], flush=True)

    majority, floor, mean_age, mae = age_floors(age_run, os.path.join(args.data, "speechocean762"))
    rng = np.random.default_rng(0)
    random_eer = verification_metrics(rng.random(len(cross_labels)), cross_labels)["eer"]
    rows.append(f"| floor: majority group ({majority}) | | | | {floor['macro_f1']:.3f} | "
                f"{floor['balanced_accuracy']:.3f} | | 0 | 0 |")
    rows.append(f"| floor: mean training age ({mean_age:.1f}) | | | | | | {mae:.2f} | 0 | 0 |")
    rows.append(f"| floor: random scores | 50 % (expected) | 1.0 | {100 * random_eer:.2f} % | "
                "| | | 0 | 0 |")
    epochs = args.epochs or "15, the YAMLs'"
    publish_table(os.path.join(args.out, "quality.md"), [
        f"Measured {datetime.date.today()} by `python {' '.join(['bench/quality.py'] + sys.argv[1:])}` "
        f"({threads} CPU thread(s) per training, {args.jobs} at once, "
        f"{'GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}); "
        f"speechocean762, same split, seed and epochs ({epochs}) for every model; "
        "test = held-out speakers.",
        "",
        "| model | speaker EER | minDCF | EER on LibriSpeech (unseen) | age macro-F1 | "
        "balanced acc. | MAE (years) | training minutes (speaker + age) | parameters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


if __name__ == "__main__":
    main()
