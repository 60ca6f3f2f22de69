"""``dmha age``: age groups, probabilities, years, intervals and gender against the saved heads."""

import csv
import os

import numpy as np
import pytest
import torch
from tests.cli.cli_helpers import AGE_GROUPS, AM_SCALE, AUDIO, EMB, GROUP_CENTRES, KWARGS, run_cli
from tests.cli.conftest import calibrated_modules, encoder
from tests.test_inference import voice

from dmha_modules.nn.heads import AgeRegressionHead, Classifier
from dmha_modules.folders.model_folder import write_model_folder

GROUP_COLUMNS = slice(4, 4 + len(AGE_GROUPS))
INTERVAL = {"calibration_speakers": 12, "temperature": 2.5, "interval_coverage": 0.8,
            "interval_half_width_years": 4.0, "utterance_interval_half_width_years": 6.5}

# ---------------------------------------------------------------- dmha age


def read_age_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def reference_ages(models, name, embeddings, cosine_classifier, scale):
    """Probabilities (N, C) and the years head's output (N,) from the saved state dicts."""
    classifier = Classifier(EMB, n_classes=len(AGE_GROUPS), hidden_size=EMB,
                            cosine=cosine_classifier)
    classifier.load_state_dict(torch.load(models[name] / "classifier.ckpt", weights_only=True))
    embeddings = torch.as_tensor(np.stack(embeddings))
    with torch.no_grad():
        probabilities = torch.softmax(scale * classifier(embeddings)[:, 0], dim=1).numpy()
        if not (models[name] / "age_head.ckpt").exists():
            return probabilities, None
        head = AgeRegressionHead(EMB)
        head.load_state_dict(torch.load(models[name] / "age_head.ckpt", weights_only=True))
        return probabilities, head(embeddings).numpy()


def check_age_rows(header, rows, names, audio, probabilities, gender=False):
    assert header == (["id", "path", "age_group", "age_years"] + [f"p_{g}" for g in AGE_GROUPS]
                      + ["age_years_low", "age_years_high"] + ["gender", "p_gender"] * gender)
    assert [row[1] for row in rows] == [str(audio / name) for name in names]
    assert [row[0] for row in rows] == [os.path.splitext(str(audio / n))[0] for n in names]
    ours = np.array([[float(p) for p in row[GROUP_COLUMNS]] for row in rows])
    np.testing.assert_allclose(ours, probabilities, rtol=0, atol=5.1e-5)
    np.testing.assert_allclose(ours.sum(axis=1), 1, rtol=0, atol=len(AGE_GROUPS) * 5e-5)
    for row, p in zip(rows, ours):
        assert row[2] == AGE_GROUPS[p.argmax()]
    assert [row[2] for row in rows] == [AGE_GROUPS[i] for i in probabilities.argmax(axis=1)]
    return ours, np.array([float(row[3]) for row in rows])


def test_age_csv_with_years_head(models, audio, reference, tmp_path, capsys):
    names = list(AUDIO)
    bad = tmp_path / "text.wav"
    bad.write_text("not audio")
    out = tmp_path / "ages.csv"
    status, stdout, stderr = run_cli(capsys, "age", "--model", models["age"], "--out", out,
                                     "--no_progress", *[audio / n for n in names[:3]], bad,
                                     *[audio / n for n in names[3:]])
    assert status == 1
    assert f"dmha: skipped {bad}: not a readable audio file" in stderr
    assert f"{len(names)} ages written to {out}; 1 files failed" in stdout
    embeddings = [reference("age", audio / name) for name in names]
    probabilities, years = reference_ages(models, "age", embeddings, False, 1.0)
    header, rows = read_age_csv(out)
    _, ours = check_age_rows(header, rows, names, audio, probabilities)
    np.testing.assert_allclose(ours, years, rtol=0, atol=5.1e-3)
    assert np.ptp(years) > 0.1  # the years depend on the audio
    assert not list(tmp_path.glob("*.tmp*"))
    # A folder written before the calibration: today's output, no interval, and said so.
    assert all(row[-2:] == ["", ""] for row in rows)
    assert f"age years without an interval: {models['age']} was not calibrated" in stdout


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The ``age`` model folder's modules (same seed), calibrated, with a gender head;
    and one whose validation speakers were too few for an interval."""
    root = tmp_path_factory.mktemp("calibrated")
    modules = calibrated_modules(1, 4, cosine=False, age_head=True)
    torch.manual_seed(5)
    modules["gender_head"] = Classifier(EMB, n_classes=2, hidden_size=EMB, cosine=False)
    decoding = dict(group_posteriors="softmax", score_scale=1.0, group_centres=GROUP_CENTRES,
                    gender_classes=["f", "m"], **INTERVAL)
    sample = torch.from_numpy(voice(1.0, 16000, 140))
    spec = ("dmha_modules.nn.models.EmbeddingModel", KWARGS)
    write_model_folder(str(root / "gender"), modules, spec, encoder(AGE_GROUPS), sample,
                       task="age", age_decoding=decoding)
    few = {**decoding, "calibration_speakers": 3, "interval_half_width_years": None,
           "utterance_interval_half_width_years": None}
    del modules["gender_head"]
    write_model_folder(str(root / "few"), modules, spec, encoder(AGE_GROUPS), sample,
                       task="age", age_decoding=few)
    return root


def test_age_with_interval_temperature_and_gender(calibrated, audio, reference, tmp_path, capsys):
    names = list(AUDIO)
    out = tmp_path / "ages.csv"
    status, stdout, _ = run_cli(capsys, "age", "--model", calibrated / "gender", "--out", out,
                                "--no_progress", *[audio / n for n in names])
    assert status == 0
    # Same embedding model and heads as the ``age`` folder's.
    embeddings = [reference("age", audio / n) for n in names]
    folder = {"gender": calibrated / "gender"}
    raw, years = reference_ages(folder, "gender", embeddings, False, 1.0)
    embeddings = torch.as_tensor(np.stack(embeddings))
    header, rows = read_age_csv(out)
    calibrated_p, ours_years = check_age_rows(header, rows, names, audio, softmax_at(
        np.log(raw), INTERVAL["temperature"]), gender=True)
    np.testing.assert_allclose(ours_years, years, rtol=0, atol=5.1e-3)
    assert calibrated_p.max(axis=1).mean() < raw.max(axis=1).mean()  # T > 1 softens
    width = INTERVAL["utterance_interval_half_width_years"]
    low_high = np.array([[float(v) for v in row[-4:-2]] for row in rows])
    np.testing.assert_allclose(low_high, np.stack(
        [np.maximum(years - width, 0), years + width], axis=1), rtol=0, atol=1.1e-2)
    head = Classifier(EMB, n_classes=2, hidden_size=EMB, cosine=False)
    head.load_state_dict(torch.load(folder["gender"] / "gender_head.ckpt", weights_only=True))
    with torch.no_grad():
        genders = torch.softmax(head(embeddings)[:, 0], dim=1).numpy()
    assert [row[-2] for row in rows] == [["f", "m"][i] for i in genders.argmax(axis=1)]
    np.testing.assert_allclose([float(row[-1]) for row in rows], genders.max(axis=1),
                               rtol=0, atol=5.1e-5)
    assert ("age_years_low..age_years_high: 80 % interval for one utterance (+-6.5 years, "
            "calibrated on 12 validation speakers)") in stdout


def softmax_at(logits, temperature):
    """Softmax of ``logits / temperature``, rows (log-probabilities are logits up to a shift)."""
    scaled = logits / temperature
    exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_age_with_too_few_calibration_speakers_says_so(calibrated, audio, tmp_path, capsys):
    out = tmp_path / "ages.csv"
    status, stdout, _ = run_cli(capsys, "age", "--model", calibrated / "few", "--out", out,
                                "--no_progress", audio / "spk1/a.wav")
    assert status == 0
    header, rows = read_age_csv(out)
    assert header[-2:] == ["age_years_low", "age_years_high"] and rows[0][-2:] == ["", ""]
    assert "3 validation speakers are too few for 80 % coverage" in stdout


def test_age_without_years_head_weights_the_group_centres(
    models, audio, reference, tmp_path, capsys
):
    names = list(AUDIO)
    out = tmp_path / "ages.csv"
    status, _, _ = run_cli(capsys, "age", "--model", models["age_centres"], "--out", out,
                           "--no_progress", *[audio / n for n in names])
    assert status == 0
    embeddings = [reference("age_centres", audio / name) for name in names]
    probabilities, years = reference_ages(models, "age_centres", embeddings, True, AM_SCALE)
    assert years is None
    header, rows = read_age_csv(out)
    ours_p, ours_years = check_age_rows(header, rows, names, audio, probabilities)
    expected = [sum(p * c for p, c in zip(row, GROUP_CENTRES)) for row in probabilities]
    np.testing.assert_allclose(ours_years, expected, rtol=0, atol=5.1e-3)
    np.testing.assert_allclose(ours_years, ours_p @ np.array(GROUP_CENTRES), rtol=0, atol=0.01)
    assert np.ptp(expected) > 0.1


def test_age_of_a_speaker_model_is_refused(models, audio, tmp_path, capsys):
    out = tmp_path / "ages.csv"
    status, _, stderr = run_cli(capsys, "age", "--model", models["speaker"], "--out", out,
                                "--no_progress", audio / "spk1/a.wav")
    assert status == 1
    assert f"{models['speaker']}: not an age model (task: speaker)" in stderr
    assert not out.exists()


def test_real_speech_age(shared_data, models, tmp_path, capsys):
    corpus = shared_data / "speechocean762"
    scp = (corpus / "train" / "wav.scp").read_text(encoding="utf-8").split("\n")[::150]
    entries = [line.split() for line in scp if line.strip()][:10]
    listing = tmp_path / "wav.scp"
    listing.write_text("".join(f"{u} {corpus / p}\n" for u, p in entries), encoding="utf-8")
    out = tmp_path / "ages.csv"
    status, _, stderr = run_cli(capsys, "age", "--model", models["age"], "--list", listing,
                                "--out", out, "--no_progress")
    assert status == 0, stderr
    header, rows = read_age_csv(out)
    assert [row[0] for row in rows] == [u for u, _ in entries]
    assert all(row[2] in AGE_GROUPS for row in rows)
    years = np.array([float(row[3]) for row in rows])
    probabilities = np.array([[float(p) for p in row[GROUP_COLUMNS]] for row in rows])
    assert np.isfinite(years).all() and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=len(AGE_GROUPS) * 5e-5)
