"""End-to-end runs of recipes/train.py on a tiny generated Kaldi-style corpus."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml

from dmha_modules.io.feature_files import extract_features
from dmha_modules.inference import AgeClassifier
from dmha_modules.folders.model_folder import export_experiment
from dmha_modules.nn.models import EmbeddingModel
from tests.recipe_helpers import (
    REPO,
    assert_encoder_classifier_loads_offline,
    logged_epochs,
    recipe_command,
    run_recipe,
    scored_trials,
    write_voice,
)

# Ages spanning the four default groups; three utterances per speaker.
SPEAKER_AGES = [8, 9, 10, 11, 15, 16, 17, 18, 22, 24, 26, 28, 33, 36, 39, 42]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Kaldi data dir of 16 speakers x 3 utterances of 1.2-1.8 s, pitch rising with age."""
    root = tmp_path_factory.mktemp("corpus")
    train = root / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    scp, utt2spk, spk2age, spk2gender = [], [], [], []
    for s, age in enumerate(SPEAKER_AGES):
        spk = f"SPK{s:02d}"
        spk2age.append(f"{spk}\t{age}")
        spk2gender.append(f"{spk}\t{'mf'[s % 2]}")
        (root / "WAVE" / spk).mkdir(parents=True)
        for u in range(3):
            utt = f"{spk}_{u}"
            write_voice(root / "WAVE" / spk / f"{utt}.flac", 300 - 5 * age + 10 * u, rng)
            scp.append(f"{utt}\tWAVE/{spk}/{utt}.flac")
            utt2spk.append(f"{utt} {spk}")
    for name, lines in [
        ("wav.scp", scp),
        ("utt2spk", utt2spk),
        ("spk2age", spk2age),
        ("spk2gender", spk2gender),
    ]:
        (train / name).write_text("\n".join(lines) + "\n")
    return root


def held_out_speakers(corpus, output, **overrides):
    """The test split's speakers as the age YAML's preparation draws them."""
    with open(REPO / "hparams" / "age.yaml", encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, {"data_folder": str(corpus), "output_folder": str(output),
                                          "valid_ratio": 0.25, "test_ratio": 0.25, **overrides})
    hparams["preparations"]["kaldi"]()
    with open(Path(hparams["manifest_folder"]) / "test.csv", newline="") as file:
        return {row["spk_id"] for row in csv.DictReader(file)}


def test_split_seed_keeps_the_split_when_the_training_seed_changes(corpus, tmp_path):
    split = held_out_speakers(corpus, tmp_path / "a", seed=1986)
    assert len(split) == 4
    assert held_out_speakers(corpus, tmp_path / "b", seed=7, split_seed=1986) == split
    assert held_out_speakers(corpus, tmp_path / "c", seed=7) != split


def assert_checkpoint_reloads(output, **model_args):
    state = torch.load(
        Path(output) / "model" / "embedding_model.ckpt", weights_only=True
    )
    model = EmbeddingModel(**model_args)
    model.load_state_dict(state, strict=True)


SPEAKER_AGE_GROUPS = {"child", "teens", "twenties", "thirties+"}


@pytest.mark.slow
def test_age_recipe_end_to_end(corpus, tmp_path):
    output = tmp_path / "age"
    run_recipe(recipe_command("age.yaml", corpus, output, "--number_of_epochs=2",
                              "--gender_loss_weight=0.5"))
    metrics = json.loads((output / "test_metrics.json").read_text())
    for key in ("macro_f1", "balanced_accuracy", "accuracy", "mae_years", "gender_accuracy",
                "ece", "ece_calibrated", "interval_coverage_speakers",
                "interval_coverage_utterances"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["macro_f1"] <= 1 and metrics["mae_years"] >= 0
    assert 0 <= metrics["gender_accuracy"] <= 1 and metrics["test_speakers"] == 4
    for name in (
        "train_log.txt",
        "confusion_matrix.png",
        "embeddings_pca.png",
        "reliability_diagram.png",
        "age_calibration.json",
        "model/embedding_model.ckpt",
        "model/classifier.ckpt",
        "model/age_head.ckpt",
        "model/gender_head.ckpt",
        "model/label_encoder.ckpt",
    ):
        assert (output / name).is_file(), name
    assert logged_epochs(output) == [1, 2]
    assert_checkpoint_reloads(
        output, channels=16, heads=4, emb_dim=32, front_end="VGG4L", batch_norm=True
    )
    assert_encoder_classifier_loads_offline(output / "model", tmp_path, SPEAKER_AGE_GROUPS)
    assert_calibrated_on_validation_speakers(output, corpus)
    # dmha export keeps the calibration.
    exported, _ = export_experiment(str(output), str(tmp_path / "exported"))
    loaded = AgeClassifier.from_hparams(source=exported, savedir=str(tmp_path / "loaded"))
    for key, value in json.loads((output / "age_calibration.json").read_text()).items():
        assert getattr(loaded.hparams, key) == value, key


def assert_calibrated_on_validation_speakers(output, corpus):
    """The model folder's interval is the conformal quantile of the validation speakers'
    residuals, recomputed here from the folder's own predictions of their files."""
    ages = AgeClassifier.from_hparams(source=str(output / "model"),
                                      savedir=str(output / "loaded"))
    calibration = json.loads((output / "age_calibration.json").read_text())
    assert ages.hparams.temperature == calibration["temperature"] > 0
    assert ages.hparams.gender_classes == ["f", "m"]
    rows = list(csv.DictReader(open(output / "manifests" / "valid.csv", encoding="utf-8")))
    predicted = defaultdict(list)
    true_age = {}
    for row in rows:
        age = ages.classify_age_file(row["wav"].replace("$data_root", str(corpus)))
        assert age["gender"] in ("f", "m") and 0.5 <= age["gender_probability"] <= 1
        predicted[row["spk_id"]].append(age["years"])
        true_age[row["spk_id"]] = float(row["age"])
    residuals = sorted(abs(np.mean(predicted[s]) - true_age[s]) for s in predicted)
    n = len(residuals)
    rank = int(np.ceil((n + 1) * 0.8))  # the YAML's interval_coverage
    assert calibration["calibration_speakers"] == n == 4 and rank <= n
    assert calibration["interval_half_width_years"] == pytest.approx(
        residuals[rank - 1], abs=1e-3)
    low, high = age["years_interval"]
    assert high - age["years"] == pytest.approx(
        calibration["utterance_interval_half_width_years"])
    assert age["interval_coverage"] == 0.8


OFFLINE_VERIFY = """
import socket, sys, soundfile, torch
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket = socket.create_connection = refuse
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.inference.speaker import SpeakerRecognition
folder, savedir, wav_a, wav_b = sys.argv[1:]
classifier = EncoderClassifier.from_hparams(source=folder, savedir=savedir + "/c")
wavs = [torch.from_numpy(soundfile.read(path, dtype="float32")[0]) for path in (wav_a, wav_b)]
embeddings = [classifier.encode_batch(wav[None])[0, 0] for wav in wavs]
print(torch.nn.functional.cosine_similarity(*embeddings, dim=0).item())
print(classifier.classify_batch(wavs[0][None])[3][0])
verification = SpeakerRecognition.from_hparams(source=folder, savedir=savedir + "/v")
score, decision = verification.verify_files(wav_a, wav_b)
print(score.item(), bool(decision))
"""


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["epoch", "macro_f1"])
def test_age_recipe_tests_and_exports_the_selected_epoch(corpus, tmp_path, selection):
    """By default the last epoch (the end of the cosine schedule); else the best one by
    the validation metric named."""
    output = tmp_path / "age"
    run_recipe(recipe_command("age.yaml", corpus, output, "--number_of_epochs=3",
                              f"--selection_metric={selection}"))
    log = (output / "train_log.txt").read_text()
    f1 = [float(value) for value in re.findall(r"valid macro_f1: ([-+.e0-9]+)", log)]
    loaded = int(re.search(r"Epoch loaded: (\d+)", log)[1])
    assert len(f1) == 3
    if selection == "epoch":
        assert loaded == 3
    else:
        assert f1[loaded - 1] == max(f1)
    exported = torch.load(output / "model" / "embedding_model.ckpt", weights_only=True)
    checkpoints = sorted((output / "save").glob("CKPT*/embedding_model.ckpt"))
    matches = [ckpt for ckpt in checkpoints if all(
        torch.equal(value, exported[name])
        for name, value in torch.load(ckpt, weights_only=True).items())]
    assert len(matches) == 1
    meta = yaml.safe_load((matches[0].parent / "CKPT.yaml").read_text())
    if selection == "epoch":
        assert meta["epoch"] == 3
    else:
        assert meta["macro_f1"] == pytest.approx(max(f1), rel=1e-2)


@pytest.mark.slow
def test_speaker_recipe_end_to_end_and_export(corpus, tmp_path):
    output = tmp_path / "speaker"
    run_recipe(recipe_command("speaker.yaml", corpus, output, "--number_of_epochs=1"))
    metrics = json.loads((output / "test_metrics.json").read_text())
    assert (
        0 <= metrics["eer"] <= 1 and metrics["min_dcf"] >= 0 and metrics["trials"] > 0
    )
    # Kaldi dirs have no trial list: random pairs of the held-out test utterances.
    assert metrics["trial_list"] is None
    test_ids = {line.split(",")[0] for line in
                (output / "manifests" / "test.csv").read_text().splitlines()[1:]}
    pairs = scored_trials(output)
    assert len(pairs) == metrics["trials"] and {u for p in pairs for u in p} <= test_ids
    assert "random pairs" in (output / "model" / "model_card.md").read_text()
    for name in (
        "verification_scores.png",
        "embeddings_pca.png",
        "model/embedding_model.ckpt",
        "model/model_card.md",
    ):
        assert (output / name).is_file(), name
    assert_checkpoint_reloads(
        output, channels=16, heads=4, emb_dim=32, front_end="VGG4L", batch_norm=True
    )

    # dmha export rebuilds the model from the experiment folder, even moved.
    moved = tmp_path / "moved"
    output.rename(moved)
    exported = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "dmha_modules.cli", "export", "--experiment", str(moved),
         "--out", str(exported)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("embedding_model", "classifier"):
        recipe = torch.load(moved / "model" / f"{name}.ckpt", weights_only=True)
        export = torch.load(exported / f"{name}.ckpt", weights_only=True)
        assert recipe.keys() == export.keys()
        assert all(torch.equal(recipe[key], export[key]) for key in recipe)
    assert f"verification_threshold: {metrics['eer_threshold']}" in (
        exported / "hyperparams.yaml"
    ).read_text()

    # A fresh process without network: SpeechBrain's classes load the folder.
    wav_a, wav_b = sorted((corpus / "WAVE" / "SPK00").glob("*.flac"))[:2]
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_VERIFY, str(exported), str(tmp_path / "loaded"),
         str(wav_a), str(wav_b)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cosine, label, verify = result.stdout.splitlines()[-3:]
    score, decision = verify.split()
    # verify_files scores with SpeechBrain's default threshold 0.25.
    assert abs(float(score) - float(cosine)) < 1e-5
    assert decision == str(float(score) > 0.25)
    speakers = (moved / "save" / "label_encoder.txt").read_text()
    assert f"'{label}'" in speakers


@pytest.mark.slow
def test_age_model_starts_from_a_speaker_model(corpus, tmp_path):
    speaker = tmp_path / "speaker"
    run_recipe(recipe_command("speaker.yaml", corpus, speaker, "--number_of_epochs=1"))
    started = torch.load(speaker / "model" / "embedding_model.ckpt", weights_only=True)
    # At lr 0 training leaves the parameters where they started (BatchNorm's
    # running statistics still move, so only parameters are compared).
    age = tmp_path / "age"
    run_recipe(recipe_command("age.yaml", corpus, age, "--number_of_epochs=1", "--lr=0.0",
                              f"--init_from={speaker / 'model'}"))
    trained = torch.load(age / "model" / "embedding_model.ckpt", weights_only=True)
    parameters = [name for name, _ in
                  EmbeddingModel(channels=16, heads=4, emb_dim=32, batch_norm=True)
                  .named_parameters()]
    assert parameters and all(torch.equal(started[name], trained[name]) for name in parameters)
    # Another front-end: one message naming the checkpoint and the keys, no training.
    other = tmp_path / "other"
    result = run_recipe(recipe_command("age.yaml", corpus, other, "--front_end=VGG3L",
                                       f"--init_from={speaker / 'model'}"), expect=1)
    assert f"{speaker / 'model' / 'embedding_model.ckpt'}: init_from: " in result.stderr
    assert "key front_end." in result.stderr and "Traceback" not in result.stderr
    assert not (other / "model").exists()


@pytest.mark.parametrize("embedding, pooling_key", [
    ("ecapa", "asp.tdnn."),  # attentive statistics pooling
    ("ecapa_dmha", "asp.pooling.head_attention"),  # the YAMLs' default: Double MHA pooling
])
@pytest.mark.slow
def test_ecapa_frame_layers_run_through_the_same_recipe(corpus, tmp_path, embedding, pooling_key):
    output = tmp_path / embedding
    ecapa = [f"--embedding={embedding}", "--ecapa_channels=[32, 32, 32, 32, 96]"]
    run_recipe(
        recipe_command("speaker.yaml", corpus, output, "--number_of_epochs=1", *ecapa)
    )
    metrics = json.loads((output / "test_metrics.json").read_text())
    assert 0 <= metrics["eer"] <= 1
    state = torch.load(output / "model" / "embedding_model.ckpt", weights_only=True)
    assert any(key.startswith("blocks.") for key in state)  # ECAPA's layer names
    assert any(key.startswith(pooling_key) for key in state), sorted(state)
    speakers = [f"SPK{s:02d}" for s in range(len(SPEAKER_AGES))]
    assert_encoder_classifier_loads_offline(output / "model", tmp_path, speakers)
    # The card lists the sizes of the model it describes, not the VGG front-end's.
    card = (output / "model" / "model_card.md").read_text()
    assert f"embedding: {embedding}" in card and "ecapa_channels:" in card
    assert "front_end:" not in card


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(corpus, tmp_path):
    output = tmp_path / "resume"
    command = recipe_command("age.yaml", corpus, output, "--number_of_epochs=3")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((output / "save").glob("CKPT*/CKPT.yaml")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert logged_epochs(output) == [1]

    run_recipe(command)
    assert logged_epochs(output) == [1, 2, 3]


DDP_WRAPPER = '''
import os, sys
sys.path.insert(0, {recipes!r})
import train
from dmha_modules.recipe.brains import DMHABrain
from dmha_modules.recipe.checkpoints import AtomicCheckpointer

rank, out = os.environ["RANK"], {out!r}
fit_batch, save_checkpoint = DMHABrain.fit_batch, AtomicCheckpointer.save_checkpoint

def recording_fit_batch(self, batch):
    with open(os.path.join(out, f"trained_ids.rank{{rank}}"), "a") as f:
        f.write("".join(i + "\\n" for i in batch.id))
    return fit_batch(self, batch)

def recording_save_checkpoint(self, *args, **kwargs):
    checkpoint = save_checkpoint(self, *args, **kwargs)
    if checkpoint is not None:
        with open(os.path.join(out, f"saved.rank{{rank}}"), "a") as f:
            f.write(str(checkpoint.path) + "\\n")
    return checkpoint

DMHABrain.fit_batch = recording_fit_batch
AtomicCheckpointer.save_checkpoint = recording_save_checkpoint
sys.argv = ["train.py"] + sys.argv[1:]
train.main()
'''


@pytest.mark.slow
def test_torchrun_two_cpu_processes_split_the_data(corpus, tmp_path):
    output, records = tmp_path / "ddp", tmp_path / "records"
    records.mkdir()
    wrapper = tmp_path / "ddp_train.py"
    wrapper.write_text(DDP_WRAPPER.format(recipes=str(REPO / "recipes"), out=str(records)))
    command = recipe_command("age.yaml", corpus, output, "--number_of_epochs=1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port=29533", str(wrapper)] + command[2:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run_recipe(command, env=env)

    ids = [set((records / f"trained_ids.rank{r}").read_text().split()) for r in (0, 1)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    train_csv = (output / "manifests" / "train.csv").read_text().splitlines()[1:]
    assert ids[0] | ids[1] <= {line.split(",")[0] for line in train_csv}
    assert (records / "saved.rank0").read_text().strip()
    assert not (records / "saved.rank1").exists()
    assert (output / "test_metrics.json").is_file()


@pytest.mark.slow
def test_age_recipe_trains_from_precomputed_features(corpus, tmp_path):
    features = tmp_path / "features"
    files = tmp_path / "files.lst"
    files.write_text("".join(f"{p.relative_to(corpus)}\n" for p in sorted(corpus.rglob("*.flac"))))
    extract_features(str(files), out_dir=str(features), data_dir=str(corpus), jobs=1)
    output = tmp_path / "age_npy"
    run_recipe(recipe_command(
        "age.yaml", corpus, output, "--number_of_epochs=1",
        "--precomputed_features=True", f"--features_folder={features}",
    ))
    metrics = json.loads((output / "test_metrics.json").read_text())
    assert 0 <= metrics["macro_f1"] <= 1
