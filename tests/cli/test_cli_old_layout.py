"""Model folders and experiment folders written before the sub-packages (dmha's main of
2026-12-07) name classes by their old module paths (``dmha_modules.features.LogMelFeatures``)
in ``hyperparams.yaml``; they still load, and give the embeddings they gave.

The old folders are made here: a folder written by today's code, its YAML's module paths
rewritten to the old layout's with the table below (the layout of that main, written out
independently of the package's aliases).
"""

import os
import re
import shutil

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.utils.checkpoints import Checkpointer
from tests.cli.cli_helpers import (
    assert_embeddings_equal,
    reference_wav,
    run_cli,
    without_waveform_model,
)
from tests.test_inference import voice

from dmha_modules.recipe.build import build_model, make_label_encoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# New module -> the module path the main of 2026-12-07 wrote for it.
NEW_TO_OLD = {
    "dmha_modules.nn.features": "dmha_modules.features",
    "dmha_modules.nn.masks": "dmha_modules.masks",
    "dmha_modules.nn.front_ends": "dmha_modules.front_ends",
    "dmha_modules.nn.pooling": "dmha_modules.pooling",
    "dmha_modules.nn.heads": "dmha_modules.heads",
    "dmha_modules.nn.losses": "dmha_modules.losses",
    "dmha_modules.nn.models": "dmha_modules.models",
    "dmha_modules.recipe.training": "dmha_modules.training",
    "dmha_modules.recipe.checkpoints": "dmha_modules.checkpoints",
    "dmha_modules.recipe.datasets": "dmha_modules.datasets",
    "dmha_modules.recipe.build": "dmha_modules.model_builder",
    "dmha_modules.prepare": "dmha_modules.data_prep",
}
# A path of the sub-packages, which the old layout did not have.
NEW_PATH = re.compile(r"dmha_modules\.(nn|age|scoring|io|folders|recipe)\.")


def to_old_layout(path):
    """Rewrites the module paths of the YAML at ``path`` to the old layout's; returns the text.

    A model folder's also loses its waveform embedding model, which came later.
    """
    text = open(path, encoding="utf-8").read()
    if "waveform_embedding_model" in text:
        text = without_waveform_model(text)
    for new, old in NEW_TO_OLD.items():
        text = re.sub(re.escape(new) + r"\b", old, text)
    assert not NEW_PATH.search(text), NEW_PATH.search(text).group(0)
    assert "dmha_modules.features." in text  # the rewrite did rewrite
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def speechbrain_embedding(folder, wav, savedir):
    model = EncoderClassifier.from_hparams(source=str(folder), savedir=str(savedir))
    with torch.no_grad():
        return model.encode_batch(wav[None])[0, 0].numpy()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An experiment folder as ``recipes/train.py`` leaves it (hparams/speaker.yaml, its
    manifests, one checkpoint of untrained weights), in today's module paths."""
    from hyperpyyaml import load_hyperpyyaml

    root = tmp_path_factory.mktemp("experiment")
    folder = root / "speaker"
    manifests = folder / "manifests"
    manifests.mkdir(parents=True)
    for split, speakers in (("train", ["s0", "s1", "s2"]), ("valid", ["s3"]), ("test", ["s4"])):
        rows = ["ID,duration,wav,spk_id"]
        for i, speaker in enumerate(speakers):
            wav = root / f"{split}{i}.wav"
            soundfile.write(wav, voice(1.5, 16000, 100 + 30 * i, seed=i), 16000)
            rows.append(f"{split}{i},1.5,{wav},{speaker}")
        (manifests / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    shutil.copy(os.path.join(REPO, "hparams", "speaker.yaml"), folder / "hyperparams.yaml")
    overrides = {"output_folder": str(folder), "save_folder": str(folder / "save"),
                 "manifest_folder": str(manifests), "data_folder": str(root)}
    with open(folder / "hyperparams.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    torch.manual_seed(0)
    modules, _, _ = build_model(hparams, make_label_encoder(hparams))
    trained = {name: modules[name] for name in ("embedding_model", "classifier")}
    with torch.no_grad():  # statistics that make different voices' embeddings differ
        for name, buffer in trained["embedding_model"].named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    Checkpointer(hparams["save_folder"], recoverables=trained).save_checkpoint(
        meta={hparams["selection_metric"]: 0.1})
    return folder


@pytest.mark.slow
def test_an_experiment_folder_of_the_old_layout_exports_the_same_model(experiment, tmp_path,
                                                                        capsys):
    old = tmp_path / "old"
    shutil.copytree(experiment, old)
    to_old_layout(old / "hyperparams.yaml")
    for folder in (experiment, old):
        status, _, stderr = run_cli(capsys, "export", "--experiment", folder,
                                    "--out", tmp_path / f"{folder.name}_model")
        assert status == 0, stderr
    wav = reference_wav(experiment.parent / "test0.wav")
    new_embedding = speechbrain_embedding(tmp_path / "speaker_model", wav, tmp_path / "sb_new")
    old_embedding = speechbrain_embedding(tmp_path / "old_model", wav, tmp_path / "sb_old")
    assert_embeddings_equal(old_embedding, new_embedding)
    assert np.abs(new_embedding).max() > 0


@pytest.mark.parametrize("name", ["speaker", "age"])
def test_a_model_folder_of_the_old_layout_loads_and_gives_the_same_embeddings(
        models, audio, reference, tmp_path, capsys, name):
    folder = tmp_path / "model"
    shutil.copytree(models[name], folder)
    text = to_old_layout(folder / "hyperparams.yaml")
    assert "!new:dmha_modules.models." in text
    path = sorted(audio.rglob("*.wav"))[0]
    wav = reference_wav(path)
    assert_embeddings_equal(speechbrain_embedding(folder, wav, tmp_path / "sb"),
                            reference(name, path))
    status, _, stderr = run_cli(capsys, "embed", "--model", folder, "--out",
                                     tmp_path / "e.npz", "--no_progress", path)
    assert status == 0, stderr
    (embedding,) = np.load(tmp_path / "e.npz").values()  # one array per file
    assert_embeddings_equal(embedding.reshape(-1), reference(name, path))
