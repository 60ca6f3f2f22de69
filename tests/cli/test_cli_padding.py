"""Padded batches give every utterance its embedding alone (issue 26, item 5).

For every ``--embedding`` and the default speaker and age models, as
``recipes/train.py`` builds them from ``hparams/*.yaml`` (random weights:
exactness is a property of the computation), embeddings of padded batches are
compared with those of each file alone, through ``dmha embed`` (length buckets
against one file per batch) and through SpeechBrain's own
``EncoderClassifier.encode_batch`` given the waveforms' relative lengths, as
every SpeechBrain user passes them. The references are files alone, where no
padding exists.

Model folders written before 2026-12-08 name the features, normalisation and
embedding model as SpeechBrain's modules themselves (``old_layout`` below
writes one); they load and compute what they computed.
"""

import shutil

import numpy as np
import pytest
import soundfile
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from tests.cli.cli_helpers import (
    AGE_GROUPS,
    GROUP_CENTRES,
    OLD_MODULES,
    reference_wav,
    run_cli,
    without_waveform_model,
)
from tests.recipe_helpers import REPO
from tests.test_inference import voice

from dmha_modules.inference import DMHAClassifier
from dmha_modules.nn.heads import Classifier
from dmha_modules.recipe.build import embedding_spec
from dmha_modules.folders.model_folder import write_model_folder

# Model folder name -> (hparams file, overrides): the two defaults, then every other
# --embedding (dmha with each front-end).
MODELS = {
    "speaker": ("speaker.yaml", {}),
    "age": ("age.yaml", {}),
    "ecapa": ("speaker.yaml", {"embedding": "ecapa"}),
    "dmha_VGG4L": ("speaker.yaml", {"embedding": "dmha"}),
    "dmha_VGG3L": ("speaker.yaml", {"embedding": "dmha", "front_end": "VGG3L"}),
    "dmha_ResNet": ("speaker.yaml", {"embedding": "dmha", "front_end": "ResNet"}),
}
WORST_COSINE = 0.9999


def calibrate_batch_norms(modules, wavs):
    """Sets every BatchNorm's statistics to those of ``wavs`` (train-mode passes).

    With the initial statistics the embeddings of all inputs point nearly the
    same way, and a comparison of embeddings could not fail.
    """
    model = modules["embedding_model"]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for wav in wavs:
            feats = modules["mean_var_norm"](modules["compute_features"](wav[None]))
            model(torch.cat([feats, feats.flip(1)]))  # two rows for BatchNorm's training
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def write_default_folder(name, root, class_path=None):
    """The model folder of ``MODELS[name]``: the YAML's modules, random weights.

    ``class_path``: the embedding model's class as the folder names it (default the YAML's).
    """
    hparams_file, overrides = MODELS[name]
    with open(REPO / "hparams" / hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"output_folder": str(root / "out" / name),
                                       "data_folder": str(root / "data"), **overrides})
    modules = {key: hparams[key]
               for key in ("compute_features", "mean_var_norm", "embedding_model")}
    wavs = [torch.from_numpy(voice(1.5, 16000, 100 + 20 * i, seed=i)) for i in range(8)]
    calibrate_batch_norms(modules, wavs)
    emb_dim = hparams["emb_dim"]
    task = hparams["task"]
    classes = AGE_GROUPS if task == "age" else ["s0", "s1", "s2"]
    modules["classifier"] = Classifier(emb_dim, n_classes=len(classes), hidden_size=emb_dim)
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(classes)
    age_decoding = dict(group_posteriors="softmax", score_scale=1.0,
                        group_centres=GROUP_CENTRES) if task == "age" else None
    folder = root / name
    spec_path, kwargs = embedding_spec(hparams)
    write_model_folder(str(folder), modules, (class_path or spec_path, kwargs), encoder,
                       wavs[0], task=task, age_decoding=age_decoding)
    return folder


@pytest.fixture(scope="module")
def default_folder(tmp_path_factory):
    """``default_folder(name)``: the model folder of ``MODELS[name]``, written once."""
    root = tmp_path_factory.mktemp("padding")
    written = {}

    def folder(name):
        if name not in written:
            written[name] = write_default_folder(name, root)
        return written[name]

    return folder


def worst_cosine(a, b):
    """The smallest cosine between the rows of ``a`` and ``b``."""
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


def assert_informative(embeddings):
    """No two utterances' embeddings are within ten times the tolerance of ``WORST_COSINE``.

    Otherwise batched embeddings could pass the check while belonging to other files.
    """
    embeddings = torch.as_tensor(np.asarray(embeddings))
    cosines = torch.nn.functional.cosine_similarity(embeddings[:, None], embeddings[None], dim=2)
    others = cosines[~torch.eye(len(cosines), dtype=torch.bool)]
    assert float(others.max()) < 1 - 10 * (1 - WORST_COSINE)


def speechbrain_batches(classifier, wavs, batch_size):
    """SpeechBrain's ``encode_batch`` of zero-padded, longest-first batches ``(N, E)``.

    Each batch gets the waveforms' relative lengths, as every SpeechBrain user
    passes them (``samples / longest``).
    """
    order = sorted(range(len(wavs)), key=lambda i: -len(wavs[i]))
    embeddings = [None] * len(wavs)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        longest = len(wavs[chosen[0]])
        batch = torch.zeros(len(chosen), longest)
        for row, index in enumerate(chosen):
            batch[row, :len(wavs[index])] = wavs[index]
        wav_lens = torch.tensor([len(wavs[i]) / longest for i in chosen])
        with torch.no_grad():
            encoded = classifier.encode_batch(batch, wav_lens)[:, 0]
        for row, index in enumerate(chosen):
            embeddings[index] = encoded[row]
    return torch.stack(embeddings)


def padded(wavs):
    """Zero-padded batch ``(N, longest)`` of ``wavs`` and their relative lengths ``(N,)``."""
    longest = max(len(wav) for wav in wavs)
    batch = torch.zeros(len(wavs), longest)
    for row, wav in enumerate(wavs):
        batch[row, :len(wav)] = wav
    return batch, torch.tensor([len(wav) / longest for wav in wavs])


def speechbrain_alone(classifier, wavs):
    """SpeechBrain's ``encode_batch`` of each waveform alone ``(N, E)``."""
    with torch.no_grad():
        return torch.cat([classifier.encode_batch(wav[None])[:, 0] for wav in wavs])


def generated_voices():
    """Eight voices of 0.5 to 4 s, so that padding reaches across every receptive field."""
    return [torch.from_numpy(voice(seconds, 16000, 90 + 17 * i, seed=10 + i))
            for i, seconds in enumerate((4.0, 0.5, 2.7, 1.1, 3.3, 0.8, 1.9, 2.2))]


def real_utterances(shared_data):
    """50 real utterances of 2.3 to 17.3 s: 35 of speechocean762, 15 of LibriSpeech test-other."""
    ocean = sorted((shared_data / "speechocean762" / "WAVE").glob("*/*.flac"))[::57][:35]
    libri = sorted((shared_data / "librispeech-test-other-10spk").glob("*/*.flac"))[::7][:15]
    assert len(ocean) == 35 and len(libri) == 15
    return ocean + libri


# ------------------------------------------------------------- generated audio


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_padded_batches_equal_files_alone_on_generated_audio(name, default_folder, tmp_path):
    classifier = EncoderClassifier.from_hparams(source=str(default_folder(name)),
                                                savedir=str(tmp_path / "sb"))
    wavs = generated_voices()
    alone = speechbrain_alone(classifier, wavs)
    batched = speechbrain_batches(classifier, wavs, batch_size=len(wavs))
    assert_informative(alone)
    assert worst_cosine(batched, alone) >= WORST_COSINE
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dmha_embed_makes_folders_naming_speechbrains_ecapa_exact(tmp_path, capsys):
    # Folders written before ExactECAPA name SpeechBrain's own class.
    speechbrain_ecapa = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
    folder = write_default_folder("ecapa", tmp_path, speechbrain_ecapa)
    assert f"!new:{speechbrain_ecapa}" in (folder / "hyperparams.yaml").read_text()
    (tmp_path / "audio").mkdir()
    paths = [tmp_path / "audio" / f"{i}.wav" for i in range(len(generated_voices()))]
    for path, wav in zip(paths, generated_voices()):
        soundfile.write(path, wav.numpy(), 16000, subtype="FLOAT")
    alone = dmha_embed(capsys, folder, paths, "0.25", tmp_path)
    assert_informative(alone)
    assert worst_cosine(dmha_embed(capsys, folder, paths, "120", tmp_path), alone) >= WORST_COSINE


# ------------------------------------------------------ folders of the old layout


def old_layout(folder):
    """Rewrites ``folder``'s ``hyperparams.yaml`` to the layout of the main of 2026-12-08."""
    path = folder / "hyperparams.yaml"
    path.write_text(without_waveform_model(path.read_text(encoding="utf-8")), encoding="utf-8")


@pytest.mark.slow
def test_folders_of_the_old_layout_compute_what_they_computed(default_folder, tmp_path):
    new = default_folder("speaker")
    old = tmp_path / "old"
    shutil.copytree(new, old)
    old_layout(old)
    assert OLD_MODULES in (old / "hyperparams.yaml").read_text(encoding="utf-8")
    load = lambda cls, folder, name: cls.from_hparams(source=str(folder),  # noqa: E731
                                                      savedir=str(tmp_path / name))
    old_sb, new_sb = load(EncoderClassifier, old, "old_sb"), load(EncoderClassifier, new, "new_sb")
    wavs = generated_voices()
    alone = speechbrain_alone(new_sb, wavs)
    assert_informative(alone)
    torch.testing.assert_close(speechbrain_alone(old_sb, wavs), alone, rtol=0, atol=0)
    batch, wav_lens = padded(wavs)
    # SpeechBrain's encode_batch on the old layout: its own three steps, waveform lengths.
    features, norm, model = (new_sb.hparams.compute_features, new_sb.hparams.mean_var_norm,
                             new_sb.hparams.embedding_model)
    with torch.no_grad():
        as_before = model(norm(features(batch), wav_lens), wav_lens)
        torch.testing.assert_close(old_sb.encode_batch(batch, wav_lens), as_before)
        # ... exact given frame lengths, as the folder's documentation said,
        frame_lens = features.frame_lengths(wav_lens, batch.shape[1])
        torch.testing.assert_close(old_sb.encode_batch(batch, frame_lens)[:, 0], alone,
                                   rtol=1e-4, atol=1e-4)
        # ... and through DMHAClassifier (every dmha verb) with waveform lengths.
        dmha = load(DMHAClassifier, old, "old_dmha").encode_batch(batch, wav_lens)[:, 0]
    torch.testing.assert_close(dmha, alone, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- real speech


def dmha_embed(capsys, folder, paths, batch_seconds, tmp_path):
    """``dmha embed --list`` of ``paths`` with ``--batch_seconds``: ``(N, E)``."""
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
    out = tmp_path / f"{batch_seconds}.npy"
    status, stdout, stderr = run_cli(capsys, "embed", "--model", folder, "--list", listing,
                                     "--out", out, "--batch_seconds", batch_seconds,
                                     "--no_progress")
    assert status == 0, stdout + stderr
    embeddings = np.load(out)
    assert embeddings.shape[0] == len(paths)
    return embeddings


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_padded_batches_equal_files_alone_on_real_speech(
    name, default_folder, shared_data, tmp_path, capsys
):
    paths = real_utterances(shared_data)
    folder = default_folder(name)
    # 0.25 s: every file is alone in its batch (none is shorter).
    alone = dmha_embed(capsys, folder, paths, "0.25", tmp_path)
    assert_informative(alone)
    # dmha embed's default length buckets of 120 s of padded audio.
    bucketed = dmha_embed(capsys, folder, paths, "120", tmp_path)
    assert worst_cosine(bucketed, alone) >= WORST_COSINE
    classifier = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "sb"))
    batched = speechbrain_batches(classifier, [reference_wav(path) for path in paths], 10)
    assert worst_cosine(batched, alone) >= WORST_COSINE
