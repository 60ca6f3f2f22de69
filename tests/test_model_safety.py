"""``check_hyperparams``: a model folder's YAML is checked before anything in it runs.

The refused lines are real attacks: where HyperPyYAML itself runs them, a test
shows it does (so the check is what stands between a folder and the shell).
Model folders through the ``dmha`` commands are tested in
``tests/cli/test_cli_model_folders.py``.
"""

import io
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from dmha_modules.folders.safety import (
    ModelFolderError,
    UnsafeModelError,
    check_hyperparams,
    checkpoint_problems,
    read_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]

# name: (YAML with a marker path {marker}, 1-based line refused, words of the refusal,
#        whether HyperPyYAML runs it as it loads the file)
ATTACKS = {
    "apply": ('pwn: !apply:os.system ["touch {marker}"]', 1, "calls os.system", True),
    "new": ('pwn: !new:os.system ["touch {marker}"]', 1, "not a class", False),
    "class reached through an import": (
        "pwn: !new:torch.utils.cpp_extension.subprocess.Popen [[touch, {marker}]]", 1,
        "not a class of", False),
    "private class": ("unit: !new:torch._C.CompilationUnit", 1, "not a class of", False),
    "function of an allowed package": (
        "load: !name:torch.load\npwn: !apply:operator.call [!ref <load>, x.pt]", 1,
        "torch.load (defined in torch.serialization)", False),
    "python tag": ("pwn: !!python/object/apply:os.system [touch {marker}]", 1,
                   "Python object tag", True),
    "tag directive": ("%TAG !p! tag:yaml.org,2002:python/\n---\n"
                      "pwn: !p!object/apply:os.system [touch {marker}]", 3,
                      "Python object tag", True),
    "implicit tuple": ("pwn: (!!python/object/apply:os.system [touch {marker}])", 1,
                       "reads as a tuple holding the tag", True),
    "explicit tuple": ("pwn: !tuple (!!python/object/apply:os.system [touch {marker}])", 1,
                       "reads as a tuple holding the tag", True),
    "tuple as a key": ("? (!!python/object/apply:os.system [touch {marker}])\n: 1", 1,
                       "reads as a tuple holding the tag", False),
    "quoted tuple": ("pwn: '(!!python/object/apply:os.system [touch {marker}])'", 1,
                     "reads as a tuple holding the tag", False),
    "applyref": ("pwn: !applyref:os.system [touch {marker}]", 1, "calls os.system", True),
    "attribute reference": ("norm: !new:dmha_modules.nn.features.UtteranceNorm\n"
                            "forward: !ref <norm.forward>", 2, "refers to an attribute", False),
    "module": ("pwn: !module:os", 1, "names modules", False),
    "include": ("pwn: !include:other.yaml", 1, "includes files", False),
    "shell helper": ('pwn: !name:speechbrain.utils.superpowers.run_shell {{cmd: "touch {marker}"}}',
                     1, "not a class of", False),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_are_refused_naming_the_line(tmp_path, name):
    text, line, words, _ = ATTACKS[name]
    marker = tmp_path / "MARKER"
    path = tmp_path / "hyperparams.yaml"
    path.write_text(text.format(marker=marker) + "\n")
    with pytest.raises(UnsafeModelError) as error:
        check_hyperparams(str(path))
    first, advice = error.value.problems[0], error.value.problems[-1]
    assert first.startswith(f"{path}:{line}: ") and words in first, first
    assert advice.startswith(f"{path}: refused") and "--trust_model" in advice
    assert not marker.exists()


@pytest.mark.parametrize("name", [name for name, attack in ATTACKS.items() if attack[3]])
def test_hyperpyyaml_runs_those_lines_when_it_loads_them(tmp_path, name):
    """Why the check exists: loading the refused YAML runs the shell."""
    marker = tmp_path / "MARKER"
    try:
        load_hyperpyyaml(io.StringIO(ATTACKS[name][0].format(marker=marker) + "\n"))
    except Exception:  # noqa: BLE001 - what matters is what ran before it failed
        pass
    assert marker.exists()


def test_values_built_by_references_are_checked_after_resolution(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text('x: "!!python/object/apply:os.system [touch X]"\npwn: !ref (<x>)\n')
    with pytest.raises(UnsafeModelError) as error:
        check_hyperparams(str(path))
    assert error.value.problems[0].startswith(f"{path}: pwn: ")
    assert "reads as a tuple holding the tag" in error.value.problems[0]


def test_every_refused_line_is_listed(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text("a: 1\nb: !apply:os.system [x]\nc: !module:os\nd: !new:os.system [y]\n")
    with pytest.raises(UnsafeModelError) as error:
        check_hyperparams(str(path))
    assert [problem.split(": ")[0] for problem in error.value.problems[:-1]] == [
        f"{path}:2", f"{path}:3", f"{path}:4"
    ]


def test_what_dmha_folders_and_recipes_use_passes(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text(
        "seed: 3\n"
        "__set_seed: !apply:speechbrain.utils.seed.seed_everything [!ref <seed>]\n"
        "out: !ref results/<seed>/model.ckpt\n"
        "half: !ref <seed> / 2\n"
        "shape: (1, 2)\n"
        "pair: !tuple (3, 4)\n"
        "loss: !name:torch.nn.CrossEntropyLoss\n"
        "prepare: !name:dmha_modules.prepare.prepare_kaldi\n"
        "choices:\n    a: !name:dmha_modules.nn.models.EmbeddingModel\n        channels: 16\n"
        "model: !apply:operator.call [!apply:operator.getitem [!ref <choices>, a]]\n"
        "copy: !copy <choices>\n"
        "encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder\n"
        "folder: !PLACEHOLDER\n"
    )
    check_hyperparams(str(path), overrides={"folder": "x"})


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "hparams").glob("*.yaml")))
def test_the_training_yamls_pass_as_export_loads_them(name, tmp_path):
    """``dmha export --experiment`` checks a training folder's copy of these."""
    overrides = {"output_folder": str(tmp_path), "save_folder": str(tmp_path / "save"),
                 "manifest_folder": str(tmp_path / "manifests")}
    check_hyperparams(str(REPO / "hparams" / name), overrides)


def test_unreadable_yaml_is_a_model_folder_error(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text("a: [unclosed\n")
    with pytest.raises(ModelFolderError, match="not a readable hyperparams.yaml"):
        check_hyperparams(str(path))


def test_checkpoints_are_read_as_tensors_only_and_named(tmp_path):
    import os

    import torch

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'MARKER'}",)

    torch.save({"w": torch.ones(2)}, tmp_path / "embedding_model.ckpt")
    torch.save({"w": Payload()}, tmp_path / "classifier.ckpt")
    (tmp_path / "label_encoder.ckpt").write_text("'a' => 0\n")
    torch.save({"w": torch.ones(2)}, tmp_path / "age_head.ckpt")
    os.truncate(tmp_path / "age_head.ckpt", 40)
    assert torch.equal(read_checkpoint(str(tmp_path / "embedding_model.ckpt"))["w"],
                       torch.ones(2))
    problems = checkpoint_problems(str(tmp_path), OSError(22, "Invalid argument"))
    assert problems[0].startswith(f"{tmp_path / 'age_head.ckpt'}: not a readable checkpoint")
    assert problems[1] == (f"{tmp_path / 'classifier.ckpt'}: refused: it holds pickled "
                           "objects other than tensors, which could run code")
    assert len(problems) == 2 and not (tmp_path / "MARKER").exists()
