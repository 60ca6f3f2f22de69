"""Fixtures of the command tests: tiny model folders, an audio folder, SpeechBrain references.

Written once per session and shared by every ``test_cli_*`` module.
"""

import pytest
import soundfile
import torch
from tests.cli.cli_helpers import (
    AGE_GROUPS,
    AM_SCALE,
    AUDIO,
    EMB,
    GROUP_CENTRES,
    KWARGS,
    SPEAKER_THRESHOLD,
    reference_wav,
)
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from tests.test_inference import voice

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.nn.heads import AgeRegressionHead, Classifier
from dmha_modules.folders.model_folder import write_model_folder
from dmha_modules.nn.models import EmbeddingModel


def calibrated_modules(seed, n_classes, cosine=True, age_head=False):
    """Tiny random modules whose BatchNorm statistics centre the embeddings.

    Untrained, the embeddings of all inputs point the same way (cosines near
    1); with the statistics of a few inputs they differ, so the comparisons
    in the tests can fail.
    """
    torch.manual_seed(seed)
    modules = dict(
        compute_features=LogMelFeatures(),
        mean_var_norm=UtteranceNorm(),
        embedding_model=EmbeddingModel(**KWARGS).eval(),
        classifier=Classifier(EMB, n_classes=n_classes, hidden_size=EMB, cosine=cosine),
    )
    model = modules["embedding_model"]
    captured = []
    hook = model.norm.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    with torch.no_grad():
        for i in range(8):
            wav = torch.from_numpy(voice(1.5, 16000, 100 + 25 * i, seed=i))[None]
            model(modules["mean_var_norm"](modules["compute_features"](wav)))
        hook.remove()
        stats = torch.cat(captured)
        model.norm.running_mean.copy_(stats.mean(0))
        model.norm.running_var.copy_(stats.var(0) + 1e-4)
    if age_head:
        modules["age_head"] = AgeRegressionHead(EMB)
        modules["age_head"].set_age_stats(24.0, 9.0)
    return modules


def encoder(labels):
    label_encoder = CategoricalEncoder()
    label_encoder.update_from_iterable(labels)
    return label_encoder


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Model folders: ``speaker`` (threshold 0.5), ``age`` (years head, logits) and
    ``age_centres`` (no years head, cosine classifier at AM-Softmax scale)."""
    root = tmp_path_factory.mktemp("models")
    sample = torch.from_numpy(voice(1.0, 16000, 140))
    spec = ("dmha_modules.nn.models.EmbeddingModel", KWARGS)
    folders = {name: root / name for name in ("speaker", "age", "age_centres")}
    write_model_folder(
        str(folders["speaker"]), calibrated_modules(0, 5), spec,
        encoder([f"s{i}" for i in range(5)]), sample,
        verification_threshold=SPEAKER_THRESHOLD,
    )
    write_model_folder(
        str(folders["age"]), calibrated_modules(1, 4, cosine=False, age_head=True), spec,
        encoder(AGE_GROUPS), sample, task="age",
        age_decoding=dict(group_posteriors="softmax", score_scale=1.0,
                          group_centres=GROUP_CENTRES),
    )
    write_model_folder(
        str(folders["age_centres"]), calibrated_modules(2, 4), spec, encoder(AGE_GROUPS),
        sample, task="age",
        age_decoding=dict(group_posteriors="softmax", score_scale=AM_SCALE,
                          group_centres=GROUP_CENTRES),
    )
    return folders


@pytest.fixture(scope="session")
def speechbrain(models, tmp_path_factory):
    """``speechbrain(name)``: the folder loaded by SpeechBrain's own EncoderClassifier."""
    savedir = tmp_path_factory.mktemp("speechbrain")
    loaded = {}

    def load(name):
        if name not in loaded:
            loaded[name] = EncoderClassifier.from_hparams(
                source=str(models[name]), savedir=str(savedir / name)
            )
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def reference(speechbrain):
    """``reference(name, path)``: SpeechBrain's embedding ``(E,)`` of one file."""

    cache = {}

    def embed(name, path):
        if (name, str(path)) not in cache:
            with torch.no_grad():
                wav = reference_wav(path)[None]
                cache[name, str(path)] = speechbrain(name).encode_batch(wav)[0, 0].numpy()
        return cache[name, str(path)]

    return embed


@pytest.fixture(scope="session")
def audio(tmp_path_factory):
    """A folder of the good files of ``AUDIO`` (3 speakers, 4 rates, a stereo file)."""
    root = tmp_path_factory.mktemp("audio")
    for seed, (name, (rate, seconds, f0, channels, subtype)) in enumerate(AUDIO.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / name, voice(seconds, rate, f0, seed, channels), rate,
                        subtype=subtype)
    return root
