"""One exit-status policy for every verb: 0 done, 1 input problems (all listed), 2 bad usage,
130 interrupted (Ctrl-C), from start-up on."""

import signal
import subprocess
import sys

import pytest
from tests.cli.cli_helpers import run_cli
from tests.recipe_helpers import REPO, default_sigint


@pytest.mark.parametrize(
    "args",
    [["embed", "--out", "e.npz", "a.wav"], ["prepare", "kaldi", "--data_folder", "d"],
     ["score", "--model", "m", "--trials", "t", "--out", "s", "--top_n", "many"]],
)
def test_options_argparse_refuses_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit:
        run_cli(capsys, *args)
    assert exit.value.code == 2
    assert "dmha" in capsys.readouterr().err


def test_values_the_function_refuses_exit_2(tmp_path, capsys):
    status, _, stderr = run_cli(
        capsys, "prepare", "labels", "--data_folder", tmp_path, "--save_folder",
        tmp_path / "out", "--train_labels", tmp_path / "train.lst", "--trials_clients", "c.lst",
    )
    assert status == 2
    assert stderr.startswith("dmha: error: ") and "trials_impostors" in stderr


def test_a_list_line_is_a_path_or_an_id_and_the_rest_a_path(models, tmp_path, capsys):
    """Kaldi's wav.scp convention: more fields are a path with spaces, not a bad line."""
    listing = tmp_path / "wav.scp"
    listing.write_text("a.wav\nid a b.wav\n", encoding="utf-8")
    status, stdout, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--list",
                                     listing, "--out", tmp_path / "e.npz", "--no_progress")
    assert status == 1
    assert stderr.splitlines() == [
        "dmha: skipped a.wav: no such file",
        "dmha: skipped a b.wav: no such file",
        f"dmha: {tmp_path / 'e.npz'}: not written: no input could be used "
        f"(an existing {tmp_path / 'e.npz'} is left as it was)",
    ]
    assert not (tmp_path / "e.npz").exists()


def test_every_bad_trial_line_is_listed(models, tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a.wav b.wav\na.wav\n1 a.wav c.wav\n2 a b c\n", encoding="utf-8")
    status, _, stderr = run_cli(capsys, "score", "--model", models["speaker"], "--trials",
                                trials, "--out", tmp_path / "scores.txt")
    assert status == 1
    lines = stderr.splitlines()
    assert [line.split(": expected")[0] for line in lines] == [
        f"dmha: {trials}:2", f"dmha: {trials}:4"
    ]
    assert not (tmp_path / "scores.txt").exists()


# dmha started as its console script starts it (``from dmha_modules.cli import main``), its
# first import of the module named by the first argument held until the test sends SIGINT.
START_HELD = """
import importlib.abc, sys, time
held = sys.argv.pop(1)
class HoldImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == held:
            print("importing", name, flush=True)
            time.sleep(120)
        return None
sys.meta_path.insert(0, HoldImport())
from dmha_modules.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("held", ["torch", "speechbrain"])
def test_ctrl_c_while_dmha_starts_is_one_line_and_exit_130(held):
    process = subprocess.Popen(  # in the checkout, so that its dmha_modules runs
        [sys.executable, "-c", START_HELD, held, "embed", "--help"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        assert process.stdout.readline() == f"importing {held}\n"  # still starting
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("dmha")] == [
        "dmha: interrupted; no output is left half-written (earlier ones are kept as they were)"]
    assert stdout == ""  # it never got to --help
