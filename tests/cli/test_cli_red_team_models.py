"""Red team, the models' side (issue 26, items 6-10): broken weights, ages, calibrations.

What a user sees through the real command line: NaN weights refused where a
model folder is written and where one is loaded; sane, ordered ages of a
10-minute file, computed as the mean of its chunks' embeddings (the
reference: SpeechBrain's own ``EncoderClassifier`` on the chunks); a
calibration refused on another model; contradictory, self-paired, repeated
and too few development trials; a ``calibration.json`` read strictly.
"""

import csv
import json
import logging
import shutil

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.inference.classifiers import EncoderClassifier
from tests.cli.cli_helpers import AGE_GROUPS, AUDIO, GROUP_CENTRES, KWARGS, reference_wav, run_cli
from tests.cli.conftest import calibrated_modules, encoder
from tests.cli.test_cli_model_folders import model_verbs
from tests.cli.test_cli_red_team import dmha_lines
from tests.cli.test_cli_score import trial_lines
from tests.test_inference import voice

from dmha_modules.folders.model_folder import write_model_folder
from dmha_modules.folders.safety import ModelFolderError, read_checkpoint

SPEC = ("dmha_modules.nn.models.EmbeddingModel", KWARGS)
AGE_DECODING = dict(group_posteriors="softmax", score_scale=1.0, group_centres=GROUP_CENTRES)


def first_float_tensor(path):
    state = torch.load(path, weights_only=True)
    return state, next(key for key, value in state.items() if value.is_floating_point())


# ---------------------------------------------------------------- 6: non-finite weights


@pytest.mark.parametrize("verb", ["embed", "age", "verify", "score", "calibrate", "export"])
def test_every_verb_that_loads_a_model_refuses_nan_weights(models, audio, tmp_path, capsys,
                                                           verb):
    if verb == "export":
        pytest.importorskip("onnx")
    name, args = model_verbs(models, audio, tmp_path)[verb]
    folder = shutil.copytree(models[name], tmp_path / "model")
    path = folder / "embedding_model.ckpt"
    state, key = first_float_tensor(path)
    state[key].view(-1)[0] = float("nan")
    torch.save(state, path)
    status, _, stderr = run_cli(capsys, verb, "--model", folder, *args)
    assert status == 1
    assert dmha_lines(stderr) == [f"dmha: {path}: refused: tensor {key} holds 1 NaN or "
                                  f"infinite value of {state[key].numel()} (a broken model: "
                                  "its outputs would be NaN)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "trials.txt"]


def test_a_model_folder_with_infinite_weights_is_never_written(tmp_path):
    """What import-original, export and the recipe's model/ write through."""
    modules = calibrated_modules(0, 3)
    with torch.no_grad():
        modules["classifier"].weight[0, :2] = float("inf")
    folder = tmp_path / "model"
    with pytest.raises(ModelFolderError) as error:
        write_model_folder(str(folder), modules, SPEC, encoder(["a", "b", "c"]),
                           torch.from_numpy(voice(1.0, 16000, 140)))
    assert str(error.value).startswith(
        f"{folder / 'classifier.ckpt'}: refused: tensor weight holds 2 NaN or infinite values")
    assert list(tmp_path.iterdir()) == []


def test_a_training_checkpoint_with_nan_weights_is_refused_with_its_name(tmp_path):
    """``dmha export --experiment`` reads the training checkpoints so."""
    path = tmp_path / "embedding_model.ckpt"
    torch.save({"ok": torch.ones(3), "norm.running_var": torch.tensor([1.0, float("nan")])},
               path)
    with pytest.raises(ModelFolderError, match=f"^{path}: refused: tensor norm.running_var "):
        read_checkpoint(str(path))


# ---------------------------------------------------------------- 7: ages of long files


def long_voice(path, seconds_each=10.0, parts=60, extra=0.5):
    """Ten minutes and a half-second of speech whose pitch changes every ten seconds."""
    wav = np.concatenate([voice(seconds_each, 16000, 90 + 4 * i, seed=i) for i in range(parts)]
                         + [voice(extra, 16000, 200, seed=99)])
    soundfile.write(path, wav, 16000, subtype="FLOAT")
    return path


def reference_years(folder, wav, tmp_path):
    """The years head's output, unclipped, for the mean SpeechBrain embedding of the fewest
    equal chunks of at most 10 s of ``wav`` (the whole of a shorter one)."""
    model = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "sb"))
    count = -(-len(wav) // 160000)
    chunks = wav[: count * (len(wav) // count)].reshape(count, -1)
    with torch.no_grad():
        embedding = torch.cat([model.encode_batch(part) for part in chunks.split(8)]).mean(0)
        return float(model.mods.age_head(embedding[None]))


def age_rows(capsys, folder, out, *files):
    status, _, stderr = run_cli(capsys, "age", "--model", folder, "--out", out,
                                "--no_progress", *files)
    assert status == 0, stderr
    with open(out, encoding="utf-8", newline="") as table:
        return {row["path"]: row for row in csv.DictReader(table)}


@pytest.mark.slow
def test_a_ten_minute_file_gets_the_mean_age_of_its_chunks(models, tmp_path, capsys):
    long_file = long_voice(tmp_path / "long.wav")
    rows = age_rows(capsys, models["age"], tmp_path / "ages.csv", long_file)
    expected = reference_years(models["age"], reference_wav(long_file), tmp_path)
    assert float(rows[str(long_file)]["age_years"]) == pytest.approx(expected, abs=0.01)


@pytest.mark.slow
def test_years_are_clipped_to_the_training_range_and_the_interval_ordered(audio, tmp_path,
                                                                          capsys):
    """A years head far off the training ages (as one extrapolating from a long file)."""
    modules = calibrated_modules(1, 4, cosine=False, age_head=True)
    modules["age_head"].set_age_stats(24.0, 300.0)
    folder = tmp_path / "model"
    decoding = dict(AGE_DECODING, years_range=[18.0, 60.0], calibration_speakers=12,
                    temperature=1.0, interval_coverage=0.8, interval_half_width_years=4.0,
                    utterance_interval_half_width_years=5.0)
    write_model_folder(str(folder), modules, SPEC, encoder(AGE_GROUPS),
                       torch.from_numpy(voice(1.0, 16000, 140)), task="age",
                       age_decoding=decoding)
    files = [long_voice(tmp_path / "long.wav"), *(audio / name for name in AUDIO)]
    rows = age_rows(capsys, folder, tmp_path / "ages.csv", *files)
    raw = [reference_years(folder, reference_wav(path), tmp_path) for path in files]
    assert min(raw) < 18 or max(raw) > 60  # the head does leave the range
    for path, expected in zip(files, raw):
        row = rows[str(path)]
        years, low, high = (float(row[key]) for key in ("age_years", "age_years_low",
                                                        "age_years_high"))
        assert years == pytest.approx(min(max(expected, 18.0), 60.0), abs=0.01)
        assert 18.0 <= low <= years <= high <= 60.0
        assert (low, high) == pytest.approx((max(years - 5, 18.0), min(years + 5, 60.0)),
                                            abs=0.01)


# ---------------------------------------------------------------- 8: calibration's model


@pytest.fixture
def calibrated(models, audio, tmp_path, capsys):
    """A copy of the speaker model calibrated on the session's trials."""
    folder = shutil.copytree(models["speaker"], tmp_path / "model")
    trials = tmp_path / "dev.txt"
    trials.write_text("\n".join(trial_lines("kaldi")) + "\n", encoding="utf-8")
    status, _, stderr = run_cli(capsys, "calibrate", "--model", folder, "--trials", trials,
                                "--data_root", audio, "--p_target", "0.3", "--min_trials", "3",
                                "--no_progress")
    assert status == 0, stderr
    return folder


def test_a_calibration_fitted_on_another_model_is_refused(calibrated, audio, tmp_path, capsys):
    files = [audio / "spk1/a.wav", audio / "spk2/c.wav"]
    status, _, stderr = run_cli(capsys, "verify", "--model", calibrated, *files)
    assert status == 0, stderr
    other = shutil.copytree(calibrated, tmp_path / "other")  # same sizes, other weights
    state, key = first_float_tensor(other / "embedding_model.ckpt")
    state[key] *= 1.01
    torch.save(state, other / "embedding_model.ckpt")
    status, stdout, stderr = run_cli(capsys, "verify", "--model", other, *files)
    assert status == 1 and "llr" not in stdout
    assert dmha_lines(stderr)[0].startswith(
        f"dmha: {other / 'calibration.json'}: fitted on another embedding model")


def test_a_calibration_without_its_model_is_used_with_a_loud_warning(calibrated, audio, capsys,
                                                                     caplog):
    path = calibrated / "calibration.json"
    content = json.loads(path.read_text(encoding="utf-8"))
    del content["embedding_model_sha256"]
    path.write_text(json.dumps(content), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        status, stdout, _ = run_cli(capsys, "verify", "--model", calibrated,
                                    audio / "spk1/a.wav", audio / "spk2/c.wav")
    assert status == 0 and stdout.startswith("llr ")
    assert any(record.levelno == logging.WARNING and str(path) in record.getMessage()
               and "does not record the model it was fitted on" in record.getMessage()
               for record in caplog.records)


# ---------------------------------------------------------------- 9: development trials


def calibrate_list(capsys, model, audio, tmp_path, lines, *extra):
    trials = tmp_path / "dev.txt"
    trials.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, stdout, stderr = run_cli(capsys, "calibrate", "--model", model, "--trials", trials,
                                     "--data_root", audio, "--p_target", "0.3",
                                     "--no_progress", *extra)
    return trials, status, stdout, stderr


@pytest.fixture
def model(models, tmp_path):
    return shutil.copytree(models["speaker"], tmp_path / "model")


def test_calibrate_refuses_self_pairs_and_contradictions_with_their_lines(model, audio,
                                                                          tmp_path, capsys):
    lines = list(trial_lines("voxceleb"))
    lines[1:1] = ["1 spk1/a.wav ./spk1/a.wav"]  # line 2
    first = lines[0].split()
    lines.append(f"{1 - int(first[0])} {first[2]} {first[1]}")  # line 1 the other way round
    trials, status, _, stderr = calibrate_list(capsys, model, audio, tmp_path, lines,
                                               "--min_trials", "3")
    assert status == 1
    assert dmha_lines(stderr) == [
        f"dmha: {trials}:2: {audio}/spk1/a.wav is paired with itself; a calibration needs "
        "trials of two different files",
        f"dmha: {trials}:{len(lines)}: contradicts line 1: {audio}/{first[2]} and "
        f"{audio}/{first[1]} labelled {1 - int(first[0])} here, {first[0]} there"]
    assert not (model / "calibration.json").exists()


def test_calibrate_counts_repeated_trials_once_and_says_so(model, audio, tmp_path, capsys):
    once = list(trial_lines("voxceleb"))
    reversed_lines = [f"{label} {b} {a}" for label, a, b in (line.split() for line in once)]
    _, status, stdout, stderr = calibrate_list(capsys, model, audio, tmp_path,
                                               once + reversed_lines + once[:4], "--min_trials",
                                               "3")
    assert status == 0, stderr
    assert f"{len(once) + 4} repeated trials (the same pair, either way round) counted once" \
        in stdout
    repeated = json.loads((model / "calibration.json").read_text(encoding="utf-8"))
    development = repeated["development"]
    assert (development["n_target"], development["n_nontarget"]) == (3, 12)
    _, status, _, stderr = calibrate_list(capsys, model, audio, tmp_path, once, "--min_trials",
                                          "3")
    assert status == 0, stderr
    single = json.loads((model / "calibration.json").read_text(encoding="utf-8"))
    assert repeated["weights"] == pytest.approx(single["weights"], rel=1e-9)
    assert repeated["offset"] == pytest.approx(single["offset"], rel=1e-9)


@pytest.mark.parametrize("extra, minimum", [([], 10), (["--quality", "duration"], 30)])
def test_calibrate_refuses_fewer_trials_than_the_stated_minimum(model, audio, tmp_path, capsys,
                                                                extra, minimum):
    lines = ["1 spk1/a.wav spk1/b.flac", "0 spk1/a.wav spk2/c.wav", "0 spk3/e.wav spk2/d.wav"]
    trials, status, _, stderr = calibrate_list(capsys, model, audio, tmp_path, lines, *extra)
    assert status == 1
    assert dmha_lines(stderr) == [
        f"dmha: {trials}: 1 target and 2 non-target trials; calibration needs at least "
        f"{minimum} of each (10 per weight of the map; --min_trials sets another minimum)"]
    assert not (model / "calibration.json").exists()


# ---------------------------------------------------------------- 10: calibration.json


VALID = {"format": "dmha-calibration/1", "score": "cosine", "weights": {"score": 2.0},
         "offset": -1.0, "threshold": 0.5, "operating_point": {"p_target": 0.3}}


@pytest.mark.parametrize("change, words", [
    ({"threshold": True}, "threshold must be a finite number in [-1e+06, 1e+06], got True"),
    ({"offset": False}, "offset must be a finite number in [-1e+06, 1e+06], got False"),
    ({"score": "plda"}, "score 'plda': a dmha calibration maps 'cosine' scores"),
    ({"weights": {"score": 2.0, "snr": 0.5}}, "weights must have exactly the keys ['score']"),
    ({"weights": {"score": 1e308}}, "weights.score must be a finite number"),
    ({"thresold": 0.5}, "unknown keys ['thresold']"),
    ({"operating_point": {"p_target": 2}}, "operating_point.p_target must be a finite number"),
    ({"prior": 1}, "prior must be in (0, 1), got 1"),
    ({"quality": ["snr"]}, "quality must be a list of distinct ['duration']"),
])
def test_calibration_json_is_read_strictly(model, audio, capsys, change, words):
    path = model / "calibration.json"
    path.write_text(json.dumps({**VALID, **change}), encoding="utf-8")
    status, stdout, stderr = run_cli(capsys, "verify", "--model", model, audio / "spk1/a.wav",
                                     audio / "spk2/c.wav")
    assert status == 1 and stdout == ""
    lines = dmha_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith(f"dmha: {path}: not a valid calibration: ")
    assert words in lines[0]


def test_a_binary_calibration_json_is_named(model, audio, capsys):
    path = model / "calibration.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    status, _, stderr = run_cli(capsys, "verify", "--model", model, audio / "spk1/a.wav",
                                audio / "spk2/c.wav")
    assert status == 1
    assert dmha_lines(stderr)[0].startswith(f"dmha: {path}: not readable JSON (not UTF-8 text")
