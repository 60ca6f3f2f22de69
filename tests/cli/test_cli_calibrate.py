"""``dmha calibrate`` and the calibrated ``dmha verify`` / ``dmha score``.

References: SpeechBrain's own embeddings (``reference``), the logistic
regression objective minimised by a derivative-free search and Cllr written
out (``tests.test_calibration``), durations read by soundfile here.
"""

import json
import math
import re
import shutil

import numpy as np
import pytest
import soundfile
from scipy.optimize import minimize
from tests.cli.cli_helpers import cosine, run_cli
from tests.cli.test_cli_score import PAIRS, SPEAKER_OF, trial_lines
from tests.test_calibration import direct_cllr, direct_objective, reference_pav_llrs

LABELS = np.array([SPEAKER_OF[e] == SPEAKER_OF[t] for e, t in PAIRS], dtype=int)


@pytest.fixture
def model(models, tmp_path):
    """A copy of the session's speaker model folder, which ``calibrate`` writes into."""
    return shutil.copytree(models["speaker"], tmp_path / "model")


@pytest.fixture
def trials(tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text("\n".join(trial_lines("kaldi")) + "\n", encoding="utf-8")
    return path


def reference_embeddings(reference, audio, centre_on=None):
    """SpeechBrain's embedding of each file, less the mean of those of ``centre_on`` (file
    names) when given."""
    embeddings = {name: np.asarray(reference("speaker", audio / name), dtype=np.float64)
                  for name in {name for pair in PAIRS for name in pair}}
    if centre_on is not None:
        mean = np.mean([embeddings[name] for name in centre_on], axis=0)
        embeddings = {name: vector - mean for name, vector in embeddings.items()}
    return embeddings


def reference_scores(reference, audio, centre_on=None, pairs=PAIRS):
    embeddings = reference_embeddings(reference, audio, centre_on)
    return np.array([cosine(embeddings[e], embeddings[t]) for e, t in pairs])


def pair_stats(embeddings, files):
    """Mean and population sd of the cosines of every pair of ``files``."""
    cosines = [cosine(embeddings[a], embeddings[b])
               for i, a in enumerate(files) for b in files[i + 1:]]
    return np.mean(cosines), np.std(cosines)


# The development list's files: the mean dmha calibrate centres on by default.
DEV_FILES = sorted({name for pair in PAIRS for name in pair})
CENTRINGS = {"mean": DEV_FILES, "none": None}


def calibrate(capsys, model, trials, audio, *extra, status=0):
    """``dmha calibrate``; the session's 6 files give 3 distinct target trials at most, fewer
    than the default minimum, hence ``--min_trials 3``."""
    code, stdout, stderr = run_cli(capsys, "calibrate", "--model", model, "--trials", trials,
                                   "--data_root", audio, "--no_progress", "--min_trials", "3",
                                   *extra)
    assert code == status, stderr
    return stdout, stderr


def stored(model):
    return json.loads((model / "calibration.json").read_text(encoding="utf-8"))


def reference_fit(features, prior=0.5):
    return minimize(direct_objective, np.zeros(features.shape[1] + 1),
                    args=(features, LABELS, prior), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000,
                             "maxfev": 40000}).x


@pytest.mark.parametrize("centring", sorted(CENTRINGS))
def test_calibrate_stores_the_fitted_map_and_the_bayes_threshold(model, trials, audio,
                                                                 reference, capsys, centring):
    stdout, _ = calibrate(capsys, model, trials, audio, "--p_target", "0.05",
                          "--centring", centring, "--standardising", "none")
    scores = reference_scores(reference, audio, CENTRINGS[centring])
    content = stored(model)
    assert content["format"] == "dmha-calibration/1" and content["score"] == "cosine"
    if centring == "none":
        assert content["centre"] is None and "*cosine" in stdout
    else:
        mean = np.mean(list(reference_embeddings(reference, audio).values()), axis=0)
        np.testing.assert_allclose(content["centre"], mean, atol=1e-5)
        assert "*centred_cosine" in stdout
    a, b = reference_fit(scores[:, None])
    assert content["weights"]["score"] == pytest.approx(a, abs=2e-3)
    assert content["offset"] == pytest.approx(b, abs=2e-3)
    assert content["threshold"] == pytest.approx(math.log(0.95 / 0.05), rel=1e-12)
    assert content["operating_point"] == {"p_target": 0.05}
    llrs = content["weights"]["score"] * scores + content["offset"]
    development = content["development"]
    assert (development["n_target"], development["n_nontarget"]) == (3, 12)
    assert development["cllr"] == pytest.approx(direct_cllr(llrs, LABELS), abs=1e-5)
    assert development["cllr_of_cosine"] == pytest.approx(direct_cllr(scores, LABELS), abs=1e-5)
    minimum = direct_cllr(reference_pav_llrs(scores.round(5).tolist(), LABELS.tolist()), LABELS)
    assert development["min_cllr"] == pytest.approx(minimum, abs=1e-4)
    printed = re.search(r"Cllr (\d\.\d{4}) minCllr (\d\.\d{4})", stdout)
    assert float(printed[1]) == pytest.approx(direct_cllr(llrs, LABELS), abs=6e-5)
    assert "Bayes, p_target 0.05" in stdout
    assert (model / "calibration_det.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_at_a_target_false_accept_rate(model, trials, audio, reference, capsys,
                                                 tmp_path):
    plot = tmp_path / "det.png"
    stdout, _ = calibrate(capsys, model, trials, audio, "--target_far", "0.25", "--plot", plot,
                          "--standardising", "none")
    content = stored(model)
    scores = reference_scores(reference, audio, DEV_FILES)
    llrs = content["weights"]["score"] * scores + content["offset"]
    # 3 of the 12 development non-targets above the threshold, which sits on the 4th
    # (up to the float32 rounding of the embeddings).
    assert (llrs[LABELS == 0] > content["threshold"] + 1e-5).sum() == 3
    assert content["development"]["false_accept_rate"] == 0.25
    assert "false accepts 25.00%" in stdout and "target FAR 25%" in stdout
    assert plot.exists() and not (model / "calibration_det.png").exists()


def test_calibration_with_durations(model, trials, audio, reference, capsys):
    calibrate(capsys, model, trials, audio, "--p_target", "0.1", "--quality", "duration",
              "--centring", "none", "--standardising", "none")
    content = stored(model)
    assert content["quality"] == ["duration"]
    seconds = {}
    for name in {name for pair in PAIRS for name in pair}:
        info = soundfile.info(audio / name)
        seconds[name] = info.frames / info.samplerate
    shorter = np.log([min(seconds[e], seconds[t]) for e, t in PAIRS])
    longer = np.log([max(seconds[e], seconds[t]) for e, t in PAIRS])
    features = np.column_stack([reference_scores(reference, audio), shorter, longer])
    expected = reference_fit(features)
    weights = content["weights"]
    ours = [weights["score"], weights["log_shorter_seconds"], weights["log_longer_seconds"],
            content["offset"]]
    # 15 trials: far from separable only in a few directions, so a looser match.
    assert direct_objective(np.array(ours), features, LABELS, 0.5) <= \
        direct_objective(expected, features, LABELS, 0.5) + 1e-6

    # dmha verify applies the same terms, from the two files' durations.
    enrol, test = PAIRS[0]
    llr = (weights["score"] * cosine(reference("speaker", audio / enrol),
                                     reference("speaker", audio / test))
           + weights["log_shorter_seconds"] * min(math.log(seconds[enrol]),
                                                  math.log(seconds[test]))
           + weights["log_longer_seconds"] * max(math.log(seconds[enrol]),
                                                 math.log(seconds[test]))
           + content["offset"])
    _, stdout, _ = run_cli(capsys, "verify", "--model", model, audio / enrol, audio / test)
    assert float(re.search(r"^llr (-?\d+\.\d{4})", stdout)[1]) == pytest.approx(llr, abs=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("centring", sorted(CENTRINGS))
def test_verify_with_a_calibrated_model_decides_the_llr(model, trials, audio, reference, capsys,
                                                        centring):
    """Two files are too few to centre on: verify centres on the development list's mean."""
    calibrate(capsys, model, trials, audio, "--p_target", "0.01", "--centring", centring,
              "--standardising", "none")
    content = stored(model)
    embeddings = reference_embeddings(reference, audio, CENTRINGS[centring])
    for enrol, test in PAIRS[:4]:
        score = cosine(embeddings[enrol], embeddings[test])
        llr = content["weights"]["score"] * score + content["offset"]
        status, stdout, _ = run_cli(capsys, "verify", "--model", model, audio / enrol,
                                    audio / test)
        assert status == 0
        match = re.search(r"^llr (-?\d+\.\d{4}) threshold (-?\d+\.\d{4}) \(Bayes, p_target "
                          r"0\.01\): (same speaker|different speakers)$", stdout, re.M)
        assert match, stdout
        assert float(match[1]) == pytest.approx(llr, abs=2e-4)
        assert float(match[2]) == pytest.approx(math.log(99), abs=1e-4)
        assert match[3] == ("same speaker" if llr > math.log(99) else "different speakers")
        assert f"cosine {score:.3f}" in stdout.replace(f"{score:.4f}", f"{score:.3f}")
    # --threshold is then an LLR threshold.
    status, stdout, _ = run_cli(capsys, "verify", "--model", model, audio / enrol, audio / test,
                                "--threshold", str(llr - 0.01))
    assert f"threshold {llr - 0.01:.4f} (--threshold): same speaker" in stdout


@pytest.mark.parametrize("centring", sorted(CENTRINGS))
def test_score_with_a_calibrated_model_writes_llrs_and_decisions(model, trials, audio, reference,
                                                                 capsys, tmp_path, centring):
    calibrate(capsys, model, trials, audio, "--target_far", "0.25", "--centring", centring,
              "--standardising", "none")
    content = stored(model)
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", trials,
                                "--data_root", audio, "--out", out, "--no_progress",
                                "--plot", tmp_path / "det.png")
    assert status == 0
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    assert [tuple(row[:2]) for row in rows] == PAIRS
    # 6 files, fewer than MIN_FILES_TO_CENTRE: the development mean, here the same files'.
    scores = reference_scores(reference, audio, CENTRINGS[centring])
    llrs = content["weights"]["score"] * scores + content["offset"]
    np.testing.assert_allclose([float(row[2]) for row in rows], llrs, atol=1e-4)
    # The threshold sits on a development LLR: decided as the reference where they are
    # further apart than the float32 rounding of the embeddings.
    clear = np.abs(llrs - content["threshold"]) > 1e-4
    assert [row[3] for row, kept in zip(rows, clear) if kept] == [
        "accept" if llr > content["threshold"] else "reject" for llr in llrs[clear]]
    assert clear.sum() >= len(rows) - 1
    assert "LLRs of calibration.json" in stdout and "not calibrated" not in stdout
    match = re.search(r"Cllr (\d\.\d{4}) minCllr (\d\.\d{4})", stdout)
    assert float(match[1]) == pytest.approx(direct_cllr(llrs, LABELS), abs=6e-5)
    assert "(target FAR 25%): false accepts 25.00%" in stdout
    assert (tmp_path / "det.png").exists()
    assert ("centred on the development list's mean" in stdout) == (centring == "mean")


@pytest.mark.parametrize("standardising", ["none", "list"])
def test_score_normalises_a_list_by_its_own_files(model, trials, audio, reference, capsys,
                                                  tmp_path, monkeypatch, standardising):
    """A list of enough files is centred on its own mean, and standardised by its own cosine
    statistics, not the development list's."""
    monkeypatch.setattr("dmha_modules.scoring.list_norm.MIN_FILES_TO_CENTRE", 3)
    calibrate(capsys, model, trials, audio, "--p_target", "0.3", "--standardising", standardising)
    content = stored(model)
    files = DEV_FILES[:3]
    pairs = [(a, b) for a, b in PAIRS if a in files and b in files]
    listing = tmp_path / "eval.txt"
    listing.write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", listing,
                                "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0 and "centred on the mean of these 3 files" in stdout
    assert ("cosines standardised by the cosines between all pairs of these 3 files"
            in stdout) == (standardising == "list")
    scores = reference_scores(reference, audio, files, pairs)
    if standardising == "list":
        mean, sd = pair_stats(reference_embeddings(reference, audio, files), files)
        scores = (scores - mean) / sd
    llrs = content["weights"]["score"] * scores + content["offset"]
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose([float(row[2]) for row in rows], llrs, atol=1e-3)
    # The development list's statistics would have given other scores: the test can tell.
    other = reference_scores(reference, audio, DEV_FILES, pairs)
    if standardising == "list":
        other = (other - content["score_stats"][0]) / content["score_stats"][1]
    other = content["weights"]["score"] * other + content["offset"]
    assert np.abs(other - llrs).max() > 1e-2


def test_a_calibration_written_before_centring_scores_plain_cosines(model, trials, audio,
                                                                    reference, capsys, tmp_path):
    calibrate(capsys, model, trials, audio, "--p_target", "0.3", "--centring", "none",
              "--standardising", "none")
    content = stored(model)
    del content["centre"], content["score_stats"]
    (model / "calibration.json").write_text(json.dumps(content), encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", trials,
                                "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0 and "centred" not in stdout
    llrs = content["weights"]["score"] * reference_scores(reference, audio) + content["offset"]
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose([float(row[2]) for row in rows], llrs, atol=1e-4)


def test_a_centre_of_another_model_is_named(model, trials, audio, capsys, tmp_path):
    calibrate(capsys, model, trials, audio, "--p_target", "0.3")
    content = stored(model)
    content["centre"] = content["centre"][:-1]
    (model / "calibration.json").write_text(json.dumps(content), encoding="utf-8")
    status, _, stderr = run_cli(capsys, "verify", "--model", model, audio / PAIRS[0][0],
                                audio / PAIRS[0][1])
    assert status == 1
    assert "calibration.json: the calibration's centre has" in stderr
    assert "calibrated with another model" in stderr


def test_score_with_a_cohort_leaves_the_calibration_out(model, trials, audio, capsys, tmp_path):
    calibrate(capsys, model, trials, audio, "--p_target", "0.01")
    cohort = tmp_path / "cohort.lst"
    cohort.write_text(f"{audio / 'spk2/c.wav'}\n{audio / 'spk3/e.wav'}\n{audio / 'spk1/a.wav'}\n",
                      encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", trials,
                                "--data_root", audio, "--out", out, "--cohort", cohort,
                                "--no_progress")
    assert status == 0
    assert "calibration.json not applied" in stdout
    assert all(len(line.split()) == 3 for line in out.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize(
    "extra, text, status, words",
    [
        ([], "unlabelled", 1, "calibration needs a labelled trial list"),
        (["--target_far", "0.01"], "kaldi", 1,
         "a target false-accept rate of 0.01 needs at least 100 non-target trials, got 12"),
    ],
)
def test_calibrate_refuses_what_it_cannot_use(model, audio, tmp_path, capsys, extra, text,
                                              status, words):
    trials = tmp_path / "dev.txt"
    trials.write_text("\n".join(trial_lines(text)) + "\n", encoding="utf-8")
    if not extra:
        extra = ["--p_target", "0.01"]
    _, stderr = calibrate(capsys, model, trials, audio, *extra, status=status)
    assert words in stderr
    assert not (model / "calibration.json").exists()
    assert not (model / "calibration_det.png").exists()


def test_calibrate_needs_an_operating_point(model, trials, audio, capsys):
    with pytest.raises(SystemExit) as exit:
        run_cli(capsys, "calibrate", "--model", model, "--trials", trials)
    assert exit.value.code == 2
    assert "one of the arguments --target_far/--target-far --p_target/--p-target is required" \
        in capsys.readouterr().err


def test_calibrate_refuses_a_model_folder_whose_yaml_runs_code(model, trials, audio, capsys,
                                                               tmp_path):
    marker = tmp_path / "MARKER"
    with open(model / "hyperparams.yaml", "a", encoding="utf-8") as yaml_file:
        yaml_file.write(f'pwn: !apply:os.system ["touch {marker}"]\n')
    _, stderr = calibrate(capsys, model, trials, audio, "--p_target", "0.01", status=1)
    assert "!apply:os.system" in stderr and "--trust_model" in stderr
    assert not marker.exists() and not (model / "calibration.json").exists()


@pytest.mark.parametrize("verb", ["verify", "score"])
def test_a_broken_calibration_json_is_named(model, audio, tmp_path, capsys, verb, trials):
    (model / "calibration.json").write_text('{"format": "dmha-calibration/1"}', encoding="utf-8")
    args = ([audio / "spk1/a.wav", audio / "spk2/c.wav"] if verb == "verify" else
            ["--trials", trials, "--data_root", audio, "--out", tmp_path / "s.txt"])
    status, _, stderr = run_cli(capsys, verb, "--model", model, *args)
    assert status == 1
    assert f"dmha: {model / 'calibration.json'}: not a valid calibration" in stderr
    assert not (tmp_path / "s.txt").exists()


def test_calibrate_skips_the_trials_of_failed_files(model, audio, tmp_path, capsys):
    trials = tmp_path / "dev.txt"
    lines = list(trial_lines("voxceleb")) + ["0 spk1/a.wav missing.wav"]
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, stderr = calibrate(capsys, model, trials, audio, "--p_target", "0.01", status=1)
    assert f"dmha: skipped {audio / 'missing.wav'}: no such file" in stderr
    development = stored(model)["development"]
    assert (development["n_target"], development["n_nontarget"]) == (3, 12)


def test_score_of_an_unlabelled_list_with_a_calibrated_model_decides(model, trials, audio,
                                                                     capsys, tmp_path):
    calibrate(capsys, model, trials, audio, "--p_target", "0.3")
    unlabelled = tmp_path / "eval.txt"
    unlabelled.write_text("\n".join(trial_lines("unlabelled")) + "\n", encoding="utf-8")
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", unlabelled,
                                "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0 and "EER" not in stdout and "Cllr" not in stdout
    threshold = stored(model)["threshold"]
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(PAIRS)
    assert all(row[3] == ("accept" if float(row[2]) > threshold else "reject") for row in rows)


def test_real_speech_calibration(shared_data, model, tmp_path, capsys):
    """On LibriSpeech: the fit never does worse on its own trials than saying nothing
    (Cllr 1, the map a = b = 0), and the stored threshold accepts the target share."""
    libri = shared_data / "librispeech-test-other-10spk"
    speakers = sorted(p.name for p in libri.iterdir() if p.is_dir())[:4]
    files = [f"{s}/{f.name}" for s in speakers for f in sorted((libri / s).glob("*.flac"))[:5]]
    lines = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
             for i, a in enumerate(files) for b in files[i + 1:]]
    trials = tmp_path / "dev.txt"
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    calibrate(capsys, model, trials, libri, "--target_far", "0.1")
    development = stored(model)["development"]
    assert (development["n_target"], development["n_nontarget"]) == (40, 150)
    assert development["min_cllr"] <= development["cllr"] <= 1.0
    assert development["false_accept_rate"] == pytest.approx(0.1)


def test_standardised_calibration_in_calibrate_verify_and_score(model, trials, audio, reference,
                                                                capsys, tmp_path):
    """--standardising list (the default): the development list's cosine statistics are
    stored; verify and a list of fewer than MIN_FILES_TO_CENTRE files are standardised by
    them."""
    stdout, _ = calibrate(capsys, model, trials, audio, "--p_target", "0.3")
    content = stored(model)
    embeddings = reference_embeddings(reference, audio, DEV_FILES)
    mean, sd = pair_stats(embeddings, DEV_FILES)
    np.testing.assert_allclose(content["score_stats"], [mean, sd], atol=1e-5)
    assert "*standardised_centred_cosine" in stdout
    standardised = (reference_scores(reference, audio, DEV_FILES) - mean) / sd
    a, b = reference_fit(standardised[:, None])
    assert content["weights"]["score"] == pytest.approx(a, rel=2e-3, abs=2e-3)
    llrs = content["weights"]["score"] * standardised + content["offset"]
    enrol, test = PAIRS[0]
    status, stdout, _ = run_cli(capsys, "verify", "--model", model, audio / enrol, audio / test)
    assert status == 0 and "standardised centred cosine" in stdout
    assert float(re.search(r"^llr (-?\d+\.\d{4})", stdout)[1]) == pytest.approx(llrs[0], abs=2e-4)
    out = tmp_path / "scores.txt"
    status, stdout, _ = run_cli(capsys, "score", "--model", model, "--trials", trials,
                                "--data_root", audio, "--out", out, "--no_progress")
    assert status == 0
    assert "cosines standardised by the development list's cosine statistics" in stdout
    rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose([float(row[2]) for row in rows], llrs, atol=1e-4)
