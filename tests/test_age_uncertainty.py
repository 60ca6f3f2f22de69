"""Temperature, expected calibration error and conformal age intervals against direct references."""

import math

import numpy as np
import pytest
import torch

from dmha_modules.age.uncertainty import (
    calibrate_age,
    conformal_half_width,
    expected_calibration_error,
    fit_temperature,
    interval_coverage,
    speaker_means,
    speaker_weighted_half_width,
)


def direct_ece(probabilities, labels, bins=15):
    """Guo et al.'s ECE, written out: bins (m-1)/M < confidence <= m/M, confidence 0 in bin 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    total = 0.0
    for m in range(1, bins + 1):
        members = [
            i for i, row in enumerate(probabilities)
            if (m - 1) / bins < row.max() <= m / bins or (m == 1 and row.max() == 0)
        ]
        if not members:
            continue
        accuracy = np.mean([probabilities[i].argmax() == labels[i] for i in members])
        confidence = np.mean([probabilities[i].max() for i in members])
        total += len(members) / len(probabilities) * abs(accuracy - confidence)
    return total


def test_ece_matches_the_direct_definition():
    rng = np.random.default_rng(0)
    for n_classes in (2, 4, 7):
        logits = rng.normal(scale=3.0, size=(300, n_classes))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = rng.integers(0, n_classes, size=300)
        ours = expected_calibration_error(torch.from_numpy(probabilities), torch.from_numpy(labels))
        assert ours == pytest.approx(direct_ece(probabilities, labels), abs=1e-12)


def test_ece_of_perfectly_calibrated_and_overconfident_rows():
    # Confidence 0.75 in every row and 3 of 4 right: calibrated.
    probabilities = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probabilities, torch.tensor([0, 0, 0, 1])) == pytest.approx(0)
    # Confidence 1.0 and half right: off by one half.
    probabilities = torch.tensor([[1.0, 0.0]] * 4)
    assert expected_calibration_error(probabilities, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.5)


def nll(logits, labels, temperature):
    scaled = logits / temperature
    log_z = np.log(np.exp(scaled - scaled.max(axis=1, keepdims=True)).sum(axis=1)) \
        + scaled.max(axis=1)
    return float(np.mean(log_z - scaled[np.arange(len(labels)), labels]))


@pytest.mark.slow
def test_temperature_minimises_the_nll_and_recovers_the_true_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(5000, 4))
    true_temperature = 2.5
    probabilities = np.exp(logits / true_temperature)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    # Labels drawn from those probabilities (inverse CDF).
    labels = (rng.random((5000, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    fitted = fit_temperature(torch.from_numpy(logits), torch.from_numpy(labels))
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 601))
    best = grid[np.argmin([nll(logits, labels, t) for t in grid])]
    assert fitted == pytest.approx(best, rel=0.01)
    # The AM-Softmax scale multiplies the scores before the temperature divides them.
    assert fit_temperature(torch.from_numpy(logits / 30), torch.from_numpy(labels),
                           scale=30.0) == pytest.approx(fitted, rel=1e-3)


def test_conformal_half_width_is_the_ceil_n_plus_one_c_th_residual():
    residuals = [7.0, 1.0, 4.0, 2.0, 9.0, 3.0, 5.0, 8.0, 6.0]  # n = 9
    for coverage, rank in ((0.5, 5), (0.8, 8), (0.9, 9)):
        assert conformal_half_width(residuals, coverage) == sorted(residuals)[rank - 1]
    # ceil(10 * 0.95) = 10 > 9: too few residuals for 95 %.
    assert conformal_half_width(residuals, 0.95) is None
    assert conformal_half_width([], 0.8) is None


def test_conformal_interval_covers_new_units_at_the_nominal_rate():
    # Exchangeable residuals: over many calibration/test draws the coverage of a
    # new unit lies in [c, c + 1 / (n + 1)] (Vovk; Lei et al. 2018).
    rng = np.random.default_rng(2)
    n, coverage, trials = 12, 0.8, 4000
    covered = 0
    for _ in range(trials):
        residuals = np.abs(rng.standard_t(3, size=n + 1))
        width = conformal_half_width(residuals[:n], coverage)
        covered += residuals[n] <= width
    rate = covered / trials
    upper = math.ceil((n + 1) * coverage) / (n + 1)
    assert coverage - 0.02 <= rate <= upper + 0.02


def test_speaker_weighted_width_counts_each_speaker_once():
    # One utterance per speaker: the plain conformal width.
    residuals = [5.0, 1.0, 3.0, 2.0, 4.0]
    speakers = ["a", "b", "c", "d", "e"]
    assert speaker_weighted_half_width(residuals, speakers, 0.5) == conformal_half_width(
        residuals, 0.5)
    # A speaker with many small residuals weighs as much as one with one large:
    # n = 2, level ceil(3 * 0.6) / 2 = 1 -> the largest residual, not the 60 % one.
    residuals = [0.1] * 9 + [10.0]
    speakers = ["many"] * 9 + ["one"]
    assert speaker_weighted_half_width(residuals, speakers, 0.6) == 10.0
    assert speaker_weighted_half_width(residuals, speakers, 0.8) is None


def test_speaker_means_and_coverage():
    means = speaker_means([10, 20, 30, 31], [12, 12, 35, 35], ["a", "a", "b", "b"])
    assert means == {"a": (15.0, 12.0), "b": (30.5, 35.0)}
    assert interval_coverage([15.0, 30.5], [12.0, 35.0], 4.0) == 0.5


def test_calibrate_age_keeps_what_the_model_folder_needs():
    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    predicted = [10.0, 14.0, 30.0, 40.0]
    true = [11.0, 11.0, 33.0, 45.0]
    speakers = ["a", "a", "b", "c"]
    calibration = calibrate_age(scores, labels, predicted, true, speakers, 0.5)
    # Speaker residuals |12 - 11|, |30 - 33|, |40 - 45|: ceil(4 * 0.5) = 2nd smallest.
    assert calibration["interval_half_width_years"] == 3.0
    assert calibration["calibration_speakers"] == 3
    assert calibration["interval_coverage"] == 0.5
    assert calibration["temperature"] == pytest.approx(fit_temperature(scores, labels))
    # Utterance residuals 1 (a), 3 (a), 3 (b), 5 (c), speakers weighing 1 each.
    assert calibration["utterance_interval_half_width_years"] == 3.0
    groups_only = calibrate_age(scores, labels, None, None, speakers, 0.5)
    assert "interval_half_width_years" not in groups_only and "temperature" in groups_only
