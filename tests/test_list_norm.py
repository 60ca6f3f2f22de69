"""List normalisation: the statistics a list's cosines are centred and standardised by.

References: the mean of the non-failed embeddings, and the mean and population
standard deviation of the cosines of every pair of files, written out pair by pair.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from dmha_modules.scoring import list_norm
from dmha_modules.scoring.calibration import Calibration, fit_calibration
from dmha_modules.scoring.list_norm import (
    MIN_FILES_TO_CENTRE,
    pairwise_cosine_stats,
    scoring_centre,
    scoring_stats,
)
from dmha_modules.scoring.metrics import cosine_scores, trial_pairs


def direct_stats(rows):
    """Mean and population sd of cos(a, b) = a.b / (|a| |b|) over every pair of rows."""
    cosines = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
               for a, b in itertools.combinations(rows, 2)]
    return np.mean(cosines), np.std(cosines)


def test_scoring_centre_is_the_files_mean_or_the_stored_one():
    rng = np.random.default_rng(0)
    calibration = Calibration({"score": 1.0}, 0.0, centre=[9.0, 9.0, 9.0])
    many = torch.from_numpy(rng.normal(size=(MIN_FILES_TO_CENTRE + 1, 3)))
    many[4] = math.nan  # a file that failed
    centre, source = scoring_centre(calibration, many)
    good = np.delete(many.numpy(), 4, axis=0)
    np.testing.assert_allclose(centre.numpy(), good.sum(axis=0) / len(good), rtol=1e-12)
    assert source == f"the mean of these {MIN_FILES_TO_CENTRE} files"
    centre, source = scoring_centre(calibration, many[:MIN_FILES_TO_CENTRE])  # one is NaN
    assert centre.tolist() == [9.0, 9.0, 9.0] and "development list's mean" in source
    with pytest.raises(ValueError, match="centre has 3 values, the model's embeddings 2"):
        scoring_centre(calibration, many[:, :2])


def test_pairwise_cosine_stats_match_the_direct_formula():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(9, 5)) + 0.5
    embeddings = torch.from_numpy(np.vstack([rows[:4], np.full((1, 5), np.nan), rows[4:]]))
    mean, sd = pairwise_cosine_stats(embeddings.float())
    expected_mean, expected_sd = direct_stats(rows)
    assert mean == pytest.approx(expected_mean, abs=1e-6)
    assert sd == pytest.approx(expected_sd, abs=1e-6)


def test_a_large_list_takes_the_statistics_of_a_subset(monkeypatch):
    rng = np.random.default_rng(2)
    rows = torch.from_numpy(rng.normal(size=(400, 8)) + 0.3)
    full = direct_stats(rows.numpy())
    monkeypatch.setattr(list_norm, "MAX_FILES_FOR_STATS", 120)
    subset = pairwise_cosine_stats(rows)
    assert subset == pairwise_cosine_stats(rows)  # seeded: the same subset every time
    assert subset != pytest.approx(list(full), abs=1e-9)  # not all 400 files
    assert subset == pytest.approx(list(full), abs=0.03)


@pytest.mark.parametrize("rows, words", [
    (torch.eye(3)[:2], "at least 3 files, got 2"),
    (torch.tensor([[1.0, 2.0], [math.nan, 0.0], [2.0, 4.0]]), "at least 3 files, got 2"),
    (torch.ones(4, 3), "do not vary"),
])
def test_pairwise_cosine_stats_refuse_what_they_cannot_standardise_by(rows, words):
    with pytest.raises(ValueError, match=words):
        pairwise_cosine_stats(rows)


def test_scoring_stats_are_the_files_or_the_stored_ones():
    rng = np.random.default_rng(3)
    calibration = Calibration({"score": 1.0}, 0.0, score_stats=[0.5, 0.25])
    many = torch.from_numpy(rng.normal(size=(MIN_FILES_TO_CENTRE, 4)))
    stats, source = scoring_stats(calibration, many)
    np.testing.assert_allclose(stats, direct_stats(many.numpy()), atol=1e-9)
    assert source == f"the cosines between all pairs of these {MIN_FILES_TO_CENTRE} files"
    many[0] = math.nan
    stats, source = scoring_stats(calibration, many)
    assert stats == [0.5, 0.25] and "development list's cosine statistics" in source


def corpus(rng, speakers, scale, offset, per_speaker=12):
    """Utterances of new speakers: a voice vector each plus noise, both scaled per dimension
    by ``scale`` (the directions the model spreads this corpus's voices along), shifted by
    ``offset`` (what the corpus shares)."""
    voices = rng.normal(size=(speakers, len(scale))) * scale
    labels = np.repeat(np.arange(speakers), per_speaker)
    noise = 0.7 * rng.normal(size=(len(labels), len(scale))) * scale
    return voices[labels] + noise + offset, labels


def list_scores(embeddings, labels, standardised):
    """Every pair's cosine of the embeddings centred on their mean, standardised by their
    pairs' statistics if asked; the same-speaker flags."""
    embeddings = torch.from_numpy(embeddings)
    embeddings = embeddings - embeddings.mean(dim=0)
    pairs = torch.tensor([(i, j) for i, j, _ in trial_pairs(labels.tolist())])
    scores = cosine_scores(embeddings, pairs).numpy().astype(np.float64)
    if standardised:
        mean, sd = direct_stats(embeddings.numpy())
        scores = (scores - mean) / sd
    return scores, labels[pairs[:, 0]] == labels[pairs[:, 1]]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standardised_cosines_keep_the_false_accept_rate_on_another_corpus(seed):
    """Calibrated at a 5 % FAR on one corpus, measured on a corpus with another offset whose
    voices spread along fewer directions (its impostor cosines spread wider): centred
    cosines accept about three times the target, standardised ones stay within 1.5."""
    rng = np.random.default_rng(seed)
    development, dev_labels = corpus(rng, 40, np.ones(16), 0.0)
    narrow = np.where(np.arange(16) < 4, 1.0, 0.3)
    other, other_labels = corpus(rng, 40, narrow, 1.5)
    rates = {}
    for standardised in (False, True):
        scores, same = list_scores(development, dev_labels, standardised)
        fitted = fit_calibration(scores, same)
        fitted = fitted.with_operating_point(fitted.llrs(scores)[~same], target_far=0.05)
        scores, same = list_scores(other, other_labels, standardised)
        rates[standardised] = float(np.mean(fitted.llrs(scores)[~same] > fitted.threshold))
    assert 0.035 <= rates[True] <= 0.075
    assert rates[False] > 2.5 * 0.05
