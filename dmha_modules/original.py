"""Loading models trained with the original research code (the "seed").

The original code (``scripts/train.py`` of
github.com/miquelindia90/DoubleAttentionSpeakerVerification, and of its age
variant) writes two kinds of files per model:

- ``<name>_config.pkl``: the training settings, a pickled ``argparse.Namespace``;
- ``<name>_<step>.chkpt``: ``torch.save`` of ``{"model": state_dict,
  "optimizer": state_dict, "settings": Namespace, "epoch": int, "step": int}``.

``load_original`` reads both without running pickled code (an allow-list of
``argparse.Namespace`` only) and converts them for ``EmbeddingModel`` and
``Classifier``. The parameter names (``H`` heads of size ``d``, ``D = H d``):

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
front-end weights need no reordering.
"""

import argparse
import dataclasses
import pickle
import re

import torch

from dmha_modules.heads import Classifier
from dmha_modules.models import EmbeddingModel

# The original sets ``parameters.feature_size = 80`` whatever the settings say.
FEATURE_SIZE = 80
SUPPORTED_FRONT_ENDS = ("VGG3L", "VGG4L")
SUPPORTED_POOLINGS = ("Attention", "MHA", "DoubleMHA")
# Settings that shape the network: config and checkpoint must agree on them.
MODEL_SETTINGS = (
    "front_end",
    "kernel_size",
    "pooling_method",
    "heads_number",
    "mask_prob",
    "embedding_size",
    "num_spkrs",
)

# Our parameter names (the classifier's prefixed with "classifier.") to the
# original's, as regular expression substitutions; unlisted names are the same.
SEED_NAMES = [
    (
        r"^front_end\.blocks\.(\d+)\.conv(\d)\.",
        lambda match: f"front_end.conv{int(match[1]) + 1}{match[2]}.",
    ),
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
# BatchNorms the original builds but never applies in its forward pass.
UNUSED_SEED_NAMES = re.compile(r"^b[13]\.")
CLASSIFIER_PREFIX = "classifier."


class OriginalFormatError(ValueError):
    """A seed file that cannot be loaded safely or does not fit the model.

    Raised for globals outside the allow-list, weights that are missing,
    unknown or mis-shaped, and settings this project cannot reproduce; the
    message names the file.

    Example
    -------
    >>> raise OriginalFormatError("model_config.pkl: refused global os.system")
    Traceback (most recent call last):
    dmha_modules.original.OriginalFormatError: model_config.pkl: refused global os.system
    """


class SettingsUnpickler(pickle.Unpickler):
    """Unpickler of the original's settings: builds ``argparse.Namespace`` only.

    A Namespace of plain values (protocol 2 and later, as the original's
    ``pickle.HIGHEST_PROTOCOL``) needs no other global; any other global is
    refused before it is imported, so nothing in the file runs.

    Arguments
    ---------
    file : file object
        Binary file to read.
    path : str
        Name of the file, for error messages.

    Example
    -------
    >>> import io
    >>> settings = argparse.Namespace(front_end="VGG4L", kernel_size=1024)
    >>> SettingsUnpickler(io.BytesIO(pickle.dumps(settings)), "config.pkl").load()
    Namespace(front_end='VGG4L', kernel_size=1024)
    >>> try:
    ...     SettingsUnpickler(io.BytesIO(pickle.dumps(print)), "config.pkl").load()
    ... except OriginalFormatError as error:
    ...     print(error)
    config.pkl: refused global builtins.print (only argparse.Namespace is allowed)
    """

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        """Returns ``argparse.Namespace``; raises ``OriginalFormatError`` for any other global."""
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        raise OriginalFormatError(
            f"{self.path}: refused global {module}.{name} "
            "(only argparse.Namespace is allowed)"
        )


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

    Example
    -------
    >>> kwargs = dict(front_end="VGG3L", channels=8, pooling="Attention", emb_dim=4)
    >>> seed = OriginalModel(kwargs, EmbeddingModel(**kwargs).state_dict(), {}, {}, {}, 3)
    >>> EmbeddingModel(**seed.embedding_kwargs).load_state_dict(seed.embedding_state)
    <All keys matched successfully>
    """

    embedding_kwargs: dict
    embedding_state: dict
    classifier_kwargs: dict
    classifier_state: dict
    settings: dict
    n_classes: int


def original_name(name):
    """The original's name of our parameter ``name`` (classifier ones prefixed ``classifier.``).

    Example
    -------
    >>> original_name("front_end.blocks.0.conv2.bias")
    'front_end.conv12.bias'
    >>> original_name("classifier.weight")
    'predictionLayer.W'
    """
    for pattern, replacement in SEED_NAMES:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def read_config(path):
    """The settings ``argparse.Namespace`` of a config ``.pkl``, read without running code."""
    with open(path, "rb") as file:
        try:
            settings = SettingsUnpickler(file, path).load()
        except (pickle.UnpicklingError, EOFError) as error:
            raise OriginalFormatError(
                f"{path}: not a pickled settings file ({error})"
            ) from error
    if not isinstance(settings, argparse.Namespace):
        raise OriginalFormatError(
            f"{path}: holds a {type(settings).__name__}, not argparse.Namespace settings"
        )
    return settings


def read_checkpoint(path):
    """The state dict and settings (or None) of a checkpoint, loaded with ``weights_only``."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch reports the refused global as "... GLOBAL module.name ...".
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        name = refused[1] if refused else "outside the allow-list"
        raise OriginalFormatError(
            f"{path}: refused global {name} (a seed checkpoint holds tensors, "
            "plain values and argparse.Namespace settings only)"
        ) from error
    if not isinstance(contents, dict) or not isinstance(contents.get("model"), dict):
        raise OriginalFormatError(
            f"{path}: not a checkpoint of the original code (no 'model' state dict)"
        )
    settings = contents.get("settings")
    if settings is not None and not isinstance(settings, argparse.Namespace):
        raise OriginalFormatError(
            f"{path}: 'settings' is a {type(settings).__name__}, not argparse.Namespace"
        )
    return contents["model"], settings


def merge_settings(config, checkpoint_settings, config_path, checkpoint_path):
    """Settings of the config updated by the checkpoint's; they must agree on the network."""
    settings = vars(config).copy()
    if checkpoint_settings is None:
        return settings
    saved = vars(checkpoint_settings)
    conflicts = [
        f"{key} {settings[key]!r} != {saved[key]!r}"
        for key in MODEL_SETTINGS
        if key in settings and key in saved and settings[key] != saved[key]
    ]
    if conflicts:
        raise OriginalFormatError(
            f"{config_path}: settings disagree with {checkpoint_path}: "
            + ", ".join(conflicts)
        )
    settings.update(saved)
    return settings


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
    if front_end not in SUPPORTED_FRONT_ENDS:
        # The age variant's ResNet averaged over time and frequency; ours keeps
        # time, so its weights would not compute the same embeddings.
        raise OriginalFormatError(
            f"{path}: unsupported front_end {front_end!r} "
            f"(supported: {', '.join(SUPPORTED_FRONT_ENDS)})"
        )
    if pooling not in SUPPORTED_POOLINGS:
        raise OriginalFormatError(
            f"{path}: unsupported pooling_method {pooling!r} "
            f"(supported: {', '.join(SUPPORTED_POOLINGS)})"
        )
    kwargs = {
        "input_size": FEATURE_SIZE,
        "front_end": front_end,
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


def convert_state(seed_state, shapes, path):
    """Our state (classifier names prefixed) from the original's, checking every name and shape."""
    converted, missing, wrong_shapes = {}, [], []
    for name, shape in shapes.items():
        original = original_name(name)
        seed_shape = torch.Size(reversed(shape)) if name in TRANSPOSED else shape
        if original not in seed_state:
            missing.append(original)
            continue
        value = seed_state[original]
        if not isinstance(value, torch.Tensor) or value.shape != seed_shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else value
            wrong_shapes.append(f"{original} {found} instead of {tuple(seed_shape)}")
            continue
        converted[name] = value.t().contiguous() if name in TRANSPOSED else value
    used = {original_name(name) for name in shapes}
    unknown = [
        name
        for name in seed_state
        if name not in used and not UNUSED_SEED_NAMES.match(name)
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


def load_original(checkpoint, config):
    """Loads a model of the original code for ``EmbeddingModel`` and ``Classifier``.

    Nothing in either file runs: the checkpoint is read by ``torch.load``
    with ``weights_only=True`` and ``argparse.Namespace`` as the only extra
    allowed global, the config by ``SettingsUnpickler``. Every weight of the
    checkpoint must be used (bar the original's unused ``b1`` and ``b3``) and
    every weight of ours filled, with the right shapes.

    The seed's head-drop probability ``p`` is converted to the rate it really
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
        Module arguments, converted state dicts, settings and class count.

    Raises
    ------
    OriginalFormatError
        For a refused global, weights missing, unknown or mis-shaped, or
        settings this project does not support; the message names the file.

    Example
    -------
    >>> import os, tempfile
    >>> config = os.path.join(tempfile.mkdtemp(), "model_config.pkl")
    >>> with open(config, "wb") as file:
    ...     pickle.dump(os.system, file)
    >>> try:
    ...     load_original("model.chkpt", config)
    ... except OriginalFormatError as error:
    ...     print(str(error).split(": ")[1])
    refused global posix.system (only argparse.Namespace is allowed)
    >>> seed = load_original("model.chkpt", "model_config.pkl")  # doctest: +SKIP
    >>> model = EmbeddingModel(**seed.embedding_kwargs)  # doctest: +SKIP
    >>> model.load_state_dict(seed.embedding_state)  # doctest: +SKIP
    <All keys matched successfully>
    """
    config_settings = read_config(config)
    seed_state, checkpoint_settings = read_checkpoint(checkpoint)
    settings = merge_settings(config_settings, checkpoint_settings, config, checkpoint)
    # The checkpoint's settings, when it has them, are those the weights had.
    settings_file = config if checkpoint_settings is None else checkpoint
    embedding_kwargs = embedding_kwargs_of(settings, settings_file)
    n_classes = settings["num_spkrs"]
    classifier_kwargs = {
        "input_size": settings["embedding_size"],
        "n_classes": n_classes,
        "hidden_size": settings["embedding_size"],
        "cosine": True,
    }
    shapes = expected_shapes(embedding_kwargs, classifier_kwargs, settings_file)
    state = convert_state(seed_state, shapes, checkpoint)
    return OriginalModel(
        embedding_kwargs=embedding_kwargs,
        embedding_state={
            name: value
            for name, value in state.items()
            if not name.startswith(CLASSIFIER_PREFIX)
        },
        classifier_kwargs=classifier_kwargs,
        classifier_state={
            name[len(CLASSIFIER_PREFIX) :]: value
            for name, value in state.items()
            if name.startswith(CLASSIFIER_PREFIX)
        },
        settings=settings,
        n_classes=n_classes,
    )


def import_original(checkpoint, config, out, sample_rate=16000):
    """Writes a model folder (see ``dmha_modules.model_folder``) of an original-code model.

    The features are the original's (``LogMelFeatures`` at ``sample_rate``,
    per-utterance mean normalisation); classes are named ``"0"`` to ``"C-1"``
    as the original's labels files number speakers.

    Arguments
    ---------
    checkpoint : str
        The original's ``.chkpt`` file.
    config : str
        The original's ``_config.pkl`` file.
    out : str
        The model folder to write.
    sample_rate : int
        Sample rate of the training audio.

    Returns
    -------
    tuple
        The folder and the cosine of its check (loaded by SpeechBrain vs
        the converted modules).
    """
    from speechbrain.dataio.encoder import CategoricalEncoder

    from dmha_modules.model_folder import noise_sample, write_model_folder
    from dmha_modules.features import LogMelFeatures, UtteranceNorm
    from dmha_modules.heads import Classifier
    from dmha_modules.models import EmbeddingModel

    seed = load_original(checkpoint, config)
    embedding_model = EmbeddingModel(**seed.embedding_kwargs)
    embedding_model.load_state_dict(seed.embedding_state, strict=True)
    classifier = Classifier(**seed.classifier_kwargs)
    classifier.load_state_dict(seed.classifier_state, strict=True)
    modules = {
        "compute_features": LogMelFeatures(sample_rate=sample_rate),
        "mean_var_norm": UtteranceNorm(),
        "embedding_model": embedding_model,
        "classifier": classifier,
    }
    encoder = CategoricalEncoder()
    encoder.update_from_iterable([str(i) for i in range(seed.n_classes)])
    settings = {k: v for k, v in seed.settings.items() if isinstance(v, (int, float, str, bool))}
    card = {
        "data": f"Imported from the original research code: `{checkpoint}` with `{config}`.",
        "metrics": None,
        "configuration": settings,
    }
    cosine = write_model_folder(
        out, modules, ("dmha_modules.models.EmbeddingModel", seed.embedding_kwargs),
        encoder, noise_sample(sample_rate), task="speaker", card=card,
    )
    return out, cosine
