"""Loading models of the original code: same outputs, no pickled code run, clear errors.

The reference below is written from docs/original-model.md with the original's layer layout
and parameter names, and computes as the original does (its ``(B*T, H, H)``
product and diagonal for the head scores, its flatten of the VGG output, the
age variant's resnet averaging over time and frequency, its ``model_sigmoid``
head), so it shares no code with ``dmha_modules``.
"""

import argparse
import math
import os
import pickle
import shlex

import pytest
import torch
import torch.nn.functional as F

from dmha_modules.nn.heads import Classifier
from dmha_modules.nn.losses import AMSoftmaxLoss
from dmha_modules.nn.models import EmbeddingModel
from dmha_modules.original import OriginalFormatError, decide, import_original, load_original

CHANNELS = 32
HEADS = 4
EMBEDDING_SIZE = 400
SPEAKERS = 7
AGE_GROUPS = ("twenties", "thirties", "fourties", "fifties", "sixties", "seventies")


def xavier_vector(*shape):
    return torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(*shape)))


class SeedVGG(torch.nn.Module):
    """The original's VGG3L / VGG4L: ``conv{block}{1,2}``, channels doubling up to k."""

    def __init__(self, kernel_size, blocks):
        super().__init__()
        self.blocks = blocks
        in_channels = 1
        for block in range(1, blocks + 1):
            out_channels = kernel_size // 2 ** (blocks - block)
            setattr(
                self,
                f"conv{block}1",
                torch.nn.Conv2d(in_channels, out_channels, 3, padding=1),
            )
            setattr(
                self,
                f"conv{block}2",
                torch.nn.Conv2d(out_channels, out_channels, 3, padding=1),
            )
            in_channels = out_channels

    def forward(self, x):
        x = x.view(x.size(0), x.size(1), 1, x.size(2)).transpose(1, 2)
        for block in range(1, self.blocks + 1):
            x = F.relu(getattr(self, f"conv{block}1")(x))
            x = F.relu(getattr(self, f"conv{block}2")(x))
            x = F.max_pool2d(x, 2, stride=2, ceil_mode=True)
        x = x.transpose(1, 2)
        return x.contiguous().view(x.size(0), x.size(1), x.size(2) * x.size(3))


class SeedBasicBlock(torch.nn.Module):
    """The age variant's ResNet block: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(out_channels)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(out_channels)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, bias=False),
                torch.nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SeedResNet(torch.nn.Module):
    """The age variant's ``resnet``: stem, ``layer1..3`` of two blocks, mean over time and frequency."""

    def __init__(self, kernel_size):
        super().__init__()
        channels = [kernel_size // 8, kernel_size // 4, kernel_size // 2]
        self.conv1 = torch.nn.Conv2d(1, channels[0], 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels[0])
        for layer, (c_in, c_out) in enumerate(zip(channels[:1] + channels[:-1], channels)):
            blocks = [SeedBasicBlock(c_in, c_out), SeedBasicBlock(c_out, c_out)]
            setattr(self, f"layer{layer + 1}", torch.nn.Sequential(*blocks))
        self.fc = torch.nn.Linear(channels[-1], channels[-1])  # built, never applied

    def forward(self, x):
        x = x.view(x.size(0), x.size(1), 1, x.size(2)).transpose(1, 2)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, (1, 1)).transpose(1, 2)
        return x.contiguous().view(x.size(0), x.size(1), x.size(2) * x.size(3))


def original_head_contexts(query, x):
    """The original's multi-head attention: query ``(d, H)``, scores by diagonal, / sqrt(H)."""
    heads = query.size(1)
    key = x.view(x.size(0) * x.size(1), heads, -1)
    value = x.view(x.size(0), x.size(1), heads, -1)
    scores = torch.diagonal(key @ query / math.sqrt(query.size(-1)), dim1=-2, dim2=-1)
    weights = F.softmax(scores.view(value.size(0), value.size(1), heads), dim=-2)
    return (value * weights.unsqueeze(-1)).sum(dim=1)


class SeedAttention(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        self.att = xavier_vector(size, 1)

    def forward(self, x):
        weights = F.softmax((x @ self.att).squeeze(-1), dim=-1)
        return (x * weights.unsqueeze(-1)).sum(dim=1)


class SeedMHA(torch.nn.Module):
    def __init__(self, size, heads):
        super().__init__()
        self.query = xavier_vector(size // heads, heads)

    def forward(self, x):
        return original_head_contexts(self.query, x).flatten(1)


class SeedUtteranceAttention(torch.nn.Module):
    def __init__(self, size, heads):
        super().__init__()
        self.query = xavier_vector(size // heads, heads)


class SeedHeadsAttention(torch.nn.Module):
    def __init__(self, size, heads):
        super().__init__()
        self.att = xavier_vector(size // heads, 1)


class SeedDoubleMHA(torch.nn.Module):
    """Head contexts, then softmax over heads of ``<c_j, att>`` (eval: no head drop)."""

    def __init__(self, size, heads):
        super().__init__()
        self.utteranceAttention = SeedUtteranceAttention(size, heads)
        self.headsAttention = SeedHeadsAttention(size, heads)

    def forward(self, x):
        contexts = original_head_contexts(self.utteranceAttention.query, x)
        weights = F.softmax((contexts @ self.headsAttention.att).squeeze(-1), dim=-1)
        return (contexts * weights.unsqueeze(-1)).sum(dim=1)


class SeedAMSoftmax(torch.nn.Module):
    def __init__(self, size, classes, scale, margin):
        super().__init__()
        self.W = xavier_vector(size, classes)
        self.scale, self.margin = scale, margin

    def forward(self, x, label):
        cosines = F.normalize(x, dim=1) @ F.normalize(self.W, dim=0)
        margins = self.margin * F.one_hot(label, cosines.size(1))
        return cosines, self.scale * (cosines - margins)


class SeedSpeakerClassifier(torch.nn.Module):
    """The original's ``SpeakerClassifier`` (b1 and b3 are built but unused, as there).

    With ``sigmoid`` it is the age variant's ``model_sigmoid.py``, whose
    forward returns ``sigmoid(cos)`` instead of the cosines.
    """

    def __init__(self, settings, sigmoid=False):
        super().__init__()
        if settings.front_end == "resnet":
            self.front_end = SeedResNet(settings.kernel_size)
            size = settings.kernel_size // 2
        else:
            blocks = {"VGG3L": 3, "VGG4L": 4}[settings.front_end]
            self.front_end = SeedVGG(settings.kernel_size, blocks)
            size = settings.kernel_size * math.ceil(80 / 2**blocks)
        self.sigmoid = sigmoid
        if settings.pooling_method == "Attention":
            self.poolingLayer = SeedAttention(size)
        elif settings.pooling_method == "MHA":
            self.poolingLayer = SeedMHA(size, settings.heads_number)
        else:
            self.poolingLayer = SeedDoubleMHA(size, settings.heads_number)
            size //= settings.heads_number
        emb = settings.embedding_size
        self.fc1 = torch.nn.Linear(size, emb)
        self.b1 = torch.nn.BatchNorm1d(emb)
        self.fc2 = torch.nn.Linear(emb, emb)
        self.b2 = torch.nn.BatchNorm1d(emb)
        self.preLayer = torch.nn.Linear(emb, emb)
        self.b3 = torch.nn.BatchNorm1d(emb)
        self.predictionLayer = SeedAMSoftmax(
            emb, settings.num_spkrs, settings.scalingFactor, settings.marginFactor
        )

    def pooled(self, x):
        return self.poolingLayer(self.front_end(x))

    def getEmbedding(self, x):
        return self.b2(F.relu(self.fc2(F.relu(self.fc1(self.pooled(x))))))

    def forward(self, x, label):
        cosines, logits = self.predictionLayer(self.preLayer(self.getEmbedding(x)), label)
        return (torch.sigmoid(cosines) if self.sigmoid else cosines), logits


def original_settings(front_end="VGG4L", pooling="DoubleMHA"):
    """Settings as the original's train.py leaves them (a subset of its options)."""
    return argparse.Namespace(
        front_end=front_end,
        kernel_size=CHANNELS,
        pooling_method=pooling,
        heads_number=HEADS,
        mask_prob=0.3,
        embedding_size=EMBEDDING_SIZE,
        num_spkrs=SPEAKERS,
        scalingFactor=30.0,
        marginFactor=0.4,
        annealing=False,
        window_size=3.5,
        normalization="cmn",
        learning_rate=0.0001,
        model_name="CNN_test",
        out_dir="./models/test",
        requeue=False,
    )


def age_settings(front_end, pooling, model_file, normalization):
    """Settings as the age variant's ``train.py`` (``model.py``) or ``train_ordinal.py`` leave them."""
    settings = original_settings(front_end, pooling)
    settings.num_spkrs = len(AGE_GROUPS)
    settings.normalization = normalization
    settings.window_size = 1.0
    settings.validation_file = "labels/validation.lst"
    settings.dropout = 0.0
    if model_file == "model.py":
        settings.criterion, settings.criterion2 = "CrossEntropyWeighted", "CrossEntropy"
    else:
        settings.criterion = "OrdinalReg"
    return settings


def original_outputs(reference, features, sigmoid):
    """Embedding, outputs and decision of one utterance, as the original's scripts compute them.

    ``torch.max`` of the outputs, or for ``train_ordinal.py`` (``sigmoid``)
    its ``prediction2label``.
    """
    inputs = torch.as_tensor(features, dtype=torch.float32).reshape(1, -1, 80)
    with torch.no_grad():
        embedding = reference.getEmbedding(inputs)[0]
        prediction, _ = reference(inputs, torch.tensor([0]))
    if sigmoid:
        decision = (prediction.numpy() > 0.5).cumprod(axis=1).sum(axis=1) - 1
    else:
        decision = torch.max(prediction, 1)[1].numpy()
    return embedding, prediction[0], int(decision[0])


def random_original_model(settings, sigmoid=False):
    """An original model with random weights and BN statistics that keep e2 input-dependent."""
    torch.manual_seed(0)
    model = SeedSpeakerClassifier(settings, sigmoid)
    with torch.no_grad():
        for layer in model.front_end.modules():
            if isinstance(layer, torch.nn.Conv2d):
                # He initialisation keeps the activations' scale through the layers.
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                if layer.bias is not None:
                    torch.nn.init.uniform_(layer.bias, -0.1, 0.1)
            elif isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.1, 0.1)
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 2.0)
        for norm in (model.b1, model.b2, model.b3):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.1, 0.1)
        # Statistics of e2 itself on varied inputs, randomly perturbed.
        e2 = F.relu(
            model.fc2(F.relu(model.fc1(model.pooled(cmn(torch.randn(8, 60, 80))))))
        )
        model.b2.running_mean.copy_(
            e2.mean(0) * torch.empty(EMBEDDING_SIZE).uniform_(0.8, 1.2)
        )
        model.b2.running_var.copy_(
            e2.var(0) * torch.empty(EMBEDDING_SIZE).uniform_(0.8, 1.2) + 1e-3
        )
        model.b2.num_batches_tracked.fill_(1234)
    return model.eval()


def cmn(feats):
    """Per-utterance mean normalisation over time, as the original's features."""
    return feats - feats.mean(dim=1, keepdim=True)


def save_original(model, settings, directory, state=None):
    """Writes ``model`` in the original's format; returns (checkpoint, config) paths."""
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=1e-3
    )
    model.train()
    _, logits = model(cmn(torch.randn(2, 40, 80)), torch.tensor([0, 1]))
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    optimizer.step()
    model.eval()
    checkpoint_settings = argparse.Namespace(**vars(settings), feature_size=80)
    checkpoint = directory / f"{settings.model_name}_1000.chkpt"
    torch.save(
        {
            "model": model.state_dict() if state is None else state,
            "optimizer": optimizer.state_dict(),
            "settings": checkpoint_settings,
            "epoch": 3,
            "step": 1000,
        },
        checkpoint,
    )
    config = directory / f"{settings.model_name}_config.pkl"
    with open(config, "wb") as file:
        pickle.dump(settings, file, protocol=pickle.HIGHEST_PROTOCOL)
    return checkpoint, config


def converted_modules(checkpoint, config):
    loaded = load_original(checkpoint, config)
    embedding_model = EmbeddingModel(**loaded.embedding_kwargs)
    embedding_model.load_state_dict(loaded.embedding_state, strict=True)
    classifier = Classifier(**loaded.classifier_kwargs)
    classifier.load_state_dict(loaded.classifier_state, strict=True)
    return loaded, embedding_model.eval(), classifier.eval()


@pytest.mark.parametrize(
    "front_end, pooling",
    [
        ("VGG4L", "DoubleMHA"),
        ("VGG3L", "DoubleMHA"),
        ("VGG4L", "MHA"),
        ("VGG3L", "Attention"),
    ],
)
@pytest.mark.slow
def test_converted_model_computes_the_original_outputs(tmp_path, front_end, pooling):
    settings = original_settings(front_end, pooling)
    reference = random_original_model(settings)
    checkpoint, config = save_original(reference, settings, tmp_path)
    loaded, model, classifier = converted_modules(checkpoint, config)

    assert loaded.n_classes == SPEAKERS
    assert loaded.settings["feature_size"] == 80  # the checkpoint's settings win
    assert (loaded.task, loaded.decision, loaded.std_norm, loaded.framing) == (
        "speaker", "argmax", False, "original"
    )
    assert loaded.class_names == tuple(str(i) for i in range(SPEAKERS))
    assert loaded.settings["model_name"] == "CNN_test"
    expected_kwargs = {
        "front_end": front_end,
        "channels": CHANNELS,
        "pooling": pooling,
        "emb_dim": EMBEDDING_SIZE,
    }
    assert expected_kwargs.items() <= loaded.embedding_kwargs.items()
    if pooling == "DoubleMHA":
        assert loaded.embedding_kwargs["mask_prob"] == pytest.approx(1 / 3)

    torch.manual_seed(1)
    margin_loss = AMSoftmaxLoss(
        margin=settings.marginFactor, scale=settings.scalingFactor
    )
    embeddings = {}
    with torch.no_grad():
        for frames in (37, 64):
            feats = cmn(torch.randn(1, frames, 80))
            label = torch.tensor([frames % SPEAKERS])
            assert torch.allclose(
                model.pooling(model.front_end(feats)),
                reference.pooled(feats),
                rtol=1e-4,
                atol=1e-5,
            )
            ours = model(feats)[:, 0]
            theirs = reference.getEmbedding(feats)
            cosine = F.cosine_similarity(ours, theirs).item()
            print(f"{front_end} {pooling} T={frames}: 1 - cosine {1 - cosine:.1e}")
            assert cosine >= 0.9999

            original_cosines, original_logits = reference(feats, label)
            our_cosines = classifier(model(feats))
            assert torch.allclose(our_cosines[:, 0], original_cosines, atol=1e-5)
            assert torch.allclose(
                margin_loss.logits(our_cosines, label), original_logits, atol=1e-3
            )
            embeddings[frames] = theirs
    # The comparison is informative: different inputs give different embeddings.
    assert F.cosine_similarity(embeddings[37], embeddings[64]).item() < 0.99


@pytest.mark.parametrize("model_file", ["model.py", "model_sigmoid.py"])
def test_age_variant_resnet_computes_the_original_outputs(tmp_path, model_file):
    sigmoid = model_file == "model_sigmoid.py"
    settings = age_settings("resnet", "DoubleMHA", model_file, "cmvn")
    reference = random_original_model(settings, sigmoid)
    loaded, model, classifier = converted_modules(*save_original(reference, settings, tmp_path))

    assert loaded.embedding_kwargs["front_end"] == "ResNet"
    assert loaded.embedding_kwargs["collapse_time"] is True
    assert (loaded.task, loaded.decision, loaded.std_norm) == (
        "age", "ordinal" if sigmoid else "argmax", True
    )
    assert loaded.class_names == AGE_GROUPS
    # Ours on a padded batch, the original one utterance at a time.
    torch.manual_seed(1)
    feats = [cmn(torch.randn(1, frames, 80)) for frames in (37, 64)]
    batch = torch.zeros(2, 64, 80)
    batch[0, :37], batch[1] = feats[0][0], feats[1][0]
    with torch.no_grad():
        ours = model(batch, torch.tensor([37 / 64, 1.0]))[:, 0]
        cosines = classifier(ours)[:, 0]
    for index, utterance in enumerate(feats):
        theirs, prediction, decision = original_outputs(reference, utterance, sigmoid)
        assert F.cosine_similarity(ours[index], theirs, dim=0).item() >= 0.9999
        scores = torch.sigmoid(cosines[index]) if sigmoid else cosines[index]
        torch.testing.assert_close(scores, prediction, rtol=0, atol=1e-5)
        assert decide(cosines[index], loaded.decision).item() == decision


def test_import_writes_the_normalisation_resnet_and_group_names(tmp_path):
    settings = age_settings("resnet", "MHA", "model.py", "cmvn")
    checkpoint, config = save_original(random_original_model(settings), settings, tmp_path)
    folder, cosine = import_original(checkpoint, config, str(tmp_path / "model"))
    hyperparams = (tmp_path / "model" / "hyperparams.yaml").read_text()
    assert "std_norm: true" in hyperparams and "collapse_time: true" in hyperparams
    assert cosine >= 0.9999  # the folder rebuilds the time-collapsing model
    labels = (tmp_path / "model" / "label_encoder.ckpt").read_text()
    assert all(f"'{group}'" in labels for group in AGE_GROUPS)


def test_import_refuses_rates_the_original_could_not_run_at(tmp_path):
    with pytest.raises(OriginalFormatError, match="exceeds its 512-point FFT"):
        import_original("model.chkpt", "model_config.pkl", str(tmp_path / "model"), 22050)


def test_fc_is_unused_in_the_resnet_only(tmp_path):
    settings = original_settings("VGG3L", "Attention")
    model = random_original_model(settings)
    state = {**model.state_dict(), "front_end.fc.weight": torch.zeros(2, 2)}
    checkpoint, config = save_original(model, settings, tmp_path, state=state)
    with pytest.raises(OriginalFormatError, match="unknown: front_end.fc.weight"):
        load_original(checkpoint, config)


class Marker:
    """Creates a marker file when unpickled (through os.system)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.path))}",)


class TrainingSettings:
    """A harmless class that is still outside the allow-list."""


def refused_name(obj):
    """The global the pickle of ``obj`` names: os.system or our own class."""
    if isinstance(obj, Marker):
        return f"{os.system.__module__}.system"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


@pytest.mark.parametrize("payload", ["marker", "class"])
def test_config_with_other_globals_is_refused_without_running_it(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = Marker(marker) if payload == "marker" else TrainingSettings()
    settings = original_settings()
    checkpoint, _ = save_original(random_original_model(settings), settings, tmp_path)
    config = tmp_path / "evil_config.pkl"
    with open(config, "wb") as file:
        pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)

    with pytest.raises(OriginalFormatError) as error:
        load_original(checkpoint, config)
    assert str(config) in str(error.value)
    assert f"refused global {refused_name(obj)}" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["marker", "class"])
def test_checkpoint_with_other_globals_is_refused_without_running_it(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = Marker(marker) if payload == "marker" else TrainingSettings()
    settings = original_settings()
    model = random_original_model(settings)
    _, config = save_original(model, settings, tmp_path)
    checkpoint = tmp_path / "evil.chkpt"
    torch.save({"model": model.state_dict(), "settings": obj}, checkpoint)

    with pytest.raises(OriginalFormatError) as error:
        load_original(checkpoint, config)
    assert str(checkpoint) in str(error.value)
    assert f"refused global {refused_name(obj)}" in str(error.value)
    assert not marker.exists()


def test_missing_unknown_and_misshaped_weights_are_all_listed(tmp_path):
    settings = original_settings()
    state = random_original_model(settings).state_dict()
    del state["fc1.bias"]
    del state["poolingLayer.headsAttention.att"]
    state["poolingLayer.headsAttention.extra"] = torch.zeros(3)
    state["fc2.weight"] = torch.zeros(EMBEDDING_SIZE, EMBEDDING_SIZE - 1)
    state["poolingLayer.utteranceAttention.query"] = torch.zeros(
        HEADS, CHANNELS * 5 // HEADS
    )
    checkpoint, config = save_original(
        random_original_model(settings), settings, tmp_path, state=state
    )

    with pytest.raises(OriginalFormatError) as error:
        load_original(checkpoint, config)
    message = str(error.value)
    assert message.startswith(str(checkpoint))
    lines = dict(line.strip().split(": ", 1) for line in message.splitlines()[1:])
    assert set(lines["missing"].split("; ")) == {
        "fc1.bias",
        "poolingLayer.headsAttention.att",
    }
    assert lines["unknown"] == "poolingLayer.headsAttention.extra"
    # The original stores the queries as (head size, heads): (40, 4) here.
    assert set(lines["wrong shape"].split("; ")) == {
        "fc2.weight (400, 399) instead of (400, 400)",
        "poolingLayer.utteranceAttention.query (4, 40) instead of (40, 4)",
    }


def test_original_unused_batch_norms_are_optional(tmp_path):
    settings = original_settings("VGG3L", "MHA")
    model = random_original_model(settings)
    state = {
        name: value
        for name, value in model.state_dict().items()
        if not name.startswith(("b1.", "b3."))
    }
    checkpoint, config = save_original(model, settings, tmp_path, state=state)
    assert set(load_original(checkpoint, config).embedding_state) == set(
        EmbeddingModel(
            front_end="VGG3L", channels=CHANNELS, pooling="MHA", heads=HEADS
        ).state_dict()
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"pooling_method": "Attention Statistical"},
            "unsupported pooling_method 'Attention Statistical'",
        ),
        # In the original's CNNs.py, but never offered by its train scripts.
        ({"front_end": "RepVGG4L"}, "unsupported front_end 'RepVGG4L'"),
        ({"normalization": "pcen"}, "unsupported normalization 'pcen'"),
        ({"heads_number": 3}, "unsupported settings"),
    ],
)
def test_unsupported_settings_are_named(tmp_path, change, expected):
    settings = original_settings()
    checkpoint, config = save_original(random_original_model(settings), settings, tmp_path)
    changed = argparse.Namespace(**{**vars(settings), **change})
    torch.save({"model": {}, "settings": changed}, checkpoint)
    with open(config, "wb") as file:
        pickle.dump(changed, file)
    with pytest.raises(OriginalFormatError, match=expected) as error:
        load_original(checkpoint, config)
    assert str(checkpoint) in str(error.value)


def test_checkpoint_without_settings_uses_the_config(tmp_path):
    settings = original_settings("VGG3L", "Attention")
    model = random_original_model(settings)
    _, config = save_original(model, settings, tmp_path)
    checkpoint = tmp_path / "weights_only.chkpt"
    torch.save({"model": model.state_dict()}, checkpoint)
    loaded = load_original(checkpoint, config)
    assert loaded.settings == vars(settings)
    assert loaded.embedding_kwargs["pooling"] == "Attention"


def test_config_that_disagrees_with_the_checkpoint_is_refused(tmp_path):
    settings = original_settings()
    checkpoint, config = save_original(random_original_model(settings), settings, tmp_path)
    with open(config, "wb") as file:
        pickle.dump(argparse.Namespace(**{**vars(settings), "kernel_size": 64}), file)
    with pytest.raises(OriginalFormatError, match="kernel_size 64 != 32"):
        load_original(checkpoint, config)
