"""Calibrated scores on new speakers: is the false-accept rate at the stored threshold the target?

A speaker model trained by ``recipes/train.py`` (its ``model/`` folder and
``manifests/``) is calibrated on the trials of development speakers and
measured on other held-out speakers of speechocean762 and, cross-corpus, on
every pair of ``librispeech-test-other-10spk``; and, for comparison, on
LibriSpeech calibrated in-domain (5 of its speakers calibrate, the other 5
are measured). Each calibration is fitted on plain cosines, on cosines of
embeddings centred on the mean of each trial set's own files (``dmha
calibrate``'s ``--centring mean``) and on those cosines standardised by the
mean and standard deviation of the cosines between all pairs of the set's
files (``--standardising list``; with centring, the default). The 26 held-out speakers
(the recipe's valid and test speakers, never trained on) are split into 13
development and 13 test speakers several ways: split 0 is the recipe's own
(development = valid), the others a seeded shuffle. Per split, with and
without the duration quality measure (and, for the Bayes thresholds, fitted at
the effective prior p_target instead of 0.5), the calibration is fitted on the
development trials (every pair), stored with ``save_calibration`` and read
back, and at each operating point (target FAR 1 % and 5 %; the Bayes
threshold of p_target 0.01 and 0.05) the test trials' false-accept and miss
rates are measured at the stored threshold; Cllr (of the cosines taken as
LLRs, and calibrated), minCllr, EER and minDCF go beside them. Finally
``dmha calibrate`` (centred, and centred and standardised) and ``dmha score``
are run on split 0's trial lists to check that the command line gives the same
rates.

    python bench/calibration.py --experiment results/speaker/1986 [--data DIR] [--splits 3]
        [--out results/calibration]

The tables go to stdout and ``<out>/calibration.md``, every figure to
``<out>/calibration.json``.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
import torch

from dmha_modules import cli
from dmha_modules.io.atomic import write_atomic
from dmha_modules.io.audio import audio_info
from dmha_modules.scoring.calibration import (
    Calibration,
    fit_calibration,
    load_calibration,
    save_calibration,
)
from dmha_modules.scoring.cllr import cllr, min_cllr
from dmha_modules.inference import DMHAClassifier
from dmha_modules.scoring.list_norm import MIN_FILES_TO_CENTRE, normalised_cosines
from dmha_modules.scoring.metrics import (
    rates_at_threshold,
    trial_pairs,
    verification_metrics,
)
from dmha_modules.recipe.build import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTS = [("target FAR 1%", {"target_far": 0.01}), ("target FAR 5%", {"target_far": 0.05}),
          ("Bayes p_target 0.01", {"p_target": 0.01}), ("Bayes p_target 0.05", {"p_target": 0.05})]
# (name, quality measures, effective prior of the fit: a number, or "p_target" for the
# Bayes operating point's own prior, BOSARIS's advice for one known application prior;
# the list normalisation: "centred", cosines of embeddings centred on the mean of each
# trial set's own files, as dmha calibrate's --centring mean and dmha score do;
# "standardised", those cosines standardised by the mean and sd of the cosines between
# all pairs of the set's files, as --standardising list (the two: the default);
# "none", plain cosines).
CALIBRATIONS = [("cosine", [], 0.5, "none"), ("cosine + duration", ["duration"], 0.5, "none"),
                ("cosine, fitted at prior = p_target", [], "p_target", "none"),
                ("centred cosine", [], 0.5, "centred"),
                ("centred cosine + duration", ["duration"], 0.5, "centred"),
                ("centred, standardised cosine", [], 0.5, "standardised")]
NORMALISATIONS = ("none", "centred", "standardised")
# The command line checks: the default calibration, and the centred-only one.
COMMAND_LINE = [("centred, standardised cosine", []),
                ("centred cosine", ["--standardising", "none"])]


def held_out_utterances(experiment):
    """``(paths, speakers)`` of the recipe's valid and test utterances, and the valid speakers."""
    with open(os.path.join(experiment, "manifests", "prepare_options.json")) as file:
        data_folder = json.load(file)["options"]["data_folder"]
    hparams = {"manifest_folder": os.path.join(experiment, "manifests"),
               "data_folder": data_folder}
    paths, speakers, valid = [], [], set()
    for split in ("valid", "test"):
        for row in read_manifest(hparams, split).values():
            paths.append(row["wav"])
            speakers.append(row["spk_id"])
            if split == "valid":
                valid.add(row["spk_id"])
    return paths, np.array(speakers), sorted(valid)


def librispeech_utterances(data):
    folder = os.path.join(data, "librispeech-test-other-10spk")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.endswith(".flac"))
    return paths, np.array([os.path.basename(os.path.dirname(path)) for path in paths])


def embed(model, paths):
    """Embeddings ``(N, E)`` and durations ``(N,)`` of audio files (every one must load)."""
    embeddings = {}
    for index, result in model.embed_files(paths, progress=True):
        if not torch.is_tensor(result):
            raise RuntimeError(str(result))
        embeddings[index] = result
    seconds = [audio_info(path).frames / audio_info(path).samplerate for path in paths]
    return torch.stack([embeddings[i] for i in range(len(paths))]), np.array(seconds)


def trials_of(embeddings, seconds, speakers, chosen, normalisation="none"):
    """Every pair of the ``chosen`` utterances: cosine scores (of the embeddings centred on
    the chosen ones' mean unless ``normalisation`` is "none", then standardised by their
    pairs' statistics if "standardised", as ``normalised_cosines`` takes them for dmha score),
    labels, ``(N, 2)`` durations, the pairs."""
    index = np.flatnonzero(chosen)
    if len(index) < MIN_FILES_TO_CENTRE:
        raise ValueError(f"a trial set of {len(index)} files: the bench centres every set on "
                         f"its own files, which takes {MIN_FILES_TO_CENTRE} or more")
    own = [(i, j, same) for i, j, same in trial_pairs(speakers[index].tolist())]
    # The development statistics a Calibration stores are only used for lists under
    # MIN_FILES_TO_CENTRE files (refused above): neutral ones of the right size stand in.
    neutral_centre = [0.0] * embeddings.shape[1]
    steps = Calibration({"score": 1.0}, 0.0,
                        centre=None if normalisation == "none" else neutral_centre,
                        score_stats=[0.0, 1.0] if normalisation == "standardised" else None)
    scores, _ = normalised_cosines(steps, embeddings[torch.from_numpy(index)],
                                   torch.tensor([pair[:2] for pair in own]))
    pairs = np.array([(index[i], index[j], same) for i, j, same in own])
    return scores, pairs[:, 2].astype(int), seconds[pairs[:, :2]], pairs


def split_trials(split, data, normalisation):
    """One split's trial sets: speechocean762 development, test and all of LibriSpeech
    (calibrated on the development trials), and LibriSpeech's development and test halves.

    Split 0's development speakers are the recipe's valid speakers, the others a seeded half
    of the held-out speakers; every set is normalised on its own files (``trials_of``).
    """
    embeddings, seconds, speakers, valid, libri_embeddings, libri_seconds, libri_speakers = data
    rng = np.random.default_rng(split)
    held_out, libri_held = sorted(set(speakers)), sorted(set(libri_speakers))
    dev_speakers = valid if split == 0 else sorted(rng.permutation(held_out)[:len(held_out) // 2])
    is_dev = np.isin(speakers, dev_speakers)
    is_libri_dev = np.isin(libri_speakers, rng.permutation(libri_held)[:len(libri_held) // 2])
    libri = (libri_embeddings, libri_seconds, libri_speakers)
    sets = {"dev": trials_of(embeddings, seconds, speakers, is_dev, normalisation),
            "test": trials_of(embeddings, seconds, speakers, ~is_dev, normalisation),
            "librispeech": trials_of(*libri, np.ones(len(libri_speakers), bool), normalisation)}
    return (sets, trials_of(*libri, is_libri_dev, normalisation),
            {"librispeech_test": trials_of(*libri, ~is_libri_dev, normalisation)})


def measure(scores, labels, llrs, calibration, point):
    """The figures of one trial set at one stored calibration."""
    p_miss, p_fa = rates_at_threshold(llrs, labels, calibration.threshold)
    p_target = point.get("p_target", 0.01)
    metrics = verification_metrics(llrs, labels, p_target=p_target)
    figures = {"far": p_fa, "miss": p_miss, "eer": metrics["eer"], "min_dcf": metrics["min_dcf"],
               "act_dcf": (p_target * p_miss + (1 - p_target) * p_fa)
               / min(p_target, 1 - p_target),
               "cllr_cosine": cllr(scores, labels), "cllr": cllr(llrs, labels),
               "min_cllr": min_cllr(scores, labels)}
    if "target_far" in point:
        figures["far_ratio"] = p_fa / point["target_far"]
    return figures


def run_split(dev, sets, quality, prior, point, folder):
    """Fits on ``dev``, stores, reads back; the figures of each of ``sets`` at that calibration."""
    scores, labels, seconds = dev[:3]
    calibration = fit_calibration(scores, labels, quality, seconds, prior=prior)
    llrs = calibration.llrs(scores, seconds)
    calibration = calibration.with_operating_point(llrs[labels == 0], **point)
    save_calibration(calibration, folder)
    stored = load_calibration(folder)
    figures = {name: measure(s, l, stored.llrs(s, d), stored, point)
               for name, (s, l, d, _) in sets.items()}
    return {"threshold": stored.threshold, **figures}


def spread(values):
    values = np.array(values)
    return f"{values.mean():.3g} [{values.min():.3g}, {values.max():.3g}]"


SETS = [("test", "speechocean762 test speakers, calibrated on speechocean762 dev speakers"),
        ("librispeech", "LibriSpeech (cross-corpus), calibrated on speechocean762 dev speakers"),
        ("librispeech_test", "LibriSpeech, 5 speakers, calibrated on the other 5 (in-domain)")]


def tables(results, n_splits):
    """Markdown: per set and calibration, each operating point's figures over the splits."""
    lines = []
    for name, title in SETS:
        for quality, *_ in CALIBRATIONS:
            lines += [f"\n**{title}; {quality}** (mean [min, max] over {n_splits} splits)\n",
                      "| operating point | threshold (LLR) | FAR | FAR / target | miss | "
                      "actDCF | minDCF |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for point_name, point in POINTS:
                rows = [r for r in results if r["quality"] == quality
                        and r["point"] == point_name and name in r]
                if not rows:
                    continue
                cell = lambda key: spread([r[name][key] for r in rows])
                bayes = "p_target" in point
                key = "librispeech_threshold" if name == "librispeech_test" else "threshold"
                lines.append(f"| {point_name} | {spread([r[key] for r in rows])} | "
                             f"{cell('far')} | {'' if bayes else cell('far_ratio')} | "
                             f"{cell('miss')} | {cell('act_dcf') if bayes else ''} | "
                             f"{cell('min_dcf') if bayes else ''} |")
    lines += ["\n**Discrimination and calibration** (mean [min, max] over splits; Cllr of "
              "cosine: the cosines taken as LLRs)\n",
              "| trials | calibration | EER | minDCF(0.01) | Cllr of cosine | Cllr calibrated | "
              "minCllr |", "|---|---|---:|---:|---:|---:|---:|"]
    for name in ("dev", "test", "librispeech", "librispeech_test"):
        for quality, _, prior, _ in CALIBRATIONS:
            if prior != 0.5:
                continue
            rows = [r[name] for r in results if r["quality"] == quality
                    and r["point"] == POINTS[2][0] and name in r]
            lines.append(f"| {name} | {quality} | " + " | ".join(
                spread([r[key] for r in rows]) for key in
                ("eer", "min_dcf", "cllr_cosine", "cllr", "min_cllr")) + " |")
    return "\n".join(lines) + "\n"


def write_trial_list(path, paths, pairs):
    lines = [f"{int(same)} {paths[i]} {paths[j]}\n" for i, j, same in pairs]
    write_atomic(path, lambda out: out.writelines(lines))


def command_line_check(model_folder, sets, paths, out, extra):
    """``dmha calibrate`` (target FAR 1 %, with ``extra`` options) and ``dmha score`` on
    split 0; their test FAR.

    They run on a copy of the model folder in ``out``: ``calibrate`` writes into the folder,
    and the experiment's own must stay as trained (``bench/quality.py`` scores with it).
    """
    model_folder = shutil.copytree(model_folder, os.path.join(out, "model"), dirs_exist_ok=True)
    for name in ("dev", "test"):
        write_trial_list(os.path.join(out, f"split0_{name}.txt"), paths, sets[name][3])
    commands = [
        ["calibrate", "--model", model_folder, "--trials", os.path.join(out, "split0_dev.txt"),
         "--target_far", "0.01", "--plot", os.path.join(out, "split0_dev_det.png"),
         "--no_progress", *extra],
        ["score", "--model", model_folder, "--trials", os.path.join(out, "split0_test.txt"),
         "--out", os.path.join(out, "split0_test_scores.txt"), "--plot",
         os.path.join(out, "split0_test_det.png"), "--no_progress"],
    ]
    printed = []
    for command in commands:
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert cli.main(command) == 0, command
        printed.append("$ dmha " + " ".join(command) + "\n" + stdout.getvalue())
    with open(os.path.join(out, "split0_test_scores.txt")) as file:
        decisions = [line.split()[3] for line in file]
    labels = sets["test"][1]
    far = np.mean([d == "accept" for d, label in zip(decisions, labels) if not label])
    return far, "\n".join(printed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="output folder of a speaker run")
    parser.add_argument("--data", default=os.environ.get(
        "DMHA_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "calibration"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = DMHAClassifier.from_hparams(source=os.path.join(args.experiment, "model"),
                                        savedir=tempfile.mkdtemp())
    paths, speakers, valid = held_out_utterances(args.experiment)
    libri_paths, libri_speakers = librispeech_utterances(args.data)
    embeddings, seconds = embed(model, paths)
    libri_embeddings, libri_seconds = embed(model, libri_paths)
    data = (embeddings, seconds, speakers, valid, libri_embeddings, libri_seconds,
            libri_speakers)
    results, split_zero = [], None
    for split in range(args.splits):
        trial_sets = {norm: split_trials(split, data, norm) for norm in NORMALISATIONS}
        split_zero = split_zero or trial_sets["none"][0]
        for (quality, terms, prior, normalisation), (point_name, point) in (
                (c, p) for c in CALIBRATIONS for p in POINTS):
            if prior == "p_target":
                if "p_target" not in point:
                    continue
                prior = point["p_target"]
            sets, libri_dev, libri_sets = trial_sets[normalisation]
            with tempfile.TemporaryDirectory() as folder:
                figures = run_split(sets["dev"], sets, terms, prior, point, folder)
                in_domain = run_split(libri_dev, libri_sets, terms, prior, point, folder)
            results.append({"split": split, "quality": quality, "point": point_name,
                            **figures, "librispeech_test": in_domain["librispeech_test"],
                            "librispeech_threshold": in_domain["threshold"]})
    report = tables(results, args.splits)
    for quality, extra in COMMAND_LINE:
        far, printed = command_line_check(os.path.join(args.experiment, "model"), split_zero,
                                          paths, args.out, extra)
        library = next(r["test"]["far"] for r in results if r["split"] == 0
                       and r["quality"] == quality and r["point"] == "target FAR 1%")
        report += (f"\nCommand line, split 0, {quality}, target FAR 1%: test FAR {far:.4f} "
                   f"from the scores file (library: {library:.4f})\n\n```\n{printed}```\n")
    print(report)
    write_atomic(os.path.join(args.out, "calibration.md"), lambda f: f.write(report))
    write_atomic(os.path.join(args.out, "calibration.json"),
                 lambda f: json.dump(results, f, indent=1))


if __name__ == "__main__":
    main()
