#!/usr/bin/env python3
"""Empirical coverage of the conformal age intervals over random calibration/test splits.

The recipe calibrates on the validation speakers and measures on the test
speakers: 13 + 13 on speechocean762, so one figure moves by 7.7 points per
speaker. This pools an experiment's held-out speakers (valid + test, none
seen in training), predicts their utterances with the experiment's model
folder, and repeats: calibrate on a random half, measure on the other half
(the same code as the recipe: ``dmha_modules.age.uncertainty``). The mean
over splits is the coverage the split-conformal guarantee speaks of.

    python bench/age_coverage.py --data_folder ../shared/data/speechocean762 \
        results/age/1986 [more experiments] [--coverage 0.8] [--splits 2000]
"""

import argparse
import os

import numpy as np

from dmha_modules.age.uncertainty import (
    conformal_half_width,
    interval_coverage,
    speaker_means,
    speaker_weighted_half_width,
)
from dmha_modules.inference import AgeClassifier
from dmha_modules.recipe.build import read_manifest


def held_out_predictions(experiment, data_folder):
    """(predicted years, true years, speaker) of the valid and test utterances."""
    hparams = {"manifest_folder": os.path.join(experiment, "manifests"),
               "data_folder": data_folder}
    rows = [row for split in ("valid", "test") for row in read_manifest(hparams, split).values()]
    model = AgeClassifier.from_hparams(source=os.path.join(experiment, "model"),
                                       savedir=os.path.join(experiment, "model", ".loaded"))
    ages = dict(model.classify_age_files([row["wav"] for row in rows], progress=False))
    return ([ages[i]["years"] for i in range(len(rows))],
            [float(row["age"]) for row in rows], [row["spk_id"] for row in rows])


def split_coverages(predicted, true, speakers, coverage, splits, seed=0):
    """Mean speaker and utterance coverage and widths over random half splits of the speakers."""
    rng = np.random.default_rng(seed)
    names = sorted(set(speakers))
    predicted, true, speakers = np.asarray(predicted), np.asarray(true), np.asarray(speakers)
    results = []
    for _ in range(splits):
        calibration = set(rng.permutation(names)[: len(names) // 2])
        inside = np.array([s in calibration for s in speakers])
        means = {part: speaker_means(predicted[mask], true[mask], speakers[mask]).values()
                 for part, mask in (("cal", inside), ("test", ~inside))}
        width = conformal_half_width([abs(p - t) for p, t in means["cal"]], coverage)
        utterance_width = speaker_weighted_half_width(
            np.abs(predicted[inside] - true[inside]), list(speakers[inside]), coverage)
        results.append((
            interval_coverage([p for p, _ in means["test"]], [t for _, t in means["test"]], width),
            interval_coverage(predicted[~inside], true[~inside], utterance_width),
            width, utterance_width))
    return np.mean(results, axis=0), len(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--coverage", type=float, default=0.8)
    parser.add_argument("--splits", type=int, default=2000)
    args = parser.parse_args()
    print("| experiment | held-out speakers | coverage, speakers | coverage, utterances "
          "| half-width, speakers | half-width, utterances |")
    print("|---|---:|---:|---:|---:|---:|")
    for experiment in args.experiments:
        (speaker_cov, utterance_cov, width, utterance_width), n = split_coverages(
            *held_out_predictions(experiment, args.data_folder), args.coverage, args.splits)
        print(f"| {experiment} | {n} | {speaker_cov:.3f} | {utterance_cov:.3f} "
              f"| {width:.1f} | {utterance_width:.1f} |")


if __name__ == "__main__":
    main()
