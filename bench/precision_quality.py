"""Accuracy of int8 and bf16 embeddings against fp32 of the same trained speaker models.

Used by ``bench/quality.py --precisions fp32 int8 bf16``. For each trained
speaker run (one per split seed), through the ``dmha`` commands a user runs:

- ``dmha export --model RUN/model --precision int8 --calibration_list`` with
  ``CALIBRATION_FILES`` utterances of the run's own training split (spread over
  its speakers; never test or validation speakers);
- ``dmha embed --precision P`` of every test utterance of the split and of
  every ``librispeech-test-other-10spk`` file; bf16 with ``DMHA_FORCE_BF16=1``
  where the CPU has no native bf16 (the same arithmetic, emulated; ``dmha``
  would otherwise run fp32 there and say so);
- the split's test trials (``RUN/test_scores.txt``, the pairs the recipe scored)
  cosine-scored from each precision's embeddings: EER and minDCF (p_target
  0.01); the fp32 row must equal the recipe's own ``test_metrics.json``;
- the cosine of each file's int8 / bf16 embedding to its fp32 one: the minimum
  over the first ``COSINE_UTTERANCES`` test utterances, over all test
  utterances, and over the LibriSpeech files.
"""

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np

from dmha_modules.scoring.metrics import verification_metrics

CALIBRATION_FILES = 100
COSINE_UTTERANCES = 200
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def manifest_rows(run, split, data_folder):
    """``(id, path, speaker)`` of a run's manifest split, paths resolved."""
    with open(os.path.join(run, "manifests", f"{split}.csv"), newline="") as f:
        return [(row["ID"], row["wav"].replace("$data_root", data_folder), row["spk_id"])
                for row in csv.DictReader(f)]


def write_list(path, entries):
    with open(path, "w") as f:
        f.writelines(f"{utt} {wav}\n" for utt, wav in entries)
    return path


def dmha(*arguments, env=None):
    """Runs a ``dmha`` command; its standard output."""
    result = subprocess.run([sys.executable, "-m", "dmha_modules.cli", *arguments], check=True,
                            capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, **(env or {})))
    return result.stdout


def embeddings(run, precision, list_file, out):
    """``id -> embedding`` of ``dmha embed --precision`` over ``list_file`` (reused if written)."""
    if not os.path.exists(out):
        env = {"DMHA_FORCE_BF16": "1"} if precision == "bf16" else None
        dmha("embed", "--model", os.path.join(run, "model"), "--precision", precision,
             "--list", list_file, "--out", out, "--no_progress", env=env)
    with np.load(out) as stored:
        return {key: stored[key].astype(np.float64).reshape(-1) for key in stored.files}


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def trial_metrics(run, embedded, speakers):
    """EER and minDCF of the run's test trials scored from ``embedded``."""
    with open(os.path.join(run, "test_scores.txt")) as f:
        pairs = [line.split()[:2] for line in f if line.strip()]
    scores = np.array([cosine(embedded[a], embedded[b]) for a, b in pairs])
    labels = np.array([speakers[a] == speakers[b] for a, b in pairs])
    return verification_metrics(scores, labels, p_target=0.01)


def evaluate_run(run, seed, precisions, data):
    """The figures of one trained speaker run, per precision (see the module docstring)."""
    data_folder = os.path.join(data, "speechocean762")
    work = os.path.join(run, "precision")
    os.makedirs(work, exist_ok=True)
    test = manifest_rows(run, "test", data_folder)
    train = manifest_rows(run, "train", data_folder)
    test_list = write_list(os.path.join(work, "test.txt"), [(u, w) for u, w, _ in test])
    libri = sorted(glob.glob(os.path.join(data, "librispeech-test-other-10spk", "**", "*.flac"),
                             recursive=True))
    libri_list = write_list(os.path.join(work, "librispeech.txt"),
                            [(os.path.splitext(os.path.basename(p))[0], p) for p in libri])
    if "int8" in precisions and not os.path.exists(os.path.join(run, "model",
                                                                "embedding_int8.onnx")):
        calibration = train[:: max(1, len(train) // CALIBRATION_FILES)][:CALIBRATION_FILES]
        dmha("export", "--model", os.path.join(run, "model"), "--precision", "int8",
             "--calibration_list", write_list(os.path.join(work, "calibration.txt"),
                                              [(u, w) for u, w, _ in calibration]))
    speakers = {u: s for u, _, s in test}
    figures = {"seed": seed, "recipe": json.load(open(os.path.join(run, "test_metrics.json")))}
    reference = {}
    for precision in ["fp32"] + [p for p in precisions if p != "fp32"]:
        test_emb = embeddings(run, precision, test_list, os.path.join(work, f"test_{precision}.npz"))
        libri_emb = embeddings(run, precision, libri_list,
                               os.path.join(work, f"librispeech_{precision}.npz"))
        row = trial_metrics(run, test_emb, speakers)
        if precision == "fp32":
            reference = {"test": test_emb, "libri": libri_emb}
        else:
            ids = [u for u, _, _ in test]
            cos = [cosine(test_emb[u], reference["test"][u]) for u in ids]
            row["cosine_test_first"] = min(cos[:COSINE_UTTERANCES])
            row["cosine_test_all"] = min(cos)
            row["cosine_librispeech"] = min(cosine(v, reference["libri"][k])
                                            for k, v in libri_emb.items())
        figures[precision] = row
    figures["test_utterances"], figures["librispeech_files"] = len(test), len(libri)
    return figures


def precision_lines(runs, precisions, data):
    """Markdown lines: per split and precision EER, minDCF, their change from fp32 and the
    smallest cosines to fp32; then the mean change over the splits."""
    results = [evaluate_run(run, seed, precisions, data) for seed, run in runs]
    lines = ["| split seed | precision | test EER | change | minDCF | change | min cosine to "
             f"fp32: first {COSINE_UTTERANCES} test utt. / all test utt. / LibriSpeech (100) |",
             "|---:|---|---:|---:|---:|---:|---|"]
    changes = {p: [] for p in precisions if p != "fp32"}
    for r in results:
        base = r["fp32"]
        check = abs(base["eer"] - r["recipe"]["eer"])
        lines.append(f"| {r['seed']} | fp32 | {100 * base['eer']:.2f} % | (recipe: "
                     f"{100 * r['recipe']['eer']:.2f} %{', differs' if check > 1e-6 else ''}) | "
                     f"{base['min_dcf']:.3f} | | {r['test_utterances']} test utterances |")
        for p in changes:
            row = r[p]
            changes[p].append((row["eer"] - base["eer"], row["min_dcf"] - base["min_dcf"],
                               min(row["cosine_test_first"], row["cosine_librispeech"])))
            lines.append(
                f"| {r['seed']} | {p} | {100 * row['eer']:.2f} % | "
                f"{100 * (row['eer'] - base['eer']):+.2f} | {row['min_dcf']:.3f} | "
                f"{row['min_dcf'] - base['min_dcf']:+.3f} | {row['cosine_test_first']:.5f} / "
                f"{row['cosine_test_all']:.5f} / {row['cosine_librispeech']:.5f} |")
    lines.append("")
    for p, values in changes.items():
        eer, dcf, cos = (np.array(v) for v in zip(*values))
        lines.append(f"{p} against fp32 over {len(values)} splits: EER change mean "
                     f"{100 * eer.mean():+.2f} points (range {100 * eer.min():+.2f} to "
                     f"{100 * eer.max():+.2f}), minDCF change mean {dcf.mean():+.3f}; smallest "
                     f"cosine to fp32 (first {COSINE_UTTERANCES} test utterances and LibriSpeech) "
                     f"{cos.min():.5f}")
    return lines
