"""Imported models of the original code compute what its own pipeline computed, on real speech.

Each model is written here from the original's classes (``test_original``'s
references: VGG3L, VGG4L and the age variant's ``resnet``; the AM-Softmax
head of ``model.py`` or the sigmoid head of ``model_sigmoid.py``) and saved
as its train scripts save it, with the settings they leave. The reference
pipeline is the original's: ``featureExtractor.mfsc`` (librosa, as called
there) on the whole file, CMN or CMVN as its ``data.py``, one utterance at
a time through ``getEmbedding`` and ``forward``, and decisions as its
scripts take them (``torch.max`` of the outputs; ``prediction2label`` of
the sigmoid outputs for ``train_ordinal.py``).

Ours: ``load_original``, then ``LogMelFeatures(framing=loaded.framing)``,
``UtteranceNorm(std_norm=loaded.std_norm)``, ``EmbeddingModel``,
``Classifier`` and ``decide(cosines, loaded.decision)`` on padded batches.

Covering set: the full product of front-end (3) x pooling (3) x head (2) x
normalisation (2), 36 small models (k = 16 for the VGGs, 32 for the resnet,
whose heads would otherwise have 2 dimensions; 4 heads; 6 age groups), each
on three speechocean762 speakers (16 kHz, their first second, the age
variant's training crop) and three FSDD speakers (8 kHz digits).
"""

import functools

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from tests.test_features import original_mfsc
from tests.test_original import (
    AGE_GROUPS,
    age_settings,
    converted_modules,
    original_outputs,
    random_original_model,
    save_original,
)

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.scoring.decisions import decide

HEADS = {"model.py": "argmax", "model_sigmoid.py": "ordinal"}
CHANNELS = {"VGG3L": 16, "VGG4L": 16, "resnet": 32}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: faster for these small models, and not slowed down
    by other processes on a shared CPU (two threads each waiting for the other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_age_settings(front_end, pooling, model_file, normalization):
    """``age_settings`` with the test's channels."""
    settings = age_settings(front_end, pooling, model_file, normalization)
    settings.kernel_size = CHANNELS[front_end]
    return settings


@functools.lru_cache(maxsize=None)
def utterances(shared_data):
    """``{rate: [waveform as soundfile reads it]}``: 3 speakers at 16 kHz, 3 at 8 kHz."""
    corpus = shared_data / "speechocean762"
    rows = [line.split() for line in (corpus / "train" / "wav.scp").read_text().splitlines()]
    paths = []
    for _, path in rows:
        if all(path.split("/")[1] != other.parts[-2] for other in paths):
            paths.append(corpus / path)
    speech = {16000: [], 8000: []}
    for path in paths[:3] + [shared_data / "fsdd" / name / f"3_{name}_7.flac"
                             for name in ("george", "jackson", "theo")]:
        y, sr = sf.read(path)
        speech[sr].append(y[:sr])
    return speech


@functools.lru_cache(maxsize=None)
def original_log_mel(shared_data, rate, index):
    """``mfsc`` of an utterance, transposed as the original's ``data.py`` reads it: ``(frames, 80)``."""
    return np.transpose(original_mfsc(utterances(shared_data)[rate][index], rate))


def original_normalize(features, normalization):
    """The original's ``data.py`` normalisation."""
    features = features - np.mean(features, axis=0)
    if normalization == "cmvn":
        std = np.std(features, axis=0)
        features = features / np.where(std > 0.01, std, 1.0)
    return features


def our_outputs(loaded, model, classifier, waveforms, rate, framing, std_norm):
    """Embeddings, decisions and cosines of ``waveforms`` in one padded batch, with our modules."""
    compute = LogMelFeatures(sample_rate=rate, framing=framing)
    norm = UtteranceNorm(std_norm=std_norm)
    wavs = torch.zeros(len(waveforms), max(len(y) for y in waveforms))
    for row, y in enumerate(waveforms):
        wavs[row, : len(y)] = torch.from_numpy(y)
    lengths = torch.tensor([len(y) for y in waveforms]) / wavs.shape[1]
    with torch.no_grad():
        frame_lengths = compute.frame_lengths(lengths, wavs.shape[1])
        embeddings = model(norm(compute(wavs, lengths), frame_lengths), frame_lengths)
        cosines = classifier(embeddings)[:, 0]
    return embeddings[:, 0], decide(cosines, loaded.decision), cosines


@pytest.mark.parametrize("normalization", ["cmn", "cmvn"])
@pytest.mark.parametrize("model_file", list(HEADS))
@pytest.mark.parametrize("pooling", ["Attention", "MHA", "DoubleMHA"])
@pytest.mark.parametrize("front_end", ["VGG3L", "VGG4L", "resnet"])
def test_imported_model_reproduces_the_original_pipeline(
    shared_data, tmp_path, front_end, pooling, model_file, normalization
):
    settings = small_age_settings(front_end, pooling, model_file, normalization)
    sigmoid = model_file == "model_sigmoid.py"
    reference = random_original_model(settings, sigmoid=sigmoid)
    loaded, model, classifier = converted_modules(*save_original(reference, settings, tmp_path))

    assert (loaded.task, loaded.decision, loaded.framing) == ("age", HEADS[model_file], "original")
    assert loaded.std_norm == (normalization == "cmvn")
    assert loaded.class_names == AGE_GROUPS
    embeddings = []
    for rate, waveforms in utterances(shared_data).items():
        ours, our_decisions, cosines = our_outputs(
            loaded, model, classifier, waveforms, rate, loaded.framing, loaded.std_norm
        )
        for index in range(len(waveforms)):
            features = original_normalize(original_log_mel(shared_data, rate, index), normalization)
            theirs, prediction, decision = original_outputs(reference, features, sigmoid)
            cosine = F.cosine_similarity(ours[index], theirs, dim=0).item()
            assert cosine >= 0.9999, (rate, index, cosine)
            scores = torch.sigmoid(cosines[index]) if sigmoid else cosines[index]
            torch.testing.assert_close(scores, prediction, rtol=0, atol=1e-5)
            assert our_decisions[index].item() == decision, (rate, index, cosines[index])
            embeddings.append(theirs)
    # The comparison has teeth: utterances get embeddings much further apart
    # than the tolerance (the resnet's, averaged over the whole utterance, are
    # the closest).
    similarities = F.cosine_similarity(embeddings[0], torch.stack(embeddings[1:]))
    assert similarities.min() < 0.999


def test_window_framing_or_cmn_would_not_reproduce_it(shared_data, tmp_path):
    # The causes (1) and (2), caught by the check above: features
    # framed from sample 0, or a CMVN model fed CMN features.
    settings = small_age_settings("VGG4L", "DoubleMHA", "model.py", "cmvn")
    reference = random_original_model(settings)
    loaded, model, classifier = converted_modules(*save_original(reference, settings, tmp_path))
    for framing, std_norm in (("window", True), ("original", False)):
        worst = 1.0
        for rate, waveforms in utterances(shared_data).items():
            ours, _, _ = our_outputs(loaded, model, classifier, waveforms, rate, framing, std_norm)
            for index in range(len(waveforms)):
                features = original_normalize(original_log_mel(shared_data, rate, index), "cmvn")
                theirs, _, _ = original_outputs(reference, features, sigmoid=False)
                worst = min(worst, F.cosine_similarity(ours[index], theirs, dim=0).item())
        assert worst < 0.999, (framing, std_norm, worst)
