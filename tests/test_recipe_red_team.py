"""Red team of the training recipe: refused runs, resumes that cannot be, and Ctrl-C.

A run that is refused (another split into a finished folder, a folder in use,
a model that no longer fits the checkpoints) leaves the output folder byte
for byte as it was; Ctrl-C, in the recipe and in ``dmha``, is one line and
exit status 130, with the last checkpoint (or the outputs written) kept.
The trainings are the tiny ones of ``tests/test_recipe.py``, on generated voices.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dmha_modules.recipe.training import LOCK_FILE, output_folder_lock
from tests.recipe_helpers import (REPO, default_sigint, logged_epochs, recipe_command,
                                  run_recipe, write_kaldi_corpus, write_voice)

INTERRUPTED = 130  # what a shell reports for a process that SIGINT ended


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Kaldi data dir of 16 speakers (ages 8-42) x 3 utterances of 1.2-1.8 s."""
    ages = [8, 9, 10, 11, 15, 16, 17, 18, 22, 24, 26, 28, 33, 36, 39, 42]
    return write_kaldi_corpus(tmp_path_factory.mktemp("corpus"), ages)


def folder_bytes(folder):
    """``{relative path: bytes}`` of every file under ``folder`` but the lock file."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file() and path.name != LOCK_FILE}


def recipe_message(stderr):
    """The recipe's last stderr line; there is no traceback."""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_refused_or_concurrent_run_changes_nothing_in_a_finished_folder(corpus, tmp_path):
    output = tmp_path / "speaker"
    run_recipe(recipe_command("speaker.yaml", corpus, output, "--number_of_epochs=1"))
    finished = folder_bytes(output)
    assert {"hyperparams.yaml", "manifests/train.csv", "log.txt"} <= set(finished)

    # Another split: other training speakers, refused by the classes of the checkpoints.
    other_split = recipe_command("speaker.yaml", corpus, output, "--number_of_epochs=1",
                                 "--split_seed=7")
    result = run_recipe(other_split, expect=1)
    assert "this output folder trained on 8 other classes" in result.stderr
    assert recipe_message(result.stderr).startswith(f"{output}/save/label_encoder.txt")
    assert folder_bytes(output) == finished  # manifests/ and hyperparams.yaml included
    assert sorted(p.name for p in output.iterdir() if p.name.startswith(".")) == []

    # The same while another training holds the folder: stopped, naming the holder.
    with output_folder_lock(str(output), "recipes/train.py (the running one)"):
        result = run_recipe(other_split, expect=1)
    assert "is in use by a running training (pid" in recipe_message(result.stderr)
    assert "recipes/train.py (the running one)" in result.stderr
    assert folder_bytes(output) == finished


@pytest.mark.slow
def test_resuming_with_another_architecture_names_the_option_and_changes_nothing(
        corpus, tmp_path):
    output = tmp_path / "ecapa"
    ecapa = ["--embedding=ecapa_dmha", "--number_of_epochs=1"]
    run_recipe(recipe_command("speaker.yaml", corpus, output, *ecapa,
                              "--ecapa_channels=[16, 16, 16, 16, 48]"))
    finished = folder_bytes(output)

    result = run_recipe(recipe_command("speaker.yaml", corpus, output, *ecapa,
                                       "--ecapa_channels=[24, 24, 24, 24, 72]"), expect=1)
    message = recipe_message(result.stderr)
    assert message.startswith(f"recipes/train.py: {output}/save/CKPT+")
    assert "--ecapa_channels [16, 16, 16, 16, 48] then, [24, 24, 24, 24, 72] now" in message
    assert "size mismatch" not in result.stderr
    assert folder_bytes(output) == finished
    hyperparams = (output / "hyperparams.yaml").read_text()
    assert "[16, 16, 16, 16, 48]" in hyperparams and "[24, 24, 24" not in hyperparams


@pytest.mark.slow
def test_ctrl_c_in_the_recipe_is_one_line_and_the_rerun_resumes(corpus, tmp_path):
    output = tmp_path / "interrupted"
    command = recipe_command("age.yaml", corpus, output, "--number_of_epochs=3")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 300
    while time.time() < deadline and not list((output / "save").glob("CKPT*/CKPT.yaml")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED, stderr[-3000:]
    assert recipe_message(stderr) == ("recipes/train.py: interrupted; the last checkpoint is "
                                      "kept: rerun the same command to resume")
    assert logged_epochs(output) in ([1], [1, 2])

    run_recipe(command)
    assert logged_epochs(output) == [1, 2, 3]


# dmha features, its work held after the first file until the test sends SIGINT.
FEATURES_HELD = """
import sys, time
from dmha_modules import cli
from dmha_modules.io import feature_files
extract_one = feature_files._extract_one
def extract_then_wait(task):
    result = extract_one(task)
    print("first file done", flush=True)
    time.sleep(120)
    return result
feature_files._extract_one = extract_then_wait
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_in_dmha_is_one_line_and_keeps_what_was_written(tmp_path):
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    for name in names:
        write_voice(tmp_path / f"{name}.wav", 150, rng)
    (tmp_path / "files.lst").write_text("".join(f"{name}\n" for name in names))
    process = subprocess.Popen(  # in the checkout, so that its dmha_modules runs
        [sys.executable, "-c", FEATURES_HELD, "features", "-i", str(tmp_path / "files.lst"),
         "--data_dir", str(tmp_path), "--jobs", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint)
    assert process.stdout.readline() == "first file done\n"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("dmha:")] == [
        "dmha: interrupted; no output is left half-written (earlier ones are kept as they were)"]
    # The first file's features are whole; nothing else, nothing temporary, was left.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix not in (".wav", ".lst")) \
        == ["a.npy"]
    audio, _ = soundfile.read(tmp_path / "a.wav")
    frames = np.load(tmp_path / "a.npy").shape[0]
    assert abs(frames - len(audio) / 160) <= 3  # 10 ms hops over the whole file
