"""Outputs that cannot destroy inputs: every output option of every ``dmha`` verb that writes.

An output given the path of an input (equal, a folder holding it, or a file
of a model or training folder) is refused before any work: exit status 2 and
one ``dmha: error:`` line naming both. A model folder output replaces only a
model folder dmha wrote, carrying over its ``calibration.json`` and
``embedding.onnx``; any other non-empty folder is refused and left as it was.
The references are the files themselves: their bytes before and after.
"""

import functools
import shutil

import pytest
import torch
from tests.cli.cli_helpers import run_cli
from tests.cli.test_cli_red_team import dmha_lines, source_args
from tests.prepare.prepare_helpers import write_audio, write_text

from speechbrain.inference.classifiers import EncoderClassifier

from dmha_modules.folders import model_folder
from dmha_modules.cli import age as age_verb
from dmha_modules.cli import calibrate, embed, features, import_original, prepare, score
from dmha_modules.folders.onnx_export import OnnxEmbedder


def tree(*roots):
    """``{path: bytes}`` of every file under ``roots`` (folders as ``None``)."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if path.exists():
                found[path] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture
def original(tmp_path):
    """A model of the original research code: ``(checkpoint, config)`` in ``tmp_path/original``."""
    from tests.test_original import random_original_model, save_original, original_settings

    folder = tmp_path / "original"
    folder.mkdir()
    settings = original_settings("VGG4L", "DoubleMHA")
    return save_original(random_original_model(settings), settings, folder)


def fake_experiment(folder):
    """A training output folder as ``recipes/train.py`` leaves it (contents do not matter)."""
    write_text(folder / "hyperparams.yaml", "task: speaker\n")
    write_text(folder / "save" / "CKPT+1" / "embedding_model.ckpt", "weights")
    write_text(folder / "manifests" / "train.csv", "ID,wav\n")
    write_text(folder / "train_log.txt", "epoch: 1\n")
    return folder


def labelled_trials(path, folder):
    """A labelled list of 10 target and 10 non-target distinct pairs of files in ``folder``."""
    names = [folder / f"u{i}.wav" for i in range(20)]
    lines = [f"1 {names[2 * i]} {names[2 * i + 1]}\n" for i in range(10)]
    lines += [f"0 {names[i]} {names[(i + 3) % 20]}\n" for i in range(10)]
    write_text(path, "".join(lines))
    return names


# ---------------------------------------------------------------- item 1: --out folders


def test_import_original_out_dot_keeps_the_folder_of_its_inputs(original, capsys,
                                                                 monkeypatch):
    checkpoint, config = original
    folder = checkpoint.parent
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    before = tree(folder)
    monkeypatch.chdir(folder)
    status, _, stderr = run_cli(capsys, "import-original", "--checkpoint", checkpoint.name,
                                "--config", config.name, "--out", ".")
    assert status == 2
    assert dmha_lines(stderr) == [f"dmha: error: --out . contains the input --checkpoint "
                                  f"{checkpoint.name}; give the output another path"]
    assert tree(folder) == before


@pytest.mark.parametrize("where", ["itself", "its save folder", "a folder holding it"])
def test_export_never_writes_over_its_training_folder(tmp_path, capsys, where):
    experiment = fake_experiment(tmp_path / "ex1")
    out, words = {
        "itself": (experiment, f"is the input --experiment {experiment}"),
        "its save folder": (experiment / "save", f"is part of the input --experiment {experiment}"),
        "a folder holding it": (tmp_path, f"contains the input --experiment {experiment}"),
    }[where]
    before = tree(tmp_path)
    status, _, stderr = run_cli(capsys, "export", "--experiment", experiment, "--out", out)
    assert status == 2
    assert dmha_lines(stderr) == [f"dmha: error: --out {out} {words}; give the output "
                                  "another path"]
    assert tree(tmp_path) == before


def test_a_folder_dmha_did_not_write_is_never_replaced(original, tmp_path, capsys):
    checkpoint, config = original
    out = tmp_path / "mine"
    write_text(out / "notes.txt", "mine")
    write_text(out / "hyperparams.yaml", "not dmha's\n")
    before = tree(out)
    status, _, stderr = run_cli(capsys, "import-original", "--checkpoint", checkpoint,
                                "--config", config, "--out", out)
    assert status == 2
    assert dmha_lines(stderr) == [
        f"dmha: error: {out}: not replaced: a folder that is not a model folder written by "
        "dmha (it holds notes.txt); give a new or empty folder, or a model folder written by "
        "dmha (replaced whole)"]
    assert tree(out) == before


# ---------------------------------------------------------------- item 2: outputs vs inputs


def issue_cases(models, audio, tmp_path):
    """The issue's cases: name -> (args, the words of the refusal)."""
    model = tmp_path / "model"
    shutil.copytree(models["speaker"], model)
    wav = tmp_path / "a.wav"
    shutil.copy(audio / "spk1/a.wav", wav)
    trials, dev = tmp_path / "t.txt", tmp_path / "dev.txt"
    write_text(trials, f"1 {wav} {audio / 'spk1/b.flac'}\n")
    labelled_trials(dev, audio)
    listing = tmp_path / "emb.txt"
    write_text(listing, f"{wav}\n")
    scored = ["score", "--model", model, "--trials", trials, "--no_progress"]
    calibrated = ["calibrate", "--model", model, "--trials", dev, "--p_target", "0.01",
                  "--no_progress"]
    return {
        "score --out trials": ([*scored, "--out", trials],
                               f"--out {trials} is the input --trials {trials}"),
        "score --plot --out": ([*scored, "--out", tmp_path / "s.txt", "--plot",
                                tmp_path / "s.txt"],
                               f"--plot {tmp_path / 's.txt'} is also --out {tmp_path / 's.txt'}"),
        "score --plot trials": ([*scored, "--out", tmp_path / "s.txt", "--plot", trials],
                                f"--plot {trials} is the input --trials {trials}"),
        "calibrate --plot checkpoint": (
            [*calibrated, "--plot", model / "embedding_model.ckpt"],
            f"--plot {model / 'embedding_model.ckpt'} is part of the input --model {model}"),
        "calibrate --plot calibration.json": (
            [*calibrated, "--plot", model / "calibration.json"],
            f"--plot {model / 'calibration.json'} is also calibration.json "
            f"{model / 'calibration.json'}"),
        "calibrate --plot trials": ([*calibrated, "--plot", dev],
                                    f"--plot {dev} is the input --trials {dev}"),
        "age --out audio": (["age", "--model", models["age"], "--out", wav, wav],
                            f"--out {wav} is the input audio file {wav}"),
        "embed ids file --list": (
            ["embed", "--model", model, "--list", listing, "--out", tmp_path / "emb.npy"],
            f"the .txt file of --out {listing} is the input --list {listing}"),
    }


CASES = ["score --out trials", "score --plot --out", "score --plot trials",
         "calibrate --plot checkpoint", "calibrate --plot calibration.json",
         "calibrate --plot trials", "age --out audio", "embed ids file --list"]


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_is_an_input_is_refused_naming_both(models, audio, tmp_path, capsys,
                                                           case):
    args, words = issue_cases(models, audio, tmp_path)[case]
    before = tree(tmp_path)
    status, stdout, stderr = run_cli(capsys, *args)
    assert status == 2
    assert dmha_lines(stderr) == [f"dmha: error: {words}; give the output another path"]
    assert tree(tmp_path) == before and stdout == ""


# ---------------------------------------------------------------- item 4: re-export


@pytest.mark.slow
def test_rewriting_a_model_folder_keeps_its_calibration_and_onnx(original, tmp_path, capsys):
    """The same model again: the calibration and the graph are kept, byte for byte. Other
    weights: the graph is exported again from them; the calibration, fitted on the old
    embeddings, is refused with the reason, and the folder left as it was."""
    checkpoint, config = original
    out = tmp_path / "model"
    command = ["import-original", "--checkpoint", checkpoint, "--config", config, "--out", out]
    assert run_cli(capsys, *command)[0] == 0
    assert run_cli(capsys, "export", "--model", out, "--onnx")[0] == 0
    write_text(out / "calibration.json", '{"stands for": "dmha calibrate"}\n')
    before = tree(out)
    status, _, stderr = run_cli(capsys, *command)
    assert status == 0, stderr
    assert tree(out).keys() == before.keys()
    for name in ("calibration.json", "embedding.onnx"):
        assert (out / name).read_bytes() == before[out / name], name

    from tests.test_original import random_original_model, save_original, original_settings

    settings = original_settings("VGG4L", "DoubleMHA")
    retrained = random_original_model(settings)
    with torch.no_grad():
        next(retrained.parameters()).mul_(1.5)
    other = tmp_path / "retrained"
    other.mkdir()
    checkpoint, config = save_original(retrained, settings, other)
    command = ["import-original", "--checkpoint", checkpoint, "--config", config, "--out", out]
    before = tree(out)
    status, _, stderr = run_cli(capsys, *command)
    assert status == 2
    (line,) = dmha_lines(stderr)
    assert line.startswith(f"dmha: error: {out / 'calibration.json'}: fitted on the model in "
                           f"{out}, whose embeddings the new model does not reproduce")
    assert tree(out) == before

    (out / "calibration.json").unlink()
    status, _, stderr = run_cli(capsys, *command)
    assert status == 0, stderr
    assert (out / "embedding.onnx").read_bytes() != before[out / "embedding.onnx"]
    loaded = EncoderClassifier.from_hparams(source=str(out), savedir=str(tmp_path / "loaded"))
    wav = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = loaded.encode_batch(wav)[:, 0]
    ours = OnnxEmbedder(str(out / "embedding.onnx"))(wav)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- acceptance 2: every verb


def writing_verbs(models, audio, tmp_path):
    """Every verb that writes: name -> (args, {output option: a good value}, inputs, work).

    ``inputs`` are every file and folder the verb reads; ``work`` names what
    the verb calls to start its work (``(module, attribute)``).
    """
    model = tmp_path / "model"
    shutil.copytree(models["speaker"], model)
    age_model = tmp_path / "age_model"
    shutil.copytree(models["age"], age_model)
    clips = tmp_path / "clips"
    for name in ("spk1/a.wav", "spk2/c.wav"):
        (clips / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(audio / name, clips / name)
    wav, other = clips / "spk1/a.wav", clips / "spk2/c.wav"
    listing, cohort, trials, dev = (tmp_path / n for n in ("l.lst", "c.lst", "t.txt", "d.txt"))
    write_text(listing, f"{other}\n")
    write_text(cohort, f"{wav}\n{other}\n")
    write_text(trials, f"1 {wav} {other}\n")
    dev_audio = labelled_trials(dev, clips)
    data = tmp_path / "corpus"
    labels = source_args("labels", data)
    experiment = fake_experiment(tmp_path / "ex1")
    checkpoint, config = tmp_path / "m.chkpt", tmp_path / "m_config.pkl"
    write_text(checkpoint, "weights")
    write_text(config, "settings")
    model_files = [model, model / "hyperparams.yaml", model / "embedding_model.ckpt"]
    audio_inputs = [wav, listing, clips / "spk2", clips]
    return {
        "embed": (["embed", "--model", model, "--list", listing, "--folder", clips / "spk2",
                   wav, "--no_progress"], {"--out": tmp_path / "e.npz"},
                  audio_inputs + model_files, (embed, "load_model")),
        "age": (["age", "--model", age_model, "--list", listing, wav, "--no_progress"],
                {"--out": tmp_path / "a.csv"},
                [wav, other, listing, age_model, age_model / "classifier.ckpt"],
                (age_verb, "load_model")),
        "score": (["score", "--model", model, "--trials", trials, "--cohort", cohort,
                   "--no_progress"],
                  {"--out": tmp_path / "s.txt", "--plot": tmp_path / "s.png"},
                  [trials, cohort, wav, other, clips, *model_files], (score, "load_model")),
        "calibrate": (["calibrate", "--model", model, "--trials", dev, "--p_target", "0.01",
                       "--no_progress"], {"--plot": tmp_path / "det.png"},
                      [dev, dev_audio[0], clips, *model_files], (calibrate, "load_model")),
        "features": (["features", "-i", listing, "--data_dir", clips, "--jobs", "1"],
                     {"--out_dir": tmp_path / "feats"}, [listing, clips, wav],
                     (features, "extract_features")),
        "prepare": (["prepare", *labels, "--jobs", "1"], {"--save_folder": tmp_path / "prep"},
                    [data, data / "train.lst", data / "valid.lst", data / "clients.lst",
                     data / "impostors.lst", data / "a.wav"],
                    (prepare, "prepare_labels_file")),
        "export": (["export", "--experiment", experiment], {"--out": tmp_path / "m"},
                   [experiment, experiment / "hyperparams.yaml", experiment / "save",
                    experiment / "manifests/train.csv"],
                   (model_folder, "export_experiment")),
        "import-original": (["import-original", "--checkpoint", checkpoint, "--config", config],
                            {"--out": tmp_path / "m"}, [checkpoint, config, tmp_path],
                            (import_original, "import_original")),
    }


VERB_OUTPUTS = [("embed", "--out"), ("age", "--out"), ("score", "--out"), ("score", "--plot"),
                ("calibrate", "--plot"), ("features", "--out_dir"),
                ("prepare", "--save_folder"), ("export", "--out"), ("import-original", "--out")]


@pytest.mark.parametrize("verb, option", VERB_OUTPUTS)
def test_no_output_option_can_be_given_an_input(models, audio, tmp_path, capsys, monkeypatch,
                                                verb, option):
    """Each input of the verb, file or folder, as the output: refused before any work, no
    file changed, the output named on the one ``dmha:`` line."""
    args, outputs, inputs, (module, work) = writing_verbs(models, audio, tmp_path)[verb]

    @functools.wraps(getattr(module, work))  # its options are read from its signature
    def started(*args, **kwargs):
        raise AssertionError(f"{verb} started its work with {option} on an input")

    monkeypatch.setattr(module, work, started)
    for given in inputs:
        before = tree(tmp_path)
        chosen = {**outputs, option: given}
        status, _, stderr = run_cli(capsys, *args, *(a for o in chosen.items() for a in o))
        assert status in (1, 2), (given, stderr)
        (line,) = dmha_lines(stderr)
        assert str(given) in line, (given, line)
        assert tree(tmp_path) == before, given


@pytest.mark.parametrize("verb, option", VERB_OUTPUTS)
def test_a_non_empty_folder_given_as_an_output_is_never_emptied(models, audio, original,
                                                                tmp_path, capsys, verb, option):
    """With the real work: refused, or written into beside what the folder held."""
    args, outputs, _, _ = writing_verbs(models, audio, tmp_path)[verb]
    if verb == "import-original":
        args = ["import-original", "--checkpoint", original[0], "--config", original[1]]
    mine = tmp_path / "mine"
    write_text(mine / "notes.txt", "mine")
    write_audio(mine / "sub" / "take.wav")
    before = tree(mine)
    chosen = {**outputs, option: mine}
    status, _, stderr = run_cli(capsys, *args, *(a for o in chosen.items() for a in o))
    assert "Traceback" not in stderr
    after = tree(mine)
    assert {path: after.get(path) for path in before} == before, (status, stderr)
