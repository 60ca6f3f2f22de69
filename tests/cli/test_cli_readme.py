"""The command line as the README and the docs show it: every command parses, options pass through as given."""

import shlex

from dmha_modules import cli
from dmha_modules.cli.options import function_arguments
from tests.docs_pages import DOCS, documentation_text


def test_cli_passes_only_given_options():
    args = cli.build_parser().parse_args(
        [
            "prepare",
            "kaldi",
            "--data_folder",
            "d",
            "--save_folder",
            "s",
            "--age-bins",
            "10,20",
            "--age_groups",
            "a,b,c",
            "--no-download",
            "--skip_bad",
        ]
    )
    assert function_arguments(args) == {
        "data_folder": "d",
        "save_folder": "s",
        "age_bins": (10.0, 20.0),
        "age_groups": ("a", "b", "c"),
        "download_url": None,
        "skip_bad": True,
    }


def readme_commands():
    """The ``dmha`` lines of the shell blocks of the page "Preparing data"."""
    text = (DOCS / "preparing-data.md").read_text(encoding="utf-8")
    commands = []
    for block in text.split("```")[1::2]:
        command = block.replace("\\\n", " ").strip()
        command = (
            command.split("\n", 1)[1] if command.startswith(("bash", "sh")) else command
        )
        commands += [line for line in command.splitlines() if line.startswith("dmha ")]
    return commands


def test_readme_shows_one_valid_command_per_source():
    commands = readme_commands()
    sources = [shlex.split(c)[2] for c in commands if shlex.split(c)[1] == "prepare"]
    assert sorted(sources) == ["commonvoice", "kaldi", "labels", "voxceleb"]
    assert any(shlex.split(c)[1] == "features" for c in commands)
    parser = cli.build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])


def readme_shell_commands():
    """Every ``dmha`` line of the shell blocks of the README and the docs, comments and ``[ ]`` marks left out."""
    text = documentation_text()
    commands = []
    for block in text.split("```")[1::2]:
        if not block.startswith(("bash", "sh")):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].replace("[", "").replace("]", "")
            if line.startswith("dmha "):
                commands.append(line)
    return commands


def test_every_readme_command_parses():
    commands = readme_shell_commands()
    verbs = {shlex.split(c)[1] for c in commands}
    assert {"prepare", "features", "embed", "age", "verify", "score", "export"} <= verbs
    parser = cli.build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])
