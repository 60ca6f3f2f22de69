"""``dmha verify``: the cosine score of two files and the decision at the threshold.

The model folders here have no ``calibration.json``, as those written before
calibration existed (the calibrated ones: ``test_cli_calibrate.py``).
"""

import re
import shutil

import pytest
from tests.cli.cli_helpers import SPEAKER_THRESHOLD, cosine, run_cli

# ---------------------------------------------------------------- dmha verify

VERIFY_LINE = re.compile(r"score (-?\d+\.\d{4}) threshold (-?\d+\.\d{4}): (same speaker|"
                         r"different speakers)")


def verify(capsys, model, enrol, test, *extra):
    status, stdout, stderr = run_cli(capsys, "verify", "--model", model, enrol, test, *extra)
    assert status == 0, stderr
    score, threshold, decision = VERIFY_LINE.search(stdout).groups()
    return float(score), float(threshold), decision


def with_threshold(folder, threshold, out):
    """A copy of a model folder with another verification_threshold."""
    shutil.copytree(folder, out)
    text = (out / "hyperparams.yaml").read_text(encoding="utf-8")
    assert f"verification_threshold: {SPEAKER_THRESHOLD}\n" in text
    (out / "hyperparams.yaml").write_text(
        text.replace(f"verification_threshold: {SPEAKER_THRESHOLD}\n",
                     f"verification_threshold: {threshold}\n"), encoding="utf-8")
    return out


def test_verify_scores_and_decides_at_the_threshold(models, audio, reference, tmp_path, capsys):
    enrol, test = audio / "spk1/a.wav", audio / "spk2/d.wav"
    expected = cosine(reference("speaker", enrol), reference("speaker", test))
    assert abs(expected) < 0.98  # an informative score
    decide = {True: "same speaker", False: "different speakers"}

    score, threshold, said = verify(capsys, models["speaker"], enrol, test)
    assert score == pytest.approx(expected, abs=6e-5)
    assert threshold == SPEAKER_THRESHOLD and said == decide[expected > SPEAKER_THRESHOLD]
    # Thresholds just across the score, from the folder and from --threshold.
    other = round(expected + (0.01 if expected > SPEAKER_THRESHOLD else -0.01), 4)
    folder = with_threshold(models["speaker"], other, tmp_path / "model")
    score, threshold, said = verify(capsys, folder, enrol, test)
    assert threshold == other and said == decide[expected > other]
    assert said != decide[expected > SPEAKER_THRESHOLD]
    score, threshold, said = verify(capsys, folder, enrol, test, "--threshold",
                                    SPEAKER_THRESHOLD)
    assert threshold == SPEAKER_THRESHOLD and said == decide[expected > SPEAKER_THRESHOLD]


def test_verify_of_a_folder_without_calibration_says_so(models, audio, capsys):
    enrol, test = audio / "spk1/a.wav", audio / "spk2/d.wav"
    assert not (models["speaker"] / "calibration.json").exists()
    status, stdout, _ = run_cli(capsys, "verify", "--model", models["speaker"], enrol, test)
    assert status == 0 and VERIFY_LINE.match(stdout.splitlines()[0])
    assert stdout.splitlines()[1] == (
        "not calibrated: cosine scores (dmha calibrate stores a calibration to LLRs); the "
        "threshold is the model's EER threshold on its test speakers")
    _, stdout, _ = run_cli(capsys, "verify", "--model", models["speaker"], enrol, test,
                           "--threshold", "0.2")
    assert stdout.splitlines()[1].endswith("; the threshold is --threshold")


def test_verify_needs_a_threshold_for_an_age_model(models, audio, capsys):
    enrol, test = audio / "spk1/a.wav", audio / "spk1/b.flac"
    status, _, stderr = run_cli(capsys, "verify", "--model", models["age"], enrol, test)
    assert status == 1
    assert f"{models['age']} has no verification threshold" in stderr
    assert "--threshold" in stderr
    _, threshold, _ = verify(capsys, models["age"], enrol, test, "--threshold", "0.3")
    assert threshold == 0.3


def test_verify_of_a_bad_file_names_it(models, audio, tmp_path, capsys):
    status, _, stderr = run_cli(capsys, "verify", "--model", models["speaker"],
                                audio / "spk1/a.wav", tmp_path / "absent.wav")
    assert status == 1 and f"{tmp_path / 'absent.wav'}: no such file" in stderr
