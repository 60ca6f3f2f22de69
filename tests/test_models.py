"""Front-ends and the embedding model: sizes, length bookkeeping, padding invariance."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmha_modules.nn.front_ends import VGG3L, VGG4L, ResNet, VGGBlock
from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.nn.models import ECAPADoubleMHA, EmbeddingModel
from dmha_modules.nn.pooling import DoubleMHAPooling

FRONT_ENDS = ["VGG3L", "VGG4L", "ResNet"]
POOLINGS = ["Attention", "MHA", "DoubleMHA"]
# EmbeddingModel arguments of each front-end; the age variant's resnet
# averaged over time (one step per utterance).
FRONT_END_KWARGS = {
    **{name: {"front_end": name} for name in FRONT_ENDS},
    "ResNet-collapsed": {"front_end": "ResNet", "collapse_time": True},
    "VGG4L-batch-norm": {"front_end": "VGG4L", "batch_norm": True},
}


@pytest.mark.parametrize(
    "front_end, channels, frames, out_frames, out_size",
    [
        # docs/original-model.md: VGG4L -> (ceil(T/16), k * ceil(80/16)); VGG3L -> (ceil(T/8), 10 k);
        # ResNet -> (ceil(T/2), k/2).
        (VGG4L(channels=1024), 1024, 350, 22, 5120),
        (VGG3L(channels=64), 64, 33, 5, 640),
        (ResNet(channels=64), 64, 33, 17, 32),
    ],
)
def test_output_sizes_follow_spec(front_end, channels, frames, out_frames, out_size):
    assert front_end.output_size == out_size
    assert front_end.output_steps(frames) == out_frames
    if channels <= 64:
        assert front_end(torch.rand(2, frames, 80)).shape == (2, out_frames, out_size)


@pytest.mark.parametrize(
    "front_end", [VGG3L(channels=16), VGG4L(channels=16), ResNet(channels=16)]
)
def test_output_lengths_give_valid_output_steps(front_end):
    frames = torch.tensor([100, 37, 1])
    lengths = frames / 100
    expected = [front_end.output_steps(int(n)) for n in frames]
    relative = front_end.output_lengths(lengths, 100)
    total = front_end.output_steps(100)
    assert torch.round(relative * total).long().tolist() == expected


def noisy_tone(seconds, seed):
    """A waveform with speech-like structure: harmonics of a seed-dependent pitch with vibrato, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 90 + 25 * seed + 20 * torch.sin(2 * math.pi * (2 + seed) * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / 16000
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1
    return wav + 0.01 * torch.randn(t.shape, generator=gen)


def calibrate_batch_norms(model, embed):
    """Sets BN statistics from a batch of varied utterances, as training would.

    With its initial statistics an untrained model's embedding is dominated by
    constant biases, so any two inputs look alike; calibrated BN removes those,
    and the embedding then depends on the input (checked in the test).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    wavs = torch.stack([noisy_tone(1.0, seed) for seed in range(3, 11)])
    model.train()
    with torch.no_grad():
        embed(wavs, torch.ones(len(wavs)))
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("front_end", list(FRONT_END_KWARGS))
def test_embedding_is_the_same_alone_and_padded(front_end, pooling):
    torch.manual_seed(0)
    compute_features, norm = LogMelFeatures(16000), UtteranceNorm()
    model = EmbeddingModel(
        **FRONT_END_KWARGS[front_end], channels=32, pooling=pooling, heads=4, emb_dim=64
    )

    def embed(wavs, lengths):
        frame_lengths = compute_features.frame_lengths(lengths, wavs.shape[1])
        feats = norm(compute_features(wavs, lengths), frame_lengths)
        return model(feats, frame_lengths)[:, 0]

    calibrate_batch_norms(model, embed)
    short, long = noisy_tone(1.03, seed=1), noisy_tone(3 * 1.03, seed=2)
    batch = torch.zeros(2, long.numel())
    batch[0, : short.numel()], batch[1] = short, long
    wav_lengths = torch.tensor([short.numel() / long.numel(), 1.0])
    with torch.no_grad():
        alone = embed(short[None], torch.ones(1))[0]
        long_alone = embed(long[None], torch.ones(1))[0]
        padded = embed(batch, wav_lengths)

    cosine = torch.nn.functional.cosine_similarity
    # The embedding tells the two utterances apart, so the check below has teeth.
    assert cosine(alone, long_alone, dim=0) < 0.99
    assert cosine(alone, padded[0], dim=0) >= 0.99999
    # The long utterance is unaffected by being batched with a short one.
    assert cosine(long_alone, padded[1], dim=0) >= 0.99999


def test_attention_weights_are_returned_for_plots():
    model = EmbeddingModel(
        front_end="VGG3L", channels=16, pooling="DoubleMHA", heads=4
    ).eval()
    feats = torch.randn(2, 40, 80)
    embeddings, (time_weights, head_weights) = model(
        feats, torch.tensor([1.0, 0.5]), return_weights=True
    )
    assert embeddings.shape == (2, 1, 400)
    # 40 frames -> 5 steps; the second utterance has 20 frames -> 3 valid steps.
    assert time_weights.shape == (2, 5, 4) and head_weights.shape == (2, 4)
    torch.testing.assert_close(time_weights.sum(dim=1), torch.ones(2, 4))
    assert time_weights[1, 3:].abs().max() == 0


def randomise_batch_norms(module):
    """Gives every BatchNorm non-trivial running statistics, so eval mode is not the identity."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)


@pytest.mark.slow
@pytest.mark.parametrize("front_end", list(FRONT_END_KWARGS))
def test_long_inputs_encoded_in_chunks_equal_one_pass(front_end):
    torch.manual_seed(0)
    model = EmbeddingModel(
        **FRONT_END_KWARGS[front_end], channels=16, heads=4, emb_dim=32
    ).eval()
    randomise_batch_norms(model)
    feats = torch.randn(2, 1037, 80)
    lengths = torch.tensor([1.0, 0.7])
    with torch.no_grad():
        model.front_end.chunk_frames = None
        one_pass = model(feats, lengths)
        # Chunks of ~100 frames: 11 chunks, the last one short.
        model.front_end.chunk_frames = 100
        chunked = model(feats, lengths)
        # Without enough context at the chunk edges the result would change:
        # the check above can fail.
        model.front_end.context_frames = 0
        no_context = model(feats, lengths)
    assert torch.allclose(chunked, one_pass, atol=1e-5)
    assert not torch.allclose(no_context, one_pass, atol=1e-5)


def test_vgg_block_with_batch_norm_normalises_each_convolution():
    # Reference: conv -> batch statistics (biased variance, as BatchNorm's
    # training mode) -> ReLU, twice, then 2x2 max-pooling, written out here.
    torch.manual_seed(0)
    block = VGGBlock(1, 4, batch_norm=True).train()
    x = torch.randn(3, 1, 6, 8)

    def normalise(y):
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (y - mean) / torch.sqrt(var + 1e-5)

    hidden = torch.relu(normalise(F.conv2d(x, block.conv1.weight, padding=1)))
    expected = F.max_pool2d(
        torch.relu(normalise(F.conv2d(hidden, block.conv2.weight, padding=1))), 2, ceil_mode=True
    )
    torch.testing.assert_close(block(x, None), expected, atol=1e-5, rtol=1e-4)
    # The original's block has biases and no normalisation.
    assert block.conv1.bias is None and VGGBlock(1, 4).conv1.bias is not None
    assert not list(VGGBlock(1, 4).norms)


def test_time_collapsed_resnet_averages_over_time_and_frequency():
    # The age variant's resnet ends in AdaptiveAvgPool2d((1, 1)): the mean of
    # the last stage's output over every step and frequency bin, which
    # attention over that single step passes through.
    torch.manual_seed(0)
    model = EmbeddingModel(
        front_end="ResNet", channels=16, pooling="Attention", collapse_time=True
    )
    randomise_batch_norms(model)
    model.eval()
    feats = torch.randn(1, 37, 80)
    front_end = model.front_end
    with torch.no_grad():
        x = torch.relu(front_end.bn(front_end.conv(feats.unsqueeze(1))))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for stage in front_end.stages:
            for block in stage:
                x = block(x, None)
        pooled = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        expected = model.norm(torch.relu(model.fc2(torch.relu(model.fc1(pooled)))))
        embeddings, weights = model(feats, return_weights=True)
    assert weights.shape == (1, 1)
    torch.testing.assert_close(embeddings[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_ecapa_double_mha_pools_ecapa_frames_with_double_mha():
    # Reference: ECAPA-TDNN's frame layers and aggregation run by hand on each
    # utterance alone (SpeechBrain's own padding at its ends), then the Double MHA
    # pooling of the paper, ECAPA's BatchNorm and linear layer. The padded
    # utterance's frames past its end are noise: they must not count.
    torch.manual_seed(0)
    model = ECAPADoubleMHA(channels=[32, 32, 32, 32, 96], lin_neurons=16, heads=4).eval()
    randomise_batch_norms(model)
    feats, lengths = torch.randn(2, 60, 80), torch.tensor([1.0, 0.5])
    expected = []
    with torch.no_grad():
        for row, frames_alone in zip(feats, (60, 30)):
            x = row[None, :frames_alone].transpose(1, 2)
            outputs = []
            for layer in model.blocks:
                x = layer(x)
                outputs.append(x)
            frames = model.mfa(torch.cat(outputs[1:], dim=1))
            pooled = model.asp.pooling(frames.transpose(1, 2))
            expected.append(model.fc(model.asp_bn(pooled.unsqueeze(-1))).transpose(1, 2))
        expected = torch.cat(expected)
        embeddings = model(feats, lengths)
    assert pooled.shape == (1, 96 // 4)
    torch.testing.assert_close(embeddings, expected)
    assert embeddings.shape == (2, 1, 16)
    assert isinstance(model.asp.pooling, DoubleMHAPooling)


def test_ecapa_double_mha_with_std_pools_means_and_stds():
    model = ECAPADoubleMHA(channels=[32, 32, 32, 32, 96], lin_neurons=16, heads=4,
                           with_std=True).eval()
    assert model.asp.pooling.with_std
    # BatchNorm and the linear layer take the means and the stds: 2 * 96 / 4.
    assert model.asp_bn.norm.num_features == model.fc.conv.in_channels == 48
    assert model(torch.randn(2, 60, 80), torch.tensor([1.0, 0.5])).shape == (2, 1, 16)
