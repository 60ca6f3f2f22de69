"""Every source through recipes/train.py with one command: a couple of batches each.

Each test writes a small corpus in its source's own format, trains from it
without touching a YAML, and loads the resulting ``model/`` with SpeechBrain's
``EncoderClassifier``. The speaker tests check that the reported trials are
exactly those of the trial list given.
"""

import csv
import itertools
import json

import numpy as np
import pytest

from dmha_modules import cli
from dmha_modules.age.groups import COMMONVOICE_AGE_GROUPS
from dmha_modules.prepare import prepare_voxceleb
from tests.recipe_helpers import (
    assert_encoder_classifier_loads_offline,
    logged_epochs,
    recipe_command,
    run_recipe,
    scored_trials,
    write_voice,
)

ONE_EPOCH = "--number_of_epochs=1"


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_metrics(output):
    return json.loads((output / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def original_files(tmp_path_factory):
    """The original code's files, exactly as its README shows them.

    Labels files of ``audiosPath/audioN label -1`` lines, extension-less paths
    relative to a ``--train_data_dir``-style root (``train_data/``) and, for
    the valid ones, a ``--valid_data_dir``-style root (``valid_data/``).
    Labels are classes 0..3, pitch falling with the class; 4 train and 2
    valid utterances per class.
    """
    root = tmp_path_factory.mktemp("seed")
    rng = np.random.default_rng(1)
    lines = {"train": [], "valid": []}
    number = itertools.count(1)
    for label in range(4):
        for split, count in (("train", 4), ("valid", 2)):
            for _ in range(count):
                name = f"audiosPath/audio{next(number)}"
                write_voice(root / f"{split}_data" / f"{name}.wav", 260 - 40 * label, rng)
                lines[split].append(f"{name} {label} -1")
    return {
        "root": root,
        "train_labels": write_lines(root / "train_labels.txt", lines["train"]),
        "valid_labels": write_lines(root / "valid_labels.txt", lines["valid"]),
    }


@pytest.mark.slow
def test_original_age_workflow_labels_files_to_a_model(original_files, tmp_path):
    output = tmp_path / "age_labels"
    root = original_files["root"]
    run_recipe(recipe_command(
        "age.yaml", root / "train_data", output, ONE_EPOCH, "--source=labels",
        f"--train_labels={original_files['train_labels']}",
        f"--valid_labels={original_files['valid_labels']}",
        f"--valid_data_folder={root / 'valid_data'}",
        "--years_loss_weight=0",
    ))
    metrics = read_metrics(output)
    assert 0 <= metrics["macro_f1"] <= 1 and "mae_years" not in metrics
    # Labels files have no test split: the valid one is tested.
    assert metrics["test_manifest"] == str(output / "manifests" / "valid.csv")
    assert len((output / "manifests" / "valid.csv").read_text().splitlines()) == 1 + 8
    assert logged_epochs(output) == [1]
    assert_encoder_classifier_loads_offline(output / "model", tmp_path, {"0", "1", "2", "3"})


@pytest.fixture(scope="module")
def original_speaker_files(tmp_path_factory):
    """Speaker labels 0..7 (3 train, 2 valid utterances each, one root) and trial files.

    Clients: each speaker's two valid utterances; impostors: the first valid
    utterances of consecutive speakers. ``pathA pathB`` lines, extension-less.
    """
    root = tmp_path_factory.mktemp("original_speakers")
    rng = np.random.default_rng(2)
    lines = {"train": [], "valid": []}
    valid_of = {}
    number = itertools.count(1)
    for speaker in range(8):
        for split, count in (("train", 3), ("valid", 2)):
            for _ in range(count):
                name = f"audiosPath/audio{next(number)}"
                write_voice(root / f"{name}.wav", 120 + 25 * speaker, rng)
                lines[split].append(f"{name} {speaker} -1")
                if split == "valid":
                    valid_of.setdefault(speaker, []).append(name)
    clients = [f"{a} {b}" for a, b in valid_of.values()]
    impostors = [f"{valid_of[s][0]} {valid_of[(s + 1) % 8][0]}" for s in range(8)]
    return {
        "root": root,
        "train_labels": write_lines(root / "train_labels.txt", lines["train"]),
        "valid_labels": write_lines(root / "valid_labels.txt", lines["valid"]),
        "trials_clients": write_lines(root / "valid_clients.txt", clients),
        "trials_impostors": write_lines(root / "valid_impostors.txt", impostors),
        "pairs": [line.split() for line in clients + impostors],
    }


@pytest.mark.slow
def test_original_speaker_workflow_scores_its_trial_files(original_speaker_files, tmp_path):
    files = original_speaker_files
    output = tmp_path / "speaker_labels"
    run_recipe(recipe_command(
        "speaker.yaml", files["root"], output, ONE_EPOCH, "--source=labels",
        *(f"--{name}={files[name]}" for name in
          ("train_labels", "valid_labels", "trials_clients", "trials_impostors")),
    ))
    metrics = read_metrics(output)
    assert metrics["trial_list"] == [str(files["trials_clients"]), str(files["trials_impostors"])]
    assert metrics["trials"] == 16 and 0 <= metrics["eer"] <= 1
    # IDs are the paths with "--" for "/".
    expected = {tuple(path.replace("/", "--") for path in pair) for pair in files["pairs"]}
    assert scored_trials(output) == expected
    # Validation was scored on the same 16 trials.
    assert "valid trials: 16" in (output / "train_log.txt").read_text()
    card = (output / "model" / "model_card.md").read_text()
    assert "valid_clients.txt" in card and "valid_impostors.txt" in card
    assert_encoder_classifier_loads_offline(
        output / "model", tmp_path, {str(s) for s in range(8)})


@pytest.mark.slow
def test_commonvoice_release_folder_trains_its_age_groups(tmp_path):
    data = tmp_path / "cv-corpus" / "ca"
    rng = np.random.default_rng(3)
    groups = ["teens", "twenties", "thirties", "fourties"]
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale"]
    for client in range(16):
        group = groups[client % 4]
        for index in range(3):
            clip = f"common_voice_ca_{client:02d}{index}.mp3"
            # Common Voice's clips: 48 kHz MP3.
            write_voice(data / "clips" / clip, 280 - 30 * (client % 4), rng, sample_rate=48000)
            lines.append(f"client{client:02d}\t{clip}\tBon dia.\t2\t0\t{group}\tmale\t\tca")
    write_lines(data / "validated.tsv", lines)
    output = tmp_path / "age_cv"
    run_recipe(recipe_command(
        "age.yaml", data, output, ONE_EPOCH, "--source=commonvoice", "--years_loss_weight=0",
    ))
    metrics = read_metrics(output)
    assert 0 <= metrics["macro_f1"] <= 1 and "mae_years" not in metrics
    classes = (output / "save" / "label_encoder.txt").read_text()
    assert all(f"'{group}'" in classes for group in COMMONVOICE_AGE_GROUPS)
    assert_encoder_classifier_loads_offline(output / "model", tmp_path, COMMONVOICE_AGE_GROUPS)
    # dmha age on a model without ages in years: groups and probabilities, no years.
    clip = str(data / "clips" / "common_voice_ca_000.mp3")
    ages = tmp_path / "ages.csv"
    assert cli.main(["age", "--model", str(output / "model"), "--out", str(ages), clip]) == 0
    with open(ages, newline="", encoding="utf-8") as table:
        (row,) = list(csv.DictReader(table))
    assert row["age_group"] in COMMONVOICE_AGE_GROUPS and row["age_years"] == ""
    assert sum(float(row[f"p_{group}"]) for group in COMMONVOICE_AGE_GROUPS) == pytest.approx(
        1, abs=1e-3)


@pytest.fixture(scope="module")
def voxceleb(tmp_path_factory):
    """VoxCeleb-style tree of 16 speakers x 3 utterances; the last 4 speakers make the trial list.

    ``veri_test2.txt`` holds every pair of those 12 utterances, labelled.
    """
    root = tmp_path_factory.mktemp("voxceleb")
    rng = np.random.default_rng(4)
    test_utterances = []
    for speaker in range(16):
        for index in range(1, 4):
            rel = f"id{10001 + speaker}/vid{speaker}/{index:05d}.wav"
            write_voice(root / "wav" / rel, 110 + 20 * speaker, rng)
            if speaker >= 12:
                test_utterances.append(rel)
    trials = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
              for a, b in itertools.combinations(test_utterances, 2)]
    return {"root": root, "trials": write_lines(root / "veri_test2.txt", trials),
            "pairs": [line.split()[1:] for line in trials]}


def voxceleb_id(path):
    """The manifest ID of a VoxCeleb path: speaker--video--utterance."""
    return path.removesuffix(".wav").replace("/", "--")


def assert_trials_are_the_lists(output, metrics, voxceleb, trial_list):
    assert metrics["trial_list"] == [str(trial_list)]
    assert metrics["trials"] == len(voxceleb["pairs"]) == 66
    assert scored_trials(output) == {
        (voxceleb_id(a), voxceleb_id(b)) for a, b in voxceleb["pairs"]}


@pytest.mark.slow
def test_voxceleb_trains_on_dev_speakers_and_tests_on_the_trial_list(voxceleb, tmp_path):
    output = tmp_path / "speaker_vox"
    run_recipe(recipe_command(
        "speaker.yaml", voxceleb["root"], output, ONE_EPOCH, "--source=voxceleb",
        f"--trials_file={voxceleb['trials']}",
    ))
    metrics = read_metrics(output)
    assert_trials_are_the_lists(output, metrics, voxceleb, voxceleb["trials"])
    # The trial list's speakers are never trained on; validation uses held-out dev speakers.
    train = (output / "manifests" / "train.csv").read_text()
    assert not any(f"id{10001 + s}--" in train for s in range(12, 16))
    assert "valid trials: random pairs of held-out speakers" in (output / "log.txt").read_text()
    trained = (output / "save" / "label_encoder.txt").read_text()
    assert_encoder_classifier_loads_offline(
        output / "model", tmp_path,
        {f"id{10001 + s}" for s in range(12) if f"'id{10001 + s}'" in trained})


@pytest.mark.slow
def test_ready_manifests_train_without_preparation(voxceleb, tmp_path):
    prepared = tmp_path / "prepared"
    prepare_voxceleb(str(voxceleb["root"]), str(prepared), trials_file=str(voxceleb["trials"]),
                     valid_ratio=0.25, jobs=1)
    output = tmp_path / "speaker_manifests"
    run_recipe(recipe_command(
        "speaker.yaml", voxceleb["root"], output, ONE_EPOCH, "--source=manifests",
        f"--prepared_folder={prepared}",
    ))
    metrics = read_metrics(output)
    assert_trials_are_the_lists(output, metrics, voxceleb, prepared / "trials.csv")
    # The output folder keeps the manifests it trained on.
    for name in ("train.csv", "valid.csv", "test.csv", "trials.csv"):
        assert (output / "manifests" / name).read_text() == (prepared / name).read_text()
    assert_encoder_classifier_loads_offline(
        output / "model", tmp_path, {f"id{10001 + s}" for s in range(12)})
