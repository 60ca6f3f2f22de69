"""Model folders the ``dmha`` commands refuse: YAML that runs code, bad checkpoints.

A model folder is code (HyperPyYAML runs what ``hyperparams.yaml`` names), so
every command that loads one checks it first and refuses it with the line
named, unless ``--trust_model``; a checkpoint that is missing, truncated or
holds pickled code is named in the model folder, not in a temporary copy.
"""

import os
import shutil

import pytest
import torch
from tests.cli.cli_helpers import run_cli

from dmha_modules.folders.safety import check_hyperparams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNSAFE = {
    "apply": '!apply:os.system ["touch {marker}"]',
    "new": '!new:os.system ["touch {marker}"]',
}


def model_verbs(models, audio, tmp_path):
    """Every verb that loads a model folder: name -> (source model, args after --model)."""
    wav = audio / "spk1/a.wav"
    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk1/a.wav spk1/b.flac\n0 spk1/a.wav spk2/c.wav\n", encoding="utf-8")
    return {
        "embed": ("speaker", ["--out", tmp_path / "e.npz", "--no_progress", wav]),
        "age": ("age", ["--out", tmp_path / "ages.csv", "--no_progress", wav]),
        "verify": ("speaker", [wav, audio / "spk2/c.wav"]),
        "score": ("speaker", ["--trials", trials, "--data_root", audio, "--out",
                              tmp_path / "scores.txt", "--no_progress"]),
        "export": ("speaker", ["--onnx"]),
        "calibrate": ("speaker", ["--trials", trials, "--data_root", audio, "--p_target",
                                  "0.01", "--min_trials", "1", "--no_progress"]),
    }


def with_line(source, folder, line):
    """A copy of a model folder with ``line`` added to its YAML; returns its line number."""
    shutil.copytree(source, folder)
    yaml_path = folder / "hyperparams.yaml"
    text = yaml_path.read_text(encoding="utf-8") + line + "\n"
    yaml_path.write_text(text, encoding="utf-8")
    return text.count("\n")


def dmha_lines(stderr):
    """The ``dmha:`` lines of stderr, after checking that no traceback got there."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("dmha:")]


def test_folders_dmha_writes_pass_the_check(models):
    """Those of ``dmha export`` / ``import-original`` (``write_model_folder`` checks too)."""
    for folder in models.values():
        check_hyperparams(str(folder / "hyperparams.yaml"))


@pytest.mark.parametrize("kind", list(UNSAFE))
@pytest.mark.parametrize("verb", ["embed", "age", "verify", "score", "export", "calibrate"])
def test_every_model_verb_refuses_yaml_that_runs_code(models, audio, tmp_path, capsys, verb,
                                                      kind):
    marker = tmp_path / "MARKER"
    name, args = model_verbs(models, audio, tmp_path)[verb]
    folder = tmp_path / "model"
    line = with_line(models[name], folder, f"pwn: {UNSAFE[kind].format(marker=marker)}")
    status, _, stderr = run_cli(capsys, verb, "--model", folder, *args)
    assert status == 1
    lines = dmha_lines(stderr)
    assert lines[0].startswith(f"dmha: {folder / 'hyperparams.yaml'}:{line}: !{kind}:os.system ")
    assert "--trust_model" in lines[-1]
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ["model", "trials.txt"]  # nothing written


@pytest.mark.parametrize("kind", list(UNSAFE))
def test_export_refuses_a_training_folder_whose_yaml_runs_code(tmp_path, capsys, kind):
    marker = tmp_path / "MARKER"
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    text = open(os.path.join(REPO, "hparams", "speaker.yaml"), encoding="utf-8").read()
    text += f"pwn: {UNSAFE[kind].format(marker=marker)}\n"
    (experiment / "hyperparams.yaml").write_text(text, encoding="utf-8")
    status, _, stderr = run_cli(capsys, "export", "--experiment", experiment)
    assert status == 1
    lines = dmha_lines(stderr)
    expected = f"dmha: {experiment / 'hyperparams.yaml'}:{text.count(chr(10))}: !{kind}:os.system"
    assert lines[0].startswith(expected)
    assert not marker.exists() and not (experiment / "model").exists()


def test_trust_model_loads_a_refused_folder(models, audio, tmp_path, capsys):
    """The flag is what lets the YAML run: here it does run."""
    marker = tmp_path / "MARKER"
    with_line(models["speaker"], tmp_path / "model",
              f"pwn: {UNSAFE['apply'].format(marker=marker)}")
    status, stdout, stderr = run_cli(capsys, "embed", "--model", tmp_path / "model",
                                     "--trust_model", "--out", tmp_path / "e.npz",
                                     "--no_progress", audio / "spk1/a.wav")
    assert status == 0, stderr
    assert marker.exists() and (tmp_path / "e.npz").exists()


class Payload:
    """Pickled, it runs ``touch`` when unpickled without ``weights_only``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def break_checkpoint(folder, kind, marker):
    """Breaks one checkpoint of ``folder``; returns the path and the words naming it."""
    if kind == "missing":
        os.remove(folder / "classifier.ckpt")
        return folder / "classifier.ckpt", "no such file"
    if kind == "truncated":
        path = folder / "embedding_model.ckpt"
        os.truncate(path, os.path.getsize(path) // 2)
        return path, "not a readable checkpoint (truncated or corrupt"
    torch.save({"weight": Payload(marker)}, folder / "classifier.ckpt")
    return folder / "classifier.ckpt", "refused: it holds pickled objects other than tensors"


@pytest.mark.parametrize("kind", ["missing", "truncated", "pickled code"])
@pytest.mark.parametrize("verb", ["embed", "age", "verify", "score", "export", "calibrate"])
def test_bad_checkpoints_are_named_in_the_model_folder(models, audio, tmp_path, capsys, verb,
                                                       kind):
    marker = tmp_path / "MARKER"
    name, args = model_verbs(models, audio, tmp_path)[verb]
    folder = tmp_path / "model"
    shutil.copytree(models[name], folder)
    path, words = break_checkpoint(folder, kind, marker)
    status, _, stderr = run_cli(capsys, verb, "--model", folder, *args)
    assert status == 1
    assert dmha_lines(stderr) == [line for line in dmha_lines(stderr)
                                  if line.startswith(f"dmha: {path}: {words}")]
    assert dmha_lines(stderr) and "dmha-model-" not in stderr  # never the temporary copy
    assert not marker.exists()
