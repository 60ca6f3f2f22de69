"""``dmha score``: trial lists, adaptive s-norm, EER and minDCF against SpeechBrain's."""

import re

import numpy as np
import pytest
import soundfile
import torch
from tests.cli.cli_helpers import AUDIO, cosine, run_cli
from speechbrain.utils.metric_stats import EER, minDCF
from tests.test_calibration import direct_cllr, reference_pav_llrs
from tests.test_inference import voice

# ---------------------------------------------------------------- dmha score

SPEAKER_OF = {name: name.split("/")[0] for name in AUDIO}
PAIRS = [(a, b) for i, a in enumerate(AUDIO) for b in list(AUDIO)[i + 1:]]


def trial_lines(kind):
    for enrol, test in PAIRS:
        same = SPEAKER_OF[enrol] == SPEAKER_OF[test]
        if kind == "voxceleb":
            yield f"{int(same)} {enrol} {test}"
        elif kind == "kaldi":
            yield f"{enrol} {test} {'target' if same else 'nontarget'}"
        else:
            yield f"{enrol}\t{test}"


def read_scores(path):
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(len(fields) == 3 for fields in lines)
    return [(e, t) for e, t, _ in lines], np.array([float(s) for *_, s in lines])


@pytest.mark.parametrize("kind", ["voxceleb", "kaldi", "unlabelled"])
def test_score_trial_lists(models, audio, reference, tmp_path, capsys, kind):
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(trial_lines(kind)) + "\n\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                trials, "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0
    assert f"{len(PAIRS)} trials scored into {out}" in stdout
    pairs, scores = read_scores(out)
    assert pairs == PAIRS
    expected = np.array([cosine(reference("speaker", audio / e), reference("speaker", audio / t))
                         for e, t in PAIRS])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert np.ptp(expected) > 0.1
    # A folder without calibration.json (as every one before calibration existed): cosines.
    assert stdout.splitlines()[0] == (
        "not calibrated: cosine scores (dmha calibrate stores a calibration to LLRs)")
    if kind == "unlabelled":
        assert "EER" not in stdout
        return
    same = np.array([SPEAKER_OF[e] == SPEAKER_OF[t] for e, t in PAIRS])
    positive, negative = torch.tensor(expected[same]), torch.tensor(expected[~same])
    eer, _ = EER(positive, negative)
    cost, _ = minDCF(positive, negative, p_target=0.01)
    match = re.search(r"EER (\d+\.\d\d)% \(threshold (-?\d+\.\d{4})\) "
                      r"minDCF\(p_target=0\.01\) (\d+\.\d{4}) Cllr (\d+\.\d{4}) "
                      r"minCllr (\d+\.\d{4})", stdout)
    assert match, stdout
    assert float(match[1]) == pytest.approx(100 * eer, abs=0.006)
    assert float(match[3]) == pytest.approx(cost / 0.01, abs=6e-5)
    # Cllr of the cosines taken as LLRs, and of their PAV-optimal map, written out.
    assert float(match[4]) == pytest.approx(direct_cllr(expected, same), abs=6e-5)
    best = direct_cllr(reference_pav_llrs(expected.round(5).tolist(), same.tolist()), same)
    assert float(match[5]) == pytest.approx(best, abs=2e-4)


def test_score_with_cohort_applies_adaptive_snorm(models, audio, reference, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(trial_lines("voxceleb")) + "\n", encoding="utf-8")
    cohort_paths = []
    for i, f0 in enumerate([95, 135, 180, 240, 300]):
        path = tmp_path / f"cohort{i}.wav"
        soundfile.write(path, voice(1.0 + 0.3 * i, 16000, f0, seed=20 + i), 16000)
        cohort_paths.append(path)
    cohort_list = tmp_path / "cohort.lst"
    cohort_list.write_text("".join(f"{p}\n" for p in cohort_paths), encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, _, _ = run_cli(capsys, "score", "--model", models["speaker"], "--trials", trials,
                           "--data_root", audio, "--out", out, "--cohort", cohort_list,
                           "--top_n", "3", "--no_progress")
    assert status == 0
    pairs, scores = read_scores(out)
    assert pairs == PAIRS

    embedding = {name: reference("speaker", audio / name) for name in AUDIO}
    cohort = [reference("speaker", path) for path in cohort_paths]

    def top_stats(name):
        best = sorted((cosine(embedding[name], c) for c in cohort), reverse=True)[:3]
        mean = sum(best) / 3
        return mean, (sum((b - mean) ** 2 for b in best) / 3) ** 0.5

    expected, raw = [], []
    for enrol, test in PAIRS:
        score = cosine(embedding[enrol], embedding[test])
        (m_e, s_e), (m_t, s_t) = top_stats(enrol), top_stats(test)
        expected.append(((score - m_e) / s_e + (score - m_t) / s_t) / 2)
        raw.append(score)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(np.array(expected) - np.array(raw)).max() > 0.5  # s-norm changed them


def test_score_skips_trials_of_failed_files(models, audio, reference, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk1/a.wav spk1/b.flac\n0 spk1/a.wav missing.wav\n"
                      "0 spk1/b.flac spk3/e.wav\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", audio, "--out", out,
                                     "--no_progress")
    assert status == 1
    assert f"dmha: skipped {audio / 'missing.wav'}: no such file" in stderr
    assert "2 trials scored" in stdout and "1 skipped for failed files" in stdout
    pairs, scores = read_scores(out)
    assert pairs == [("spk1/a.wav", "spk1/b.flac"), ("spk1/b.flac", "spk3/e.wav")]
    for (e, t), score in zip(pairs, scores):
        expected = cosine(reference("speaker", audio / e), reference("speaker", audio / t))
        assert score == pytest.approx(expected, abs=1e-5)


def test_score_with_every_trial_skipped_keeps_the_old_scores(models, audio, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk1/a.wav missing.wav\n", encoding="utf-8")
    cohort = tmp_path / "cohort.lst"
    cohort.write_text(f"{audio / 'spk2/c.wav'}\n{audio / 'spk3/e.wav'}\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    out.write_text("a b 0.5\n", encoding="utf-8")
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", audio, "--out", out, "--cohort",
                                     cohort, "--no_progress")
    assert status == 1, stderr
    assert f"dmha: {out}: not written: no input could be used" in stderr
    assert out.read_text(encoding="utf-8") == "a b 0.5\n"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1 a.wav b.wav\n1 a.wav\tb.wav c.wav\n", 2, "expected 'label enrol test'"),
        ("\na.wav b.wav target\na.wav b.wav maybe\n", 3, "expected 'label enrol test'"),
        ("a.wav\n", 1, "expected 'label enrol test'"),
    ],
)
def test_malformed_trial_lines_are_named(models, tmp_path, capsys, text, line, words):
    trials = tmp_path / "trials.txt"
    trials.write_text(text, encoding="utf-8")
    status, _, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                trials, "--out", tmp_path / "scores.txt")
    assert status == 1
    assert f"dmha: {trials}:{line}: {words}" in stderr
    assert not (tmp_path / "scores.txt").exists()


def test_mixed_and_empty_trial_lists_are_refused(models, tmp_path, capsys):
    for text, words in [("1 a.wav b.wav\na.wav c.wav\n", "some trials are labelled and some"),
                        ("\n\n", "no trials")]:
        trials = tmp_path / "trials.txt"
        trials.write_text(text, encoding="utf-8")
        status, _, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                    trials, "--out", tmp_path / "scores.txt")
        assert status == 1 and f"{trials}: {words}" in stderr


def test_real_speech_score(shared_data, models, tmp_path, capsys):
    libri = shared_data / "librispeech-test-other-10spk"
    speakers = sorted(p.name for p in libri.iterdir() if p.is_dir())[3:7]
    files = [f"{s}/{f.name}" for s in speakers for f in sorted((libri / s).glob("*.flac"))[:3]]
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
             for i, a in enumerate(files) for b in files[i + 1:]]
    trials = tmp_path / "trials.txt"
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                     trials, "--data_root", libri, "--out", out, "--no_progress")
    assert status == 0, stderr
    pairs, scores = read_scores(out)
    assert len(pairs) == len(lines) == 66
    assert pairs == [tuple(line.split()[1:]) for line in lines]
    assert np.isfinite(scores).all() and (np.abs(scores) <= 1 + 1e-6).all()
    eer = float(re.search(r"EER (\d+\.\d\d)%", stdout)[1])
    assert 0 <= eer <= 100
