"""The training commands as the README and the docs show them: each one parses and loads as the recipe would.

The section "## Training on your corpus" of ``docs/training.md`` shows one command per
source; every ``recipes/train.py`` command of the README and the docs (that section's,
the main job's, torchrun's, the tuning log's) goes through the recipe's own parsing: SpeechBrain's argument
parser, the YAML with the command's overrides (an unknown option fails
there) and the check of the source's options.
"""

import shlex

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from dmha_modules.recipe.inputs import check_source_options
from tests.docs_pages import documentation_text
from tests.recipe_helpers import REPO

SECTION = "## Training on your corpus"


def shell_lines(text):
    """The command lines of the shell blocks of ``text``, continuations joined, comments left out."""
    lines = []
    for block in text.split("```")[1::2]:
        if block.startswith(("bash", "sh")):
            lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()[1:]
                      if line.strip() and not line.strip().startswith("#")]
    return lines


def recipe_arguments(line):
    """The arguments after ``recipes/train.py`` of a command line, or None for other commands."""
    if "recipes/train.py" not in line:
        return None
    words = shlex.split(line.split("&&")[-1].split(" #", 1)[0])
    for index, word in enumerate(words):
        if word.endswith("recipes/train.py"):
            return words[index + 1:]
    return None


def readme_training_commands(section=None):
    text = documentation_text()
    if section is not None:
        assert section in text, f"neither README.md nor docs/ has a section {section!r}"
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [args for line in shell_lines(text) if (args := recipe_arguments(line)) is not None]


def parsed(arguments, tmp_path, monkeypatch):
    """The hyperparameters the recipe would run with (relative outputs land in ``tmp_path``)."""
    hparams_file, _, overrides = sb.parse_arguments(arguments)
    monkeypatch.chdir(tmp_path)
    with open(REPO / hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_source_options(hparams)
    return hparams


def test_readme_shows_one_training_command_per_source(tmp_path, monkeypatch):
    commands = readme_training_commands(SECTION)
    runs = {(hparams["task"], hparams["source"]) for hparams in
            (parsed(arguments, tmp_path, monkeypatch) for arguments in commands)}
    assert runs >= {("age", "kaldi"), ("age", "labels"), ("speaker", "labels"),
                    ("age", "commonvoice"), ("speaker", "voxceleb"), ("speaker", "manifests")}


@pytest.mark.slow
def test_every_readme_training_command_parses(tmp_path, monkeypatch):
    commands = readme_training_commands()
    assert len(commands) > len(readme_training_commands(SECTION))  # the main job's too
    for arguments in commands:
        parsed(arguments, tmp_path, monkeypatch)
