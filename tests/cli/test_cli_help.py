"""Every ``dmha`` verb (each ``prepare`` source and alias too) answers ``--help``."""

import argparse

import pytest

from dmha_modules import cli

COMMANDS = [
    [],
    ["prepare"],
    ["prepare", "labels"],
    ["prepare", "kaldi"],
    ["prepare", "commonvoice"],
    ["prepare", "voxceleb"],
    ["features"],
    ["embed"],
    ["age"],
    ["verify"],
    ["score"],
    ["calibrate"],
    ["export"],
    ["import-original"],
    ["import-seed"],
]


def commands_of(parser, prefix=()):
    """Every command of ``parser`` as the words typed, sub-commands and aliases included."""
    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from commands_of(command, (*prefix, name))


def test_the_list_holds_every_command():
    assert sorted(commands_of(cli.build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda words: " ".join(words) or "dmha")
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([*command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dmha")
    assert "-h, --help" in out


def test_import_seed_is_import_original():
    parser = cli.build_parser()
    options = ["--checkpoint", "x.chkpt", "--config", "x.pkl", "--out", "m"]
    original = parser.parse_args(["import-original", *options])
    alias = parser.parse_args(["import-seed", *options])
    assert alias.run is original.run and alias.function is original.function
    assert cli.function_arguments(alias) == cli.function_arguments(original) == {
        "checkpoint": "x.chkpt", "config": "x.pkl", "out": "m"
    }
