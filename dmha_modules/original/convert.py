"""Loading models trained with the original research code.

The original code (``scripts/train.py`` of
github.com/miquelindia90/DoubleAttentionSpeakerVerification, and the
``train*.py`` scripts of its age variant,
github.com/SirBernardPhilip/DoubleAttentionAgeClassification) writes a
settings ``<name>_config.pkl`` and checkpoints ``<name>_<step>.chkpt`` per
model. ``load_original`` reads both without running pickled code (see
:mod:`dmha_modules.original.files`) and converts them for ``EmbeddingModel``
and ``Classifier``. The parameter names (``H`` heads of size ``d``, ``D = H d``):

=====================================================  ==========================================
original ``SpeakerClassifier``                          here
=====================================================  ==========================================
``front_end.conv{b}{c}.*``                              ``front_end.blocks.{b-1}.conv{c}.*``
``poolingLayer.att`` ``(D, 1)``                         ``pooling.attention`` ``(1, D)``
``poolingLayer.query`` ``(d, H)``                       ``pooling.queries`` ``(H, d)``
``poolingLayer.utteranceAttention.query`` ``(d, H)``    ``pooling.mha.queries`` ``(H, d)``
``poolingLayer.headsAttention.att`` ``(d, 1)``          ``pooling.head_attention`` ``(1, d)``
``fc1.*``, ``fc2.*``                                    ``fc1.*``, ``fc2.*``
``b2.*`` (BatchNorm of the embedding)                   ``norm.*``
``preLayer.*``                                          classifier ``pre_layer.*``
``predictionLayer.W`` ``(E, C)``                        classifier ``weight`` ``(E, C)``
``b1.*``, ``b3.*``                                      none: built, never applied
=====================================================  ==========================================

Both VGG front-ends flatten channels and frequency channel-major, so the
front-end weights need no reordering. The age variant's ``resnet`` has the
layout of ``front_ends.ResNet`` (same channels, strides, max-pooling and
blocks) under other names: ``conv1``/``bn1`` for our ``conv``/``bn``,
``layer{s+1}.{b}`` for ``stages.{s}.{b}`` and ``downsample`` for
``shortcut``; its ``fc`` is built but never applied. It averages over time
and frequency, so it becomes ``EmbeddingModel(front_end="ResNet",
collapse_time=True)``.

What else a faithful model needs, recorded in ``OriginalModel``:

- features with ``LogMelFeatures(framing="original")`` (librosa's framing)
  and ``UtteranceNorm(std_norm=...)`` as its ``normalization`` setting says
  (``cmn`` or ``cmvn``; older settings without it are ``cmn``);
- its task: the age variant's settings alone have ``criterion``;
- its decision (``decide``): ``argmax`` of the class cosines, except for
  ``train_ordinal.py`` models (``model_sigmoid.py``; the only script whose
  settings have ``criterion`` but no ``criterion2``), which decide by
  ``(sigmoid(cos) > 0.5).cumprod().sum() - 1``: the number of leading
  classes above one half, minus one (-1 when the first is not).
"""

import dataclasses
import re

import torch

from dmha_modules.nn.heads import Classifier
from dmha_modules.nn.models import EmbeddingModel
from dmha_modules.original.files import (
    OriginalFormatError,
    merge_settings,
    read_checkpoint,
    read_config,
)

# The original sets ``parameters.feature_size = 80`` whatever the settings say.
FEATURE_SIZE = 80
# The original's front-end names and ours; the age variant's resnet averaged
# its output over time, which ``collapse_time`` reproduces.
FRONT_ENDS = {
    "VGG3L": {"front_end": "VGG3L"},
    "VGG4L": {"front_end": "VGG4L"},
    "resnet": {"front_end": "ResNet", "collapse_time": True},
}
SUPPORTED_POOLINGS = ("Attention", "MHA", "DoubleMHA")
# ``normalization`` setting -> ``UtteranceNorm(std_norm=...)``.
NORMALIZATIONS = {"cmn": False, "cmvn": True}
# What the age variant's own scripts (test.py, utils.py) call its classes.
AGE_GROUP_NAMES = {
    6: ("twenties", "thirties", "fourties", "fifties", "sixties", "seventies"),
    9: ("teens", "twenties", "thirties", "fourties", "fifties", "sixties",
        "seventies", "eighties", "nineties"),
}
# The original's FFT size: librosa refuses a longer window, so the original
# could not compute features above about 20.5 kHz (25 ms > 512 samples).
ORIGINAL_N_FFT = 512
# Our parameter names (the classifier's prefixed with "classifier.") to the
# original's, as regular expression substitutions; unlisted names are the same.
ORIGINAL_NAMES = [
    (
        r"^front_end\.blocks\.(\d+)\.conv(\d)\.",
        lambda match: f"front_end.conv{int(match[1]) + 1}{match[2]}.",
    ),
    (
        r"^front_end\.stages\.(\d+)\.(\d+)\.(shortcut\.)?",
        lambda match: f"front_end.layer{int(match[1]) + 1}.{match[2]}."
        + ("downsample." if match[3] else ""),
    ),
    (r"^front_end\.(conv|bn)\.", r"front_end.\g<1>1."),
    (r"^pooling\.attention$", "poolingLayer.att"),
    (r"^pooling\.queries$", "poolingLayer.query"),
    (r"^pooling\.mha\.queries$", "poolingLayer.utteranceAttention.query"),
    (r"^pooling\.head_attention$", "poolingLayer.headsAttention.att"),
    (r"^norm\.", "b2."),
    (r"^classifier\.pre_layer\.", "preLayer."),
    (r"^classifier\.weight$", "predictionLayer.W"),
]
# Learned vectors the original stores as columns and we store as rows.
TRANSPOSED = {
    "pooling.attention",
    "pooling.queries",
    "pooling.mha.queries",
    "pooling.head_attention",
}
# Layers the original builds but never applies in its forward pass: two
# BatchNorms, and the resnet's final linear layer.
UNUSED_ORIGINAL_NAMES = re.compile(r"^b[13]\.")
UNUSED_RESNET_NAMES = re.compile(r"^(b[13]|front_end\.fc)\.")
CLASSIFIER_PREFIX = "classifier."


@dataclasses.dataclass
class OriginalModel:
    """A model of the original code, converted for this project's modules.

    Attributes
    ----------
    embedding_kwargs : dict
        Arguments of ``EmbeddingModel``.
    embedding_state : dict
        Its state dict (loads with ``strict=True``).
    classifier_kwargs : dict
        Arguments of ``heads.Classifier`` (cosine output, for AM-Softmax).
    classifier_state : dict
        Its state dict.
    settings : dict
        The original's training settings (config file, updated by those
        saved in the checkpoint).
    n_classes : int
        Number of training classes (speakers or age groups).
    std_norm : bool
        Features normalised by mean and variance (``cmvn``), not mean only.
    task : str
        ``"speaker"`` or ``"age"``.
    decision : str
        ``"argmax"`` or ``"ordinal"`` (see ``decide``).
    class_names : tuple
        Names of the classes in order: ``"0"`` to ``"C-1"`` as the labels
        files number them, or the age variant's group names for 6 or 9 groups.
    framing : str
        ``LogMelFeatures`` framing of the features it was trained on.

    Example
    -------
    >>> kwargs = dict(front_end="VGG3L", channels=8, pooling="Attention", emb_dim=4)
    >>> loaded = OriginalModel(kwargs, EmbeddingModel(**kwargs).state_dict(), {}, {}, {}, 3)
    >>> EmbeddingModel(**loaded.embedding_kwargs).load_state_dict(loaded.embedding_state)
    <All keys matched successfully>
    >>> loaded.framing, loaded.decision, loaded.class_names
    ('original', 'argmax', ('0', '1', '2'))
    """

    embedding_kwargs: dict
    embedding_state: dict
    classifier_kwargs: dict
    classifier_state: dict
    settings: dict
    n_classes: int
    std_norm: bool = False
    task: str = "speaker"
    decision: str = "argmax"
    class_names: tuple = None
    framing: str = "original"

    def __post_init__(self):
        if self.class_names is None:
            self.class_names = tuple(str(i) for i in range(self.n_classes))


def original_name(name):
    """The original's name of our parameter ``name`` (classifier ones prefixed ``classifier.``).

    Example
    -------
    >>> original_name("front_end.blocks.0.conv2.bias")
    'front_end.conv12.bias'
    >>> original_name("front_end.stages.1.0.shortcut.1.weight")
    'front_end.layer2.0.downsample.1.weight'
    >>> original_name("classifier.weight")
    'predictionLayer.W'
    """
    for pattern, replacement in ORIGINAL_NAMES:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def embedding_kwargs_of(settings, path):
    """``EmbeddingModel`` arguments for the original's settings; errors name ``path``."""
    pooling = settings.get("pooling_method")
    required = [
        "front_end",
        "kernel_size",
        "pooling_method",
        "embedding_size",
        "num_spkrs",
    ]
    if pooling in ("MHA", "DoubleMHA"):
        required.append("heads_number")
    if pooling == "DoubleMHA":
        required.append("mask_prob")
    missing = [key for key in required if key not in settings]
    if missing:
        raise OriginalFormatError(f"{path}: settings lack {', '.join(missing)}")
    front_end = settings["front_end"]
    if front_end not in FRONT_ENDS:
        raise OriginalFormatError(
            f"{path}: unsupported front_end {front_end!r} "
            f"(supported: {', '.join(FRONT_ENDS)})"
        )
    if pooling not in SUPPORTED_POOLINGS:
        raise OriginalFormatError(
            f"{path}: unsupported pooling_method {pooling!r} "
            f"(supported: {', '.join(SUPPORTED_POOLINGS)})"
        )
    kwargs = {
        "input_size": FEATURE_SIZE,
        **FRONT_ENDS[front_end],
        "channels": settings["kernel_size"],
        "pooling": pooling,
        "emb_dim": settings["embedding_size"],
    }
    if pooling in ("MHA", "DoubleMHA"):
        kwargs["heads"] = settings["heads_number"]
    if pooling == "DoubleMHA":
        mask_prob = settings["mask_prob"]
        if not 0 < mask_prob <= 1:
            raise OriginalFormatError(
                f"{path}: unsupported mask_prob {mask_prob!r} (0 < mask_prob <= 1)"
            )
        # The original drops a head when randint(0, int(1 / p)) draws zero.
        kwargs["mask_prob"] = 1 / int(1 / mask_prob)
    return kwargs


def pipeline_of(settings, path):
    """How the original computed with ``settings``: ``(std_norm, task, decision, class names)``.

    The features' normalisation is the ``normalization`` setting (absent from
    the oldest settings, which normalised by the mean only). The age variant's
    scripts alone have a ``criterion`` setting, and its ``train_ordinal.py``
    (the ``model_sigmoid.py`` model, decided by ``decide(..., "ordinal")``)
    alone has no ``criterion2``. Class names are None where the labels
    files' numbers are the names.
    """
    normalization = settings.get("normalization", "cmn")
    if normalization not in NORMALIZATIONS:
        raise OriginalFormatError(
            f"{path}: unsupported normalization {normalization!r} "
            f"(supported: {', '.join(NORMALIZATIONS)})"
        )
    if "criterion" not in settings:
        return NORMALIZATIONS[normalization], "speaker", "argmax", None
    decision = "argmax" if "criterion2" in settings else "ordinal"
    names = AGE_GROUP_NAMES.get(settings["num_spkrs"])
    return NORMALIZATIONS[normalization], "age", decision, names


def expected_shapes(embedding_kwargs, classifier_kwargs, path):
    """Our parameter names (classifier ones prefixed) and shapes, from modules on the meta device."""
    try:
        with torch.device("meta"):
            embedding = EmbeddingModel(**embedding_kwargs)
            classifier = Classifier(**classifier_kwargs)
    except ValueError as error:
        raise OriginalFormatError(f"{path}: unsupported settings ({error})") from error
    shapes = {name: value.shape for name, value in embedding.state_dict().items()}
    for name, value in classifier.state_dict().items():
        shapes[CLASSIFIER_PREFIX + name] = value.shape
    return shapes


def convert_state(original_state, shapes, path, unused=UNUSED_ORIGINAL_NAMES):
    """Our state (classifier names prefixed) from the original's, checking every name and shape.

    Names of ``original_state`` matching ``unused`` are dropped; any other name
    our modules do not use is an error.
    """
    converted, missing, wrong_shapes = {}, [], []
    for name, shape in shapes.items():
        original = original_name(name)
        original_shape = torch.Size(reversed(shape)) if name in TRANSPOSED else shape
        if original not in original_state:
            missing.append(original)
            continue
        value = original_state[original]
        if not isinstance(value, torch.Tensor) or value.shape != original_shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else value
            wrong_shapes.append(f"{original} {found} instead of {tuple(original_shape)}")
            continue
        converted[name] = value.t().contiguous() if name in TRANSPOSED else value
    used = {original_name(name) for name in shapes}
    unknown = [
        name
        for name in original_state
        if name not in used and not unused.match(name)
    ]
    problems = [
        f"\n  {label}: {'; '.join(names)}"
        for label, names in (
            ("missing", missing),
            ("unknown", unknown),
            ("wrong shape", wrong_shapes),
        )
        if names
    ]
    if problems:
        raise OriginalFormatError(
            f"{path}: weights do not fit the settings:" + "".join(problems)
        )
    return converted


def classifier_kwargs_of(settings):
    """``Classifier`` arguments of the original's cosine classifier from its settings."""
    return {
        "input_size": settings["embedding_size"],
        "n_classes": settings["num_spkrs"],
        "hidden_size": settings["embedding_size"],
        "cosine": True,
    }


def split_state(state):
    """The embedding model's and the classifier's state dicts of ``convert_state``'s result."""
    embedding_state = {
        name: value
        for name, value in state.items()
        if not name.startswith(CLASSIFIER_PREFIX)
    }
    classifier_state = {
        name[len(CLASSIFIER_PREFIX) :]: value
        for name, value in state.items()
        if name.startswith(CLASSIFIER_PREFIX)
    }
    return embedding_state, classifier_state


def load_original(checkpoint, config):
    """Loads a model of the original code for ``EmbeddingModel`` and ``Classifier``.

    Nothing in either file runs: the checkpoint is read by ``torch.load``
    with ``weights_only=True`` and ``argparse.Namespace`` as the only extra
    allowed global, the config by ``SettingsUnpickler``. Every weight of the
    checkpoint must be used (bar the original's unused ``b1``, ``b3`` and
    resnet ``fc``) and every weight of ours filled, with the right shapes.
    Models of the speaker code and of every training script of the age
    variant load; how to compute as they did (features, normalisation,
    decision) is recorded in the result.

    The original's head-drop probability ``p`` is converted to the rate it really
    had, ``1 / int(1 / p)`` (0.3 dropped a third of the heads). The training
    dropout is not in the checkpoint and is left at ``EmbeddingModel``'s default.

    Arguments
    ---------
    checkpoint : str or path-like
        The original's ``.chkpt`` (or ``.pt``) file.
    config : str or path-like
        The original's ``_config.pkl`` settings file.

    Returns
    -------
    OriginalModel
        Module arguments, converted state dicts, settings, classes, and how
        the original computed its features and decisions.

    Raises
    ------
    OriginalFormatError
        For a refused global, weights missing, unknown or mis-shaped, or
        settings this project does not support; the message names the file.

    Example
    -------
    >>> import os, pickle, tempfile
    >>> config = os.path.join(tempfile.mkdtemp(), "model_config.pkl")
    >>> with open(config, "wb") as file:
    ...     pickle.dump(os.system, file)
    >>> try:
    ...     load_original("model.chkpt", config)
    ... except OriginalFormatError as error:
    ...     print(str(error).split(": ")[1])
    refused global posix.system (only argparse.Namespace is allowed)
    >>> loaded = load_original("model.chkpt", "model_config.pkl")  # doctest: +SKIP
    >>> model = EmbeddingModel(**loaded.embedding_kwargs)  # doctest: +SKIP
    >>> model.load_state_dict(loaded.embedding_state)  # doctest: +SKIP
    <All keys matched successfully>
    """
    config_settings = read_config(config)
    original_state, checkpoint_settings = read_checkpoint(checkpoint)
    settings = merge_settings(config_settings, checkpoint_settings, config, checkpoint)
    # The checkpoint's settings, when it has them, are those the weights had.
    settings_file = config if checkpoint_settings is None else checkpoint
    embedding_kwargs = embedding_kwargs_of(settings, settings_file)
    std_norm, task, decision, class_names = pipeline_of(settings, settings_file)
    n_classes = settings["num_spkrs"]
    classifier_kwargs = classifier_kwargs_of(settings)
    shapes = expected_shapes(embedding_kwargs, classifier_kwargs, settings_file)
    unused = UNUSED_RESNET_NAMES if settings["front_end"] == "resnet" else UNUSED_ORIGINAL_NAMES
    embedding_state, classifier_state = split_state(
        convert_state(original_state, shapes, checkpoint, unused)
    )
    return OriginalModel(
        embedding_kwargs=embedding_kwargs,
        embedding_state=embedding_state,
        classifier_kwargs=classifier_kwargs,
        classifier_state=classifier_state,
        settings=settings,
        n_classes=n_classes,
        std_norm=std_norm,
        task=task,
        decision=decision,
        class_names=class_names,
    )
