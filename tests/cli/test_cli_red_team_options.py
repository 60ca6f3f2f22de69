"""Red team, issue 26 items 11-15: option values, original-code files and labels files.

Option values are refused by argparse before any work (exit 2, its one
``argument --name: ...`` error line); the files of ``import-original`` and the
labels files of ``prepare labels`` get one ``dmha:`` line naming the file (and
line), exit 1, no traceback. The huge-label case runs in a child process
whose address space may grow by 200 MB at most once ``dmha`` is imported.
"""

import argparse
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.cli.cli_helpers import run_cli
from tests.prepare.prepare_helpers import write_audio, write_text

from dmha_modules.cli import build_parser

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def usage_error(capsys, *args):
    """The error line argparse ends with when it refuses ``dmha args`` (exit 2)."""
    with pytest.raises(SystemExit) as exit:
        run_cli(capsys, *args)
    assert exit.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def dmha_problems(stderr):
    """The ``dmha:`` lines of stderr; there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("dmha:")]


# ------------------------------------------------------------------- 11: option values

MODEL = ["--model", "m"]
# Each verb's required options, none of which exists: refused values stop it before it looks.
VERBS = {
    "verify": ["verify", *MODEL, "a.wav", "b.wav"],
    "embed": ["embed", *MODEL, "--out", "e.npz", "a.wav"],
    "age": ["age", *MODEL, "--out", "a.csv", "a.wav"],
    "score": ["score", *MODEL, "--trials", "t.txt", "--out", "s.txt"],
    "calibrate": ["calibrate", *MODEL, "--trials", "t.txt"],
    "features": ["features", "-i", "files.lst"],
    "kaldi": ["prepare", "kaldi", "--data_folder", "d", "--save_folder", "s"],
    "labels": ["prepare", "labels", "--data_folder", "d", "--save_folder", "s",
               "--train_labels", "t.lst"],
    "import": ["import-original", "--checkpoint", "c.chkpt", "--config", "c.pkl",
               "--out", "o"],
}
REFUSED = [
    ("verify", "threshold", "nan"),
    ("verify", "threshold", "inf"),
    *((verb, "batch_seconds", value) for verb in ("embed", "age", "score", "calibrate")
      for value in ("-5", "nan", "inf")),
    ("score", "top_n", "0"),
    ("score", "top_n", "-5"),
    ("score", "p_target", "2"),
    ("score", "p_target", "0"),
    ("score", "p_target", "nan"),
    ("calibrate", "target_far", "1.5"),
    ("calibrate", "p_target", "nan"),
    ("calibrate", "prior", "0"),
    ("calibrate", "min_trials", "0"),
    ("features", "jobs", "0"),
    ("kaldi", "jobs", "-1"),
    ("kaldi", "valid_ratio", "nan"),
    ("kaldi", "valid_ratio", "1"),
    ("kaldi", "test_ratio", "-0.1"),
    ("kaldi", "age_bins", "nan,18"),
    ("labels", "num_classes", "0"),
    ("import", "sample_rate", "0"),
    ("import", "group_ages", "nan,25"),
    ("import", "group_ages", "-3,25"),
]


@pytest.mark.parametrize("verb, name, value", REFUSED)
def test_option_values_are_refused_when_parsed(capsys, verb, name, value):
    args = VERBS[verb] + [f"--{name}={value}"]  # "=": "-3,25" is no option
    if verb == "calibrate" and name not in ("target_far", "p_target"):
        args += ["--p_target", "0.01"]
    error = usage_error(capsys, *args)
    refused = value.split(",")[0]  # of a list, the first item is the bad one
    assert f"argument --{name}" in error and repr(refused) in error, error


def test_batch_seconds_0_stays_one_file_at_a_time():
    """README (Inference speed): "batch 1 stays a --batch_seconds 0 away"."""
    assert build_parser().parse_args(VERBS["embed"] + ["--batch_seconds", "0"]).batch_seconds == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(VERBS["embed"] + ["--batch_seconds", "-0.5"])


@pytest.mark.parametrize("option", [["--top_n", "0"], ["--p_target", "2"]])
def test_score_writes_nothing_for_a_refused_value(models, audio, tmp_path, capsys, option):
    trials = write_text(tmp_path / "trials.txt", "1 spk1/a.wav spk1/b.flac\n"
                        "0 spk1/a.wav spk2/c.wav\n")
    cohort = write_text(tmp_path / "cohort.lst", f"{audio / 'spk3/e.wav'}\n"
                        f"{audio / 'spk3/f.wav'}\n")
    out = tmp_path / "scores.txt"
    usage_error(capsys, "score", "--model", models["speaker"], "--trials", trials,
                "--data_root", audio, "--out", out, "--cohort", cohort, "--no_progress",
                *option)
    assert not out.exists()


# ------------------------------------------------------------------- 12, 15: import-original


@pytest.fixture
def original(tmp_path):
    """A tiny original-code model: its settings, checkpoint and config."""
    from tests.test_original import random_original_model, save_original, original_settings

    settings = original_settings("VGG3L", "Attention")
    model = random_original_model(settings)
    checkpoint, config = save_original(model, settings, tmp_path)
    return settings, model, checkpoint, config


def import_problems(capsys, checkpoint, config, out):
    status, _, stderr = run_cli(capsys, "import-original", "--checkpoint", checkpoint,
                                "--config", config, "--out", out)
    assert status == 1, stderr
    assert not out.exists()
    return dmha_problems(stderr)


@pytest.mark.parametrize("where", ["config", "checkpoint"])
@pytest.mark.parametrize("name, value", [("kernel_size", "16"), ("heads_number", 4.0),
                                         ("num_spkrs", True), ("normalization", ["cmn"]),
                                         ("scalingFactor", float("nan"))])
def test_a_setting_of_the_wrong_kind_is_named_with_its_file(original, tmp_path, capsys,
                                                            where, name, value):
    settings, model, checkpoint, config = original
    wrong = argparse.Namespace(**{**vars(settings), name: value})
    if where == "config":  # a checkpoint without settings: the config's are used
        torch.save({"model": model.state_dict()}, checkpoint)
        config.write_bytes(pickle.dumps(wrong, protocol=2))
    else:
        torch.save({"model": model.state_dict(), "settings": wrong}, checkpoint)
    problems = import_problems(capsys, checkpoint, config, tmp_path / "out")
    named = checkpoint if where == "checkpoint" else config
    assert len(problems) == 1 and f"{named}: setting {name} is" in problems[0], problems


def test_a_config_of_invalid_utf8_is_named(original, tmp_path, capsys):
    settings, _, checkpoint, config = original
    config.write_bytes(pickle.dumps(settings, protocol=2).replace(b"VGG3L", b"VG\xff3L"))
    problems = import_problems(capsys, checkpoint, config, tmp_path / "out")
    assert len(problems) == 1 and problems[0].startswith(f"dmha: {config}: "), problems
    assert "utf-8" in problems[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "plain pickle"])
def test_a_checkpoint_torch_cannot_read_is_one_line(original, tmp_path, capsys, damage):
    _, _, checkpoint, config = original
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes({"truncated": whole[: len(whole) // 2], "empty": b"",
                            "text": b"hello world\n",
                            "plain pickle": pickle.dumps({"model": {}})}[damage])
    problems = import_problems(capsys, checkpoint, config, tmp_path / "out")
    assert len(problems) == 1 and problems[0].startswith(f"dmha: {checkpoint}: "), problems
    assert "refused global" not in problems[0]  # nothing was refused: it is no checkpoint


# ------------------------------------------------------------------- 13, 14: labels files


@pytest.fixture
def labelled(tmp_path):
    """A corpus of two 16 kHz files; an 8 kHz file outside it."""
    data = tmp_path / "data"
    for name in ("spk0/a", "spk1/b"):
        write_audio(data / f"{name}.wav", 0.2)
    write_audio(tmp_path / "elsewhere" / "x.wav", 0.2, sample_rate=8000)
    return data


def prepare_labels(capsys, data, *extra):
    return run_cli(capsys, "prepare", "labels", "--data_folder", data, "--save_folder",
                   data.parent / "prep", "--jobs", "1", *extra)


def test_labels_paths_out_of_the_folder_and_third_fields_are_refused(labelled, capsys):
    outside = labelled.parent / "elsewhere" / "x.wav"
    train = write_text(labelled / "train.lst", f"spk0/a 0 -1\nspk1/b 1 -1\n{outside} 1 -1\n"
                       "spk0/../../elsewhere/x 0 -1\nspk1/b.wav 1 0\n")
    clients = write_text(labelled / "clients.lst", "spk0/a ../elsewhere/x\n")
    impostors = write_text(labelled / "impostors.lst", "spk0/a spk1/b\n")
    status, _, stderr = prepare_labels(capsys, labelled, "--train_labels", train,
                                       "--trials_clients", clients,
                                       "--trials_impostors", impostors)
    assert status == 1
    problems = dmha_problems(stderr)
    for where, words in [(f"{train}:3:", f"absolute path '{outside}'"),
                         (f"{train}:4:", "'spk0/../../elsewhere/x' leaves"),
                         (f"{train}:5:", "third field '0' is not -1"),
                         (f"{clients}:1:", "'../elsewhere/x' leaves")]:
        assert any(line.startswith(f"dmha: {where}") and words in line
                   for line in problems), (where, words, problems)
    assert not (labelled.parent / "prep" / "train.csv").exists()


# Runs ``dmha`` with 200 MB more address space than it has once imported (the
# verbs, torch and the other compiled libraries included: ``build_parser``
# imports them); prints the seconds ``main`` took.
BOUNDED_CHILD = textwrap.dedent("""
    import resource, sys, time
    from dmha_modules import cli
    cli.build_parser()
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + 200 * 2**20, resource.RLIM_INFINITY))
    start = time.perf_counter()
    code = cli.main(sys.argv[1:])
    print(time.perf_counter() - start)
    sys.exit(code)
""")


def bounded_prepare_labels(data, *extra):
    """``dmha prepare labels`` in :data:`BOUNDED_CHILD`: (exit status, stderr, seconds)."""
    child = subprocess.run(
        [sys.executable, "-c", BOUNDED_CHILD, "prepare", "labels", "--data_folder", data,
         "--save_folder", data.parent / "prep", "--jobs", "1", *extra],
        capture_output=True, text=True, cwd=REPOSITORY, timeout=120,
    )
    seconds = float(child.stdout.split()[-1]) if child.stdout.split() else None
    return child.returncode, child.stderr, seconds


@pytest.mark.slow
def test_a_huge_label_is_one_line_within_1_s_and_200_mb(labelled):
    """Issue 26, acceptance 4: start-up (importing torch and SpeechBrain) aside."""
    write_audio(labelled / "spk2/c.wav", 0.2)
    train = write_text(labelled / "train.lst", "spk0/a 0 -1\nspk1/b 1 -1\n"
                       "spk2/c 99999999999999999999 -1\n")
    status, stderr, seconds = bounded_prepare_labels(labelled, "--train_labels", train)
    assert status == 1, stderr[-2000:]
    problems = [line for line in dmha_problems(stderr) if f"{train}" in line]
    assert problems == [f"dmha: {train}:3: label 99999999999999999999 follows a gap: the "
                        "file's 3 entries cannot use every label of 0..99999999999999999999"], \
        stderr
    assert seconds < 1.0


@pytest.mark.slow
def test_a_num_classes_beyond_the_lines_stops_before_sizing_anything(labelled):
    train = write_text(labelled / "train.lst", "spk0/a 0 -1\nspk1/b 1 -1\n")
    status, stderr, seconds = bounded_prepare_labels(labelled, "--train_labels", train,
                                                     "--num_classes", "99999999999999999999")
    assert status == 1, stderr[-2000:]
    assert dmha_problems(stderr)[-1] == (f"dmha: {train}: num_classes 99999999999999999999 "
                                         "exceeds the 2 entries of the file: each class needs one")
    assert seconds < 1.0
