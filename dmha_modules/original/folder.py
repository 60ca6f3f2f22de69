"""Model folders of the original code's models: ``import_original`` (``dmha import-original``)."""

from dmha_modules.original.convert import ORIGINAL_N_FFT, load_original
from dmha_modules.original.files import OriginalFormatError

# Years at the middle of decade-named groups; "fourties" is the age variant's spelling.
DECADE_CENTRES = {"teens": 16.0, "twenties": 25.0, "thirties": 35.0, "forties": 45.0,
                  "fourties": 45.0, "fifties": 55.0, "sixties": 65.0, "seventies": 75.0,
                  "eighties": 85.0, "nineties": 95.0}

def group_centres(names):
    """Years at the middle of decade-named age groups ("twenties" -> 25), or None.

    Arguments
    ---------
    names : sequence of str
        Group names; "teens" counts as 13-19 and the original's spelling
        "fourties" as "forties".

    Returns
    -------
    list of float or None
        None when a name is not a decade's.

    Example
    -------
    >>> group_centres(["teens", "twenties", "fourties"])
    [16.0, 25.0, 45.0]
    >>> group_centres(["child", "adult"]) is None
    True
    """
    centres = [DECADE_CENTRES.get(name.lower()) for name in names]
    return None if None in centres else centres


def import_original(
    checkpoint, config, out, sample_rate=16000, task=None, groups=None, group_ages=None
):
    """Writes a model folder (see ``dmha_modules.folders.model_folder``) of an original-code model.

    The folder computes as the original did: its features (librosa's framing,
    ``LogMelFeatures(framing="original")``, at ``sample_rate``; per-utterance
    mean or mean and variance normalisation as the settings say) and its
    decisions (``decide``). Age models become age model folders for
    ``AgeClassifier`` and ``dmha age``.

    Arguments
    ---------
    checkpoint : str
        The original's ``.chkpt`` file.
    config : str
        The original's ``_config.pkl`` file.
    out : str
        The model folder to write.
    sample_rate : int
        Sample rate of the training audio (at most about 20.5 kHz, as the
        original could not compute features above).
    task : str, optional
        ``"age"`` or ``"speaker"``; by default as the settings say (the age
        variant's settings have ``criterion``).
    groups : sequence of str, optional
        Class names in class order; by default ``OriginalModel.class_names``.
    group_ages : sequence of float, optional
        Age models: the years of each group, for the years estimate; by
        default the middle of decade-named groups (``group_centres``).

    Returns
    -------
    tuple
        The folder and the cosine of its check (loaded by SpeechBrain vs
        the converted modules).

    Raises
    ------
    OriginalFormatError
        Files that cannot be loaded safely or reproduced, or names and ages
        that do not fit the model.
    """
    from speechbrain.dataio.encoder import CategoricalEncoder

    from dmha_modules.folders.model_folder import noise_sample, write_model_folder
    from dmha_modules.nn.features import LogMelFeatures

    compute_features = LogMelFeatures(sample_rate=sample_rate, framing="original")
    if compute_features.win_length > ORIGINAL_N_FFT:
        raise OriginalFormatError(
            f"sample_rate {sample_rate}: the original's 25 ms window of "
            f"{compute_features.win_length} samples exceeds its {ORIGINAL_N_FFT}-point "
            "FFT, so it cannot have computed features at this rate"
        )
    loaded = load_original(checkpoint, config)
    task = task or loaded.task
    names = _class_names(loaded, groups, checkpoint)
    age_decoding = _age_decoding(loaded, names, group_ages, checkpoint) if task == "age" else None
    modules = _converted_modules(loaded, compute_features)
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(names)
    settings = {k: v for k, v in loaded.settings.items() if isinstance(v, (int, float, str, bool))}
    card = {
        "data": f"Imported from the original research code: `{checkpoint}` with `{config}`.",
        "metrics": None,
        "configuration": settings,
    }
    cosine = write_model_folder(
        out, modules, ("dmha_modules.nn.models.EmbeddingModel", loaded.embedding_kwargs),
        encoder, noise_sample(sample_rate), task=task, age_decoding=age_decoding, card=card,
    )
    return out, cosine


def _class_names(loaded, groups, checkpoint):
    """The class names, ``groups`` or the original's, checked against the model's classes."""
    names = tuple(groups) if groups else loaded.class_names
    if len(names) != loaded.n_classes or len(set(names)) != len(names):
        raise OriginalFormatError(
            f"{checkpoint}: {loaded.n_classes} classes, but {len(names)} "
            f"{'distinct ' if len(names) == loaded.n_classes else ''}names were given"
        )
    return names


def _converted_modules(loaded, compute_features):
    """``write_model_folder``'s modules of a loaded original model."""
    from dmha_modules.nn.features import UtteranceNorm
    from dmha_modules.nn.heads import Classifier
    from dmha_modules.nn.models import EmbeddingModel

    embedding_model = EmbeddingModel(**loaded.embedding_kwargs)
    embedding_model.load_state_dict(loaded.embedding_state, strict=True)
    classifier = Classifier(**loaded.classifier_kwargs)
    classifier.load_state_dict(loaded.classifier_state, strict=True)
    return {
        "compute_features": compute_features,
        "mean_var_norm": UtteranceNorm(std_norm=loaded.std_norm),
        "embedding_model": embedding_model,
        "classifier": classifier,
    }


def _age_decoding(loaded, names, group_ages, checkpoint):
    """An imported age model's ``age_decoding`` (see ``model_folder.model_hyperparams``).

    Probabilities: the sigmoids of the cosines for ``train_ordinal.py``
    models, else the softmax of the AM-Softmax logits (scale ``s``).
    """
    centres = list(map(float, group_ages)) if group_ages else group_centres(names)
    if centres is None or len(centres) != len(names):
        raise OriginalFormatError(
            f"{checkpoint}: give the years of each of the {len(names)} groups "
            f"({', '.join(names)}) with group_ages (--group_ages), in class order"
        )
    ordinal = loaded.decision == "ordinal"
    return {
        "group_posteriors": "ordinal" if ordinal else "softmax",
        "score_scale": 1.0 if ordinal else float(loaded.settings.get("scalingFactor", 1.0)),
        "group_centres": centres,
        "decision": loaded.decision,
    }
