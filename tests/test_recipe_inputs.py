"""Bad input reaching recipes/train.py stops it before training, naming the file and line.

The checks themselves (``dmha_modules.recipe.inputs``) are tested on small
hand-written manifests; the recipe runs show the same messages reaching the
command line, with exit status 1 and no training started.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from speechbrain.dataio.encoder import CategoricalEncoder

from dmha_modules.recipe.inputs import (
    SOURCE_OPTIONS,
    RecipeInputError,
    check_manifests,
    check_source_options,
)
from tests.recipe_helpers import logged_epochs, recipe_command, run_recipe, write_voice

COLUMNS = ["ID", "duration", "wav", "spk_id", "age", "age_group"]


def write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as table:
        writer = csv.writer(table)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def row(utterance, speaker, age=10, group="child", duration="1.5"):
    return [utterance, duration, f"$data_root/{utterance}.wav", speaker, age, group]


@pytest.fixture
def experiment(tmp_path):
    """Good manifests of 4 train, 2 valid and 2 test utterances, with trials on test; hparams."""
    for name in ("t1", "t2", "t3", "t4", "v1", "v2", "e1", "e2"):
        write_voice(tmp_path / f"{name}.wav", 200, np.random.default_rng(0), seconds=0.2)
    write_csv(tmp_path / "train.csv", [row("t1", "a"), row("t2", "a"),
                                       row("t3", "b", 25, "twenties"), row("t4", "b", 25, "twenties")])
    write_csv(tmp_path / "valid.csv", [row("v1", "c"), row("v2", "d", 16, "teens")])
    write_csv(tmp_path / "test.csv", [row("e1", "e"), row("e2", "f", 33, "thirties+")])
    write_csv(tmp_path / "trials.csv", [["trial0", 0, "e1", "e2"], ["trial1", 1, "e1", "e1"]],
              ["ID", "label", "enrol", "test"])
    hparams = {
        "task": "speaker", "source": "manifests", "data_folder": str(tmp_path),
        "manifest_folder": str(tmp_path), "prepared_folder": str(tmp_path),
        "save_folder": str(tmp_path / "save"), "age_groups": ["child", "teens", "twenties",
                                                             "thirties+"],
        "years_loss_weight": 0.1, "group_loss": "weighted_ce",
        **dict.fromkeys(name for names in SOURCE_OPTIONS.values() for name in names
                        if name != "prepared_folder"),
    }
    return tmp_path, hparams


def problems_of(hparams, folder):
    with pytest.raises(RecipeInputError) as caught:
        check_manifests(hparams, str(folder))
    return caught.value.problems


def test_good_manifests_pass_and_the_trial_list_scores_the_split_it_names(experiment):
    folder, hparams = experiment
    trial_lists = check_manifests(hparams, str(folder))
    assert trial_lists["valid"] is None  # random pairs of held-out speakers
    assert trial_lists["test"].trials == [(0, "e1", "e2"), (1, "e1", "e1")]
    assert trial_lists["test"].origin == [str(folder / "trials.csv")]
    assert check_manifests({**hparams, "task": "age"}, str(folder)) == {
        "valid": None, "test": None}


def test_without_test_csv_the_valid_split_is_tested_checked_once_and_shares_its_trials(
        experiment):
    folder, hparams = experiment
    (folder / "test.csv").unlink()
    write_csv(folder / "trials.csv", [["trial0", 1, "v1", "v2"]], ["ID", "label", "enrol", "test"])
    trial_lists = check_manifests(hparams, str(folder))
    assert trial_lists["valid"].trials == trial_lists["test"].trials == [(1, "v1", "v2")]
    write_csv(folder / "valid.csv", [row("v1", "c"), row("v2", "d", duration="0")])
    assert problems_of(hparams, folder) == [
        f"{folder / 'valid.csv'}:3: duration '0' is not a positive number"]


def test_a_missing_column_names_the_csv_line_and_column(experiment):
    folder, hparams = experiment
    rows = [[value for i, value in enumerate(row("t1", "a")) if i != 3]]
    write_csv(folder / "train.csv", rows, [c for c in COLUMNS if c != "spk_id"])
    problems = problems_of(hparams, folder)
    assert problems == [f"{folder / 'train.csv'}:1: no column spk_id (the recipe's ID, "
                        "duration, wav, spk_id); the header is ID,duration,wav,age,age_group"]


def test_every_bad_row_is_reported_at_once(experiment):
    folder, hparams = experiment
    write_csv(folder / "train.csv", [row("t1", "a"), row("t1", "a"), row("t2", "", duration="x"),
                                     row("t3", "b", duration="-1"), ["t4", "1.0"]])
    problems = problems_of(hparams, folder)
    train = folder / "train.csv"
    assert problems == [
        f"{train}:6: 2 fields, the header has 6",
        f"{train}:3: duplicate ID 't1' (first on line 2)",
        f"{train}:4: empty spk_id",
        f"{train}:4: duration 'x' is not a number",
        f"{train}:5: duration '-1' is not a positive number",
    ]


def test_age_groups_outside_the_training_classes_are_named(experiment):
    folder, hparams = experiment
    write_csv(folder / "valid.csv", [row("v1", "c"), row("v2", "d", 70, "elderly")])
    problems = problems_of({**hparams, "task": "age"}, folder)
    assert problems == [
        f"{folder / 'valid.csv'}:3: age group 'elderly' is not one of the classes of "
        f"{folder / 'train.csv'} (child, teens, twenties, thirties+)"]


def test_a_years_head_without_ages_says_how_to_train_the_groups_alone(experiment):
    folder, hparams = experiment
    write_csv(folder / "train.csv", [["t1", "1.5", "$data_root/t1.wav", "a", "0"]],
              ["ID", "duration", "wav", "spk_id", "age_group"])
    (problem,) = problems_of({**hparams, "task": "age"}, folder)
    assert problem.startswith(f"{folder / 'train.csv'}:1: no column age")
    assert "--years_loss_weight 0" in problem


def test_a_trial_naming_an_unknown_utterance_is_named(experiment):
    folder, hparams = experiment
    write_csv(folder / "trials.csv", [["trial0", 0, "e1", "e2"], ["trial1", 1, "e1", "nobody"],
                                      ["trial2", 2, "e2", "e1"]], ["ID", "label", "enrol", "test"])
    problems = problems_of(hparams, folder)
    trials = folder / "trials.csv"
    assert problems == [
        f"{trials}:3: unknown utterance 'nobody': not in {folder / 'test.csv'}, which holds "
        "the other trials",
        f"{trials}:4: label '2' is not 0 or 1",
    ]


def test_manifests_of_another_corpus_root_are_caught(experiment):
    folder, hparams = experiment
    problems = problems_of({**hparams, "data_folder": str(folder / "elsewhere")}, folder)
    assert problems[0].startswith(f"{folder / 'train.csv'}:2: audio not found: ")
    assert len(problems) == 3  # the first row of each split


def test_an_output_folder_of_other_classes_is_not_resumed(experiment):
    folder, hparams = experiment
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(["x", "y"])
    os.makedirs(hparams["save_folder"])
    encoder.save(os.path.join(hparams["save_folder"], "label_encoder.txt"))
    (problem,) = problems_of(hparams, folder)
    assert "trained on 2 other classes (x, y)" in problem and "--output_folder" in problem


def test_source_options_needed_and_foreign_ones_are_named():
    options = dict.fromkeys(name for names in SOURCE_OPTIONS.values() for name in names)
    with pytest.raises(RecipeInputError) as caught:
        check_source_options({**options, "task": "age", "source": "labels", "trials_file": "v"})
    assert caught.value.problems == [
        "--train_labels: needed with --source labels: the train labels file, "
        "'path label -1' per line",
        "--valid_labels: needed with --source labels (age): the validation labels file",
        "--trials_file: age experiments have no trials",
        "--trials_file: an option of --source voxceleb, not of labels",
    ]
    with pytest.raises(RecipeInputError, match="--source wav: not one of kaldi, labels"):
        check_source_options({**options, "task": "age", "source": "wav"})


# The recipe itself: exit status 1, the message, nothing trained.


def assert_stopped_before_training(result, output, *words):
    assert all(word in result.stderr for word in words), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert logged_epochs(output) == []
    assert not (output / "save" / "label_encoder.txt").exists()


@pytest.fixture
def prepared(experiment):
    """The experiment's manifests as ``dmha prepare`` would leave them, audio in its folder."""
    folder, _ = experiment
    return folder


@pytest.mark.slow
def test_recipe_stops_on_a_hand_edited_manifest_without_a_column(prepared, tmp_path):
    rows = list(csv.reader(open(prepared / "valid.csv", encoding="utf-8")))
    write_csv(prepared / "valid.csv", [r[:3] for r in rows[1:]], rows[0][:3])
    output = tmp_path / "out"
    result = run_recipe(recipe_command(
        "age.yaml", prepared, output, "--source=manifests", f"--prepared_folder={prepared}",
    ), expect=1)
    assert_stopped_before_training(
        result, output, f"{prepared / 'valid.csv'}:1: no column age_group", "recipes/train.py:")


@pytest.mark.slow
def test_recipe_stops_on_a_gender_head_without_genders(prepared, tmp_path):
    output = tmp_path / "out"
    result = run_recipe(recipe_command(
        "age.yaml", prepared, output, "--source=manifests", f"--prepared_folder={prepared}",
        "--gender_loss_weight=0.5",
    ), expect=1)
    assert_stopped_before_training(
        result, output, f"{output / 'manifests' / 'train.csv'}: gender_loss_weight 0.5 needs a "
        "gender column with two or more genders; found none")


@pytest.mark.slow
def test_recipe_stops_on_a_trial_naming_an_unknown_utterance(prepared, tmp_path):
    with open(prepared / "trials.csv", "a", encoding="utf-8") as trials:
        trials.write("trial2,1,e2,missing\n")
    output = tmp_path / "out"
    result = run_recipe(recipe_command(
        "speaker.yaml", prepared, output, "--source=manifests", f"--prepared_folder={prepared}",
    ), expect=1)
    assert_stopped_before_training(
        result, output, f"{prepared / 'trials.csv'}:4: unknown utterance 'missing'")


@pytest.mark.slow
def test_recipe_stops_on_labels_outside_the_classes(tmp_path):
    """The original's labels files: a valid label beyond the train classes 0..1."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for index in range(4):
        write_voice(data / "audiosPath" / f"audio{index}.wav", 150, rng, seconds=0.3)
    train = Path(tmp_path / "train_labels.txt")
    train.write_text("audiosPath/audio0 0 -1\naudiosPath/audio1 1 -1\n")
    valid = Path(tmp_path / "valid_labels.txt")
    valid.write_text("audiosPath/audio2 0 -1\naudiosPath/audio3 7 -1\n")
    output = tmp_path / "out"
    result = run_recipe(recipe_command(
        "age.yaml", data, output, "--source=labels", f"--train_labels={train}",
        f"--valid_labels={valid}", "--years_loss_weight=0",
    ), expect=1)
    assert_stopped_before_training(result, output, f"{valid}:2: label 7 is outside 0..1")


@pytest.mark.slow
def test_recipe_names_the_options_a_source_needs(tmp_path):
    output = tmp_path / "out"
    result = run_recipe(recipe_command("speaker.yaml", tmp_path, output, "--source=voxceleb",
                                       "--train_labels=t.txt"), expect=1)
    assert_stopped_before_training(
        result, output, "--train_labels: an option of --source labels, not of voxceleb")
    assert not (output / "hyperparams.yaml").exists()
