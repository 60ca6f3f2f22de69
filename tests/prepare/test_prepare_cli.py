"""Tests of ``dmha prepare``: options reach the preparers, bad input exits non-zero."""

from tests.prepare.prepare_helpers import append, assert_nothing_written, read_csv

from dmha_modules import cli


def test_cli_prepare_labels(labels_corpus, tmp_path, capsys):
    data, _ = labels_corpus
    save = tmp_path / "prep"
    status = cli.main(
        [
            "prepare",
            "labels",
            "--data-folder",
            str(data),
            "--save_folder",
            str(save),
            "--train_labels",
            str(data / "train.lst"),
            "--jobs",
            "1",
        ]
    )
    assert status == 0
    assert f"train: {save / 'train.csv'}" in capsys.readouterr().out
    assert len(read_csv(save / "train.csv")) == 5


def test_cli_bad_input_exits_non_zero_and_lists_problems(
    labels_corpus, tmp_path, capsys
):
    data, _ = labels_corpus
    append(data / "train.lst", "spk9/x 1 -1\n")
    save = tmp_path / "prep"
    args = [
        "prepare",
        "labels",
        "--data_folder",
        str(data),
        "--save_folder",
        str(save),
        "--train_labels",
        str(data / "train.lst"),
    ]
    assert cli.main(args) == 1
    assert f"{data / 'train.lst'}:7: audio file not found" in capsys.readouterr().err
    assert_nothing_written(save)
    assert cli.main(args + ["--skip-bad"]) == 0
    assert (save / "rejects.csv").is_file()
