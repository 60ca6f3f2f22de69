"""ONNX export: ONNX Runtime matches PyTorch on lengths and batches not seen at export.

One export per case (VGG4L at 16 kHz, ResNet at 8 kHz), shared by the tests of
the case: exporting is the slow part (about 10-20 s each, CPU-bound).
"""

import math

import numpy as np
import onnx
import pytest
import torch

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.nn.models import EmbeddingModel
from dmha_modules.folders.onnx_export import TOLERANCE, OnnxEmbedder, export_onnx

EXPORT_SECONDS = 3.0
VAR_FLOOR = 1e-2


def speech_like(seconds, sample_rate, seed):
    """Harmonics of a seed-dependent pitch with vibrato, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 90 + 25 * seed + 20 * torch.sin(2 * math.pi * (2 + seed) * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1
    return wav + 0.01 * torch.randn(t.shape, generator=gen)


def padded_batch(seconds, sample_rate, first_seed=1):
    """Zero-padded batch of ``speech_like`` waveforms and their relative lengths."""
    wavs = [speech_like(s, sample_rate, first_seed + i) for i, s in enumerate(seconds)]
    longest = max(len(wav) for wav in wavs)
    batch = torch.zeros(len(wavs), longest)
    for row, wav in zip(batch, wavs):
        row[: len(wav)] = wav
    return batch, torch.tensor([len(wav) / longest for wav in wavs])


def randomise_batch_norms(model, compute_features, norm, seed=0):
    """Data-driven, floored, then randomly perturbed BN statistics; the model left in eval mode.

    With its initial statistics an untrained model's embedding is dominated by
    constant biases, so any two inputs give nearly the same embedding and the
    comparison would say little. Statistics from a batch of varied utterances
    (as training would set them), each then randomly scaled, make the
    embedding depend on the input.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    wavs = torch.stack(
        [speech_like(1.0, compute_features.sample_rate, s) for s in range(1, 9)]
    )
    lengths = torch.ones(len(wavs))
    model.train()
    model.pooling.eval()  # no head dropping: the statistics eval mode will see
    with torch.no_grad():
        frame_lens = compute_features.frame_lengths(lengths, wavs.shape[1])
        model(norm(compute_features(wavs, lengths), frame_lens), frame_lens)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            # An untrained model's embedding hardly varies between inputs: its
            # last BN would amplify float rounding hundredfold. Floored.
            module.running_var.clamp_(min=VAR_FLOOR)
            std = module.running_var.sqrt()
            module.running_mean.add_(0.2 * std * torch.randn(shape, generator=gen))
            module.running_var.mul_(0.5 + torch.rand(shape, generator=gen))
            module.weight.data.copy_(1 + 0.3 * torch.randn(shape, generator=gen))
            module.bias.data.copy_(0.3 * torch.randn(shape, generator=gen))


@pytest.fixture(scope="module", params=[("VGG4L", 16000), ("ResNet", 8000)], ids=str)
def case(request, tmp_path_factory):
    """An exported random model: (features, norm, model, OnnxEmbedder, path)."""
    front_end, sample_rate = request.param
    torch.manual_seed(0)
    compute_features = LogMelFeatures(sample_rate)
    norm = UtteranceNorm()
    model = EmbeddingModel(
        front_end=front_end, channels=16, pooling="DoubleMHA", heads=4, emb_dim=32
    )
    randomise_batch_norms(model, compute_features, norm)
    path = tmp_path_factory.mktemp(front_end) / "embedding.onnx"
    max_diff = export_onnx(
        compute_features, norm, model, str(path), example_seconds=EXPORT_SECONDS
    )
    assert max_diff <= TOLERANCE
    return compute_features, norm, model, OnnxEmbedder(path), path


def pytorch_embeddings(case, wavs, lengths):
    compute_features, norm, model = case[:3]
    with torch.no_grad():
        frame_lens = compute_features.frame_lengths(lengths, wavs.shape[1])
        return model(norm(compute_features(wavs, lengths), frame_lens), frame_lens)[:, 0]


def max_diff(case, seconds):
    sample_rate = case[0].sample_rate
    wavs, lengths = padded_batch(seconds, sample_rate)
    expected = pytorch_embeddings(case, wavs, lengths)
    got = case[3](wavs, lengths)
    assert got.shape == expected.shape == (len(seconds), 32)
    return float((got - expected).abs().max()), expected


# 0.05 s: a few frames, below the 32 the graph is traced for.
@pytest.mark.slow
@pytest.mark.parametrize("seconds", [1.3, 7.9, 0.05])
def test_matches_pytorch_on_lengths_not_used_at_export(case, seconds):
    diff, _ = max_diff(case, [seconds])
    print(f"{case[4].parent.name} {seconds} s: max abs diff {diff:.2e}")
    assert diff <= TOLERANCE


def test_matches_pytorch_on_a_padded_batch(case):
    diff, expected = max_diff(case, [1.3, 7.9, 0.6])
    print(f"{case[4].parent.name} padded batch: max abs diff {diff:.2e}")
    assert diff <= TOLERANCE
    # The comparison means something: embeddings differ between utterances
    # by far more than the tolerance.
    assert float((expected[0] - expected[1]).abs().max()) > 1000 * TOLERANCE


def test_graph_axes_are_dynamic_and_metadata_set(case):
    compute_features, _, _, embedder, path = case
    graph = onnx.load(path).graph
    shapes = {
        value.name: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in graph.input
    }
    assert shapes["wavs"][0] == shapes["lengths"][0]
    assert all(isinstance(dim, str) and dim for dim in shapes["wavs"] + shapes["lengths"])
    assert embedder.sample_rate == compute_features.sample_rate
    assert embedder.embedding_size == 32
    assert not [p for p in path.parent.iterdir() if p.name != path.name]


def test_embedder_takes_numpy_and_single_waveforms(case):
    embedder = case[3]
    wav = speech_like(0.7, case[0].sample_rate, seed=3)
    alone = embedder(wav.numpy())
    batched = embedder(wav[None], torch.ones(1))
    assert alone.shape == (1, 32)
    assert np.array_equal(alone.numpy(), batched.numpy())
    with pytest.raises(ValueError, match="shorter than one"):
        embedder(torch.zeros(1, case[0].win_length - 1))



def test_the_export_check_is_relative_to_the_embeddings_size(tmp_path):
    """float32 rounding grows with the values summed: an exact graph of large
    embeddings (values ~1e4, the last linear layer scaled) differs from PyTorch
    by more than 1e-4 absolute, about 1e-7 of its values; the check accepts it,
    and the file's outputs match PyTorch to ``TOLERANCE`` relative to the largest value.
    """
    torch.manual_seed(0)
    features, norm = LogMelFeatures(16000), UtteranceNorm()
    model = EmbeddingModel(front_end="VGG3L", channels=8, pooling="Attention", emb_dim=8)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight *= 1e4
        last.bias *= 1e4
    model.eval()
    path = tmp_path / "embedding.onnx"
    export_onnx(features, norm, model, str(path), example_seconds=0.5)
    wavs, lengths = padded_batch([0.9, 0.4], 16000)
    with torch.no_grad():
        frame_lens = features.frame_lengths(lengths, wavs.shape[1])
        expected = model(norm(features(wavs, lengths), frame_lens), frame_lens)[:, 0]
    got = OnnxEmbedder(path)(wavs, lengths)
    largest = float(expected.abs().max())
    assert largest > 100
    assert float((got - expected).abs().max()) <= TOLERANCE * largest
