"""One exit-status policy for every verb: 0 done, 1 input problems (all listed), 2 bad usage."""

import pytest
from tests.cli.cli_helpers import run_cli


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
