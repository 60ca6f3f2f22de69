"""Model folders: what SpeechBrain's ``EncoderClassifier.from_hparams`` loads.

A folder holds ``hyperparams.yaml`` (features, normalisation, the embedding
model, the classifier, the label encoder, the years and gender heads of age models, and a
pretrainer without network paths), one ``<name>.ckpt`` per module,
``label_encoder.ckpt`` and ``model_card.md``. ``write_model_folder`` writes it
under a temporary name, loads it back with SpeechBrain, checks that every
saved key loads (the pretrainer itself loads non-strictly) and that a sample's
embedding matches the given modules' to cosine 0.9999, and only then renames
it into place. ``write_experiment_model`` does this for a training
experiment: ``recipes/train.py`` when it finishes, ``export_experiment`` from
its output folder.
"""

import json
import os
import shutil

import torch
import yaml

from dmha_modules.age.calibration_file import AGE_CALIBRATION_FILE, load_age_calibration
from dmha_modules.io.atomic import atomic_paths
from dmha_modules.io.audio import AudioError
from dmha_modules.nn.embedding import embed_waveforms, load_utterance
from dmha_modules.recipe.build import (
    best_checkpoint_kwargs,
    build_model,
    embedding_spec,
    make_label_encoder,
    read_manifest,
)
from dmha_modules.folders.cards import experiment_card, model_card
from dmha_modules.folders.replace import MODEL_CHECKPOINTS, Replacement
from dmha_modules.folders.safety import check_finite, check_hyperparams, read_checkpoint


def yaml_new(obj_path, kwargs, indent="    "):
    """A HyperPyYAML ``!new:`` node of ``obj_path`` with ``kwargs``, as text."""
    lines = yaml.safe_dump(kwargs, default_flow_style=False, sort_keys=False).splitlines()
    return f"!new:{obj_path}" + "".join(f"\n{indent}{line}" for line in lines if kwargs)


def model_hyperparams(modules, embedding, task, age_decoding=None, verification_threshold=None):
    """``hyperparams.yaml`` text of a model folder.

    The features, normalisation and embedding model are built under their
    own keys (``compute_features``, ``mean_var_norm``, ``embedding_model``,
    whose checkpoint the pretrainer loads), inside a
    :class:`dmha_modules.nn.waveform.WaveformEmbedding`; SpeechBrain's
    ``modules`` are that (as ``embedding_model``) and pass-throughs, so
    ``EncoderClassifier.encode_batch(wavs, wav_lens)`` with the waveforms'
    relative lengths gives each utterance of a padded batch its embedding
    alone. Folders written before name the three modules themselves.

    Arguments
    ---------
    modules : dict
        ``compute_features``, ``mean_var_norm``, ``embedding_model``,
        ``classifier`` and optionally ``age_head`` and ``gender_head``.
    embedding : tuple
        ``(class path, kwargs)`` that build the embedding model.
    task : str
        ``"age"`` or ``"speaker"``.
    age_decoding : dict, optional
        Age models: ``group_posteriors``, ``score_scale``, ``group_centres``,
        with a gender head ``gender_classes``, once calibrated
        ``temperature``, ``interval_coverage`` and the intervals' half-widths,
        and, for models of the original code, ``decision`` (see
        ``AgeClassifier``).
    verification_threshold : float, optional
        Cosine above which two utterances are called the same speaker.

    Returns
    -------
    str
    """
    features = modules["compute_features"]
    heads = [name for name in ("age_head", "gender_head") if name in modules]
    loadables = {name: name for name in ("embedding_model", "classifier", *heads,
                                         "label_encoder")}
    mods = {"compute_features": "pass_through", "mean_var_norm": "pass_through",
            "embedding_model": "waveform_embedding_model",
            **{name: name for name in ("mean_var_norm_emb", "classifier", *heads)}}
    heads = _heads_yaml(modules, age_decoding)
    return f"""# {task} model; load it with
# speechbrain.inference.EncoderClassifier.from_hparams(source=<this folder>)
# or dmha_modules.inference.DMHAClassifier / AgeClassifier.
task: {task}
sample_rate: {features.sample_rate}
verification_threshold: {"null" if verification_threshold is None else verification_threshold}
compute_features: {yaml_new("dmha_modules.nn.features.LogMelFeatures", {
        "sample_rate": features.sample_rate,
        "n_mels": int(features.mel_filters.shape[1]),
        "hop_length_ms": 1000 * features.hop_length / features.sample_rate,
        "framing": features.framing})}
mean_var_norm: {yaml_new("dmha_modules.nn.features.UtteranceNorm", {
        "std_norm": modules["mean_var_norm"].std_norm})}
embedding_model: {yaml_new(*embedding)}
# SpeechBrain's encode_batch(wavs, wav_lens) runs the modules below with the waveforms'
# relative lengths: this one takes the waveforms and counts each utterance's frames,
# so padded batches are exact.
waveform_embedding_model: !new:dmha_modules.nn.waveform.WaveformEmbedding
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pass_through: !new:dmha_modules.nn.waveform.PassThrough
mean_var_norm_emb: !new:dmha_modules.inference.NoEmbeddingNorm
classifier: {classifier_yaml(modules["classifier"])}
{heads}label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
modules:
{_refs(mods, "    ")}pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
{_refs(loadables, "        ")}"""


def _refs(names, indent):
    """YAML lines ``name: !ref <key>`` of the mapping ``names`` (name -> key)."""
    return "".join(f"{indent}{name}: !ref <{key}>\n" for name, key in names.items())


def _heads_yaml(modules, age_decoding):
    """The age and gender heads' YAML and the age decoding settings (see ``model_hyperparams``)."""
    extra = ""
    if "age_head" in modules:
        extra += "age_head: " + yaml_new(
            "dmha_modules.nn.heads.AgeRegressionHead",
            {"input_size": modules["age_head"].linear.in_features},
        ) + "\n"
    if "gender_head" in modules:
        extra += f"gender_head: {classifier_yaml(modules['gender_head'])}\n"
    if age_decoding is not None:
        extra += (
            "# Age: group probabilities from the classifier's scores; years from the\n"
            "# years head when there is one, else the probabilities times group_centres\n"
            "# (the training ages' mean per group, in class order; null: no years).\n"
            "# decision: ordinal is the original code's train_ordinal.py rule (absent: the\n"
            "# most probable group). gender_classes: the gender head's, in order.\n"
            "# Calibrated on the validation speakers (absent: not calibrated): group\n"
            "# scores divided by temperature; years +- interval_half_width_years holds a\n"
            "# speaker's age (their utterances' mean prediction) with probability\n"
            "# interval_coverage, utterance_interval_half_width_years one utterance's\n"
            "# (null: too few validation speakers for that coverage).\n"
            + yaml.safe_dump(age_decoding, default_flow_style=False, sort_keys=False)
        )
    return extra


def classifier_yaml(classifier):
    """The ``!new:`` node of a ``heads.Classifier`` with its sizes."""
    return yaml_new("dmha_modules.nn.heads.Classifier", {
        "input_size": classifier.pre_layer.in_features,
        "n_classes": classifier.weight.shape[1],
        "hidden_size": classifier.pre_layer.out_features,
        "cosine": classifier.cosine,
    })


def check_model_folder(folder, modules, sample):
    """Loads ``folder`` as SpeechBrain would and checks it against ``modules``.

    Its ``hyperparams.yaml`` must pass the safety check that loading a
    folder one did not write takes (``check_hyperparams``), every saved key
    must exist in the rebuilt modules and vice versa, and ``sample``'s
    embedding must match the one of ``modules`` to cosine 0.9999.

    Returns
    -------
    float
        The cosine.
    """
    from speechbrain.inference.classifiers import EncoderClassifier

    check_hyperparams(os.path.join(folder, "hyperparams.yaml"))
    loaded_dir = os.path.join(folder, ".loaded")
    loaded = EncoderClassifier.from_hparams(source=os.path.abspath(folder), savedir=loaded_dir)
    for name in MODEL_CHECKPOINTS:
        path = os.path.join(folder, f"{name}.ckpt")
        if not os.path.exists(path):
            continue
        saved = torch.load(path, weights_only=True)
        rebuilt = getattr(loaded.hparams, name).state_dict()  # what the pretrainer loads
        if saved.keys() != rebuilt.keys():
            raise RuntimeError(
                f"{path} does not match the model its hyperparams.yaml builds: "
                f"{sorted(saved.keys() ^ rebuilt.keys())}"
            )
    device = next(modules["embedding_model"].parameters()).device
    with torch.no_grad():
        for module in modules.values():
            module.eval()
        reference = embed_waveforms(torch.nn.ModuleDict(modules), sample[None].to(device))
        embedding = loaded.encode_batch(sample[None].cpu())
    cosine = float(torch.nn.functional.cosine_similarity(
        reference.flatten().cpu(), embedding.flatten(), 0))
    if cosine < 0.9999:
        raise RuntimeError(f"{folder} reproduces the embedding only to cosine {cosine:.6f}")
    shutil.rmtree(loaded_dir)
    return cosine


def write_model_folder(
    folder,
    modules,
    embedding,
    label_encoder,
    sample,
    task="speaker",
    age_decoding=None,
    verification_threshold=None,
    card=None,
    extra_files=(),
):
    """Writes, checks and publishes a model folder (see the module docstring).

    Arguments
    ---------
    folder : str
        Where the folder goes: a new path, an empty folder or a model folder dmha
        wrote, replaced only once the new one checks out, keeping its
        ``calibration.json`` and ``embedding.onnx`` (see
        :mod:`dmha_modules.folders.replace`); any other folder is a ``ValueError``.
    modules : dict
        ``compute_features``, ``mean_var_norm``, ``embedding_model``,
        ``classifier`` and optionally ``age_head`` and ``gender_head``
        (trained, any device).
    embedding : tuple
        ``(class path, kwargs)`` that build the embedding model.
    label_encoder : CategoricalEncoder
        Class names.
    sample : torch.Tensor
        A waveform ``(samples,)`` at the model's rate for the check.
    task : str
        ``"age"`` or ``"speaker"``.
    age_decoding : dict, optional
        See ``model_hyperparams``.
    verification_threshold : float, optional
        See ``model_hyperparams``.
    card : dict, optional
        ``data`` (str), ``metrics`` (dict) and ``configuration`` (dict) for
        ``model_card.md``.
    extra_files : sequence of (str, str)
        ``(source path, name)`` copied into the folder.

    Returns
    -------
    float
        The cosine of the check.

    Example
    -------
    >>> import tempfile
    >>> from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    >>> from dmha_modules.nn.heads import Classifier
    >>> from dmha_modules.nn.models import EmbeddingModel
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> kwargs = dict(channels=16, heads=4, emb_dim=32)
    >>> modules = dict(compute_features=LogMelFeatures(), mean_var_norm=UtteranceNorm(),
    ...                embedding_model=EmbeddingModel(**kwargs),
    ...                classifier=Classifier(32, n_classes=2, hidden_size=32))
    >>> encoder = CategoricalEncoder()
    >>> encoder.update_from_iterable(["alice", "bob"])
    >>> folder = os.path.join(tempfile.mkdtemp(), "model")
    >>> cosine = write_model_folder(folder, modules, ("dmha_modules.nn.models.EmbeddingModel",
    ...     kwargs), encoder, torch.rand(16000) - 0.5)
    >>> cosine > 0.9999, sorted(os.listdir(folder))[:3]
    (True, ['classifier.ckpt', 'embedding_model.ckpt', 'hyperparams.yaml'])
    """
    _check_finite_checkpoints(folder, modules)  # before any work: a NaN model is never written
    hyperparams = model_hyperparams(modules, embedding, task, age_decoding,
                                    verification_threshold)
    replacement = Replacement(folder, hyperparams, modules["embedding_model"])
    with atomic_paths(folder) as (tmp,):
        os.makedirs(tmp)
        _write_model_files(tmp, modules, label_encoder, hyperparams, task, embedding,
                           card or {}, extra_files)
        # Checked under the temporary name: a folder that fails is never published.
        cosine = check_model_folder(tmp, modules, sample)
        replacement.into(tmp, modules)
    return cosine


def _check_finite_checkpoints(folder, modules):
    """Raises if a checkpointed module of ``modules`` has a non-finite weight."""
    for name in MODEL_CHECKPOINTS:
        if name in modules:
            check_finite(modules[name].state_dict(), os.path.join(folder, f"{name}.ckpt"))


def _write_model_files(folder, modules, label_encoder, hyperparams, task, embedding, card,
                       extra_files):
    """Writes a model folder's files into the existing ``folder`` (see ``write_model_folder``)."""
    for name in MODEL_CHECKPOINTS:
        if name in modules:
            torch.save(modules[name].state_dict(), os.path.join(folder, f"{name}.ckpt"))
    label_encoder.save(os.path.join(folder, "label_encoder.ckpt"))
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(hyperparams)
    with open(os.path.join(folder, "model_card.md"), "w", encoding="utf-8") as f:
        f.write(model_card(task, embedding, card.get("data", "Not recorded."),
                           card.get("metrics"), card.get("configuration", embedding[1])))
    for source, name in extra_files:
        shutil.copy(source, os.path.join(folder, name))


def write_experiment_model(hparams, modules, label_encoder, age_decoding, metrics, folder=None):
    """Writes the model folder of a training experiment's modules (see ``write_model_folder``).

    The check's sample is a test utterance (see ``check_sample``), the card
    describes the experiment, the verification threshold is the test EER's
    and the experiment's ``hyperparams.yaml`` is kept as
    ``train_hyperparams.yaml``.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    modules : dict
        The trained modules, as ``build_model`` made them.
    label_encoder : CategoricalEncoder
        The training classes.
    age_decoding : dict or None
        From ``build_model``.
    metrics : dict
        The test metrics (without the confusion matrix).
    folder : str, optional
        The model folder; default ``<output_folder>/model``.

    Returns
    -------
    tuple
        The folder and the cosine of its check.
    """
    folder = folder or os.path.join(hparams["output_folder"], "model")
    cosine = write_model_folder(
        folder,
        modules,
        embedding_spec(hparams),
        label_encoder,
        check_sample(hparams),
        task=hparams["task"],
        age_decoding=age_decoding,
        verification_threshold=metrics.get("eer_threshold"),
        card=experiment_card(hparams, label_encoder, metrics),
        extra_files=[(os.path.join(hparams["output_folder"], "hyperparams.yaml"),
                      "train_hyperparams.yaml")],
    )
    return folder, cosine


def saved_test_metrics(hparams):
    """The experiment's ``test_metrics.json`` (without the confusion matrix), or {}."""
    path = os.path.join(hparams["output_folder"], "test_metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    metrics.pop("confusion", None)
    return metrics


def saved_calibration(hparams):
    """The experiment's ``age_calibration.json`` (what ``recipes/train.py`` calibrated), or {}.

    Checked strictly (:func:`dmha_modules.age.calibration_file.load_age_calibration`).
    """
    path = os.path.join(hparams["output_folder"], AGE_CALIBRATION_FILE)
    if not os.path.exists(path):
        return {}
    return load_age_calibration(path)  # checked: a ValueError names the file


def check_sample(hparams):
    """A waveform for the export check: the first readable test utterance, else noise."""
    for row in list(read_manifest(hparams, "test").values())[:5]:
        try:
            return load_utterance(row["wav"], hparams["sample_rate"])
        except AudioError:
            continue
    return noise_sample(hparams["sample_rate"])


def noise_sample(sample_rate):
    """Three seconds of seeded noise: the export check's sample when no speech is at hand."""
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(3 * sample_rate, generator=generator)


def export_experiment(experiment, out=None, trust_model=False):
    """Writes the model folder of a training output folder's best checkpoint.

    The model is rebuilt from the folder's ``hyperparams.yaml`` as
    ``recipes/train.py`` built it (after the safety check of
    :func:`dmha_modules.folders.safety.check_hyperparams`, unless
    ``trust_model``), and the best checkpoint by the YAML's
    ``selection_metric`` is loaded strictly (a missing or unexpected key is
    an error, not random weights).

    Arguments
    ---------
    experiment : str
        ``output_folder`` of a ``recipes/train.py`` run (it may have moved).
    out : str, optional
        The model folder; default ``<experiment>/model``.
    trust_model : bool
        Load the YAML without the safety check.

    Returns
    -------
    tuple
        As ``write_experiment_model``.
    """
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import Checkpointer

    experiment = os.path.abspath(experiment)
    path = os.path.join(experiment, "hyperparams.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; is {experiment} a recipes/train.py output folder?")
    # The saved YAML has absolute folders of where training ran; use where it is now.
    overrides = {
        "output_folder": experiment,
        "save_folder": os.path.join(experiment, "save"),
        "manifest_folder": os.path.join(experiment, "manifests"),
    }
    if not trust_model:
        check_hyperparams(path, overrides)
    with open(path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    label_encoder = make_label_encoder(hparams)
    modules, _, age_decoding = build_model(hparams, label_encoder)
    age_decoding = age_decoding and {**age_decoding, **saved_calibration(hparams)}
    if "classifier" not in modules:
        raise ValueError(f"{path}: a model without a classifier (group_loss null) has no "
                         "EncoderClassifier folder")
    trained = {name: modules[name] for name in MODEL_CHECKPOINTS if name in modules}
    checkpointer = Checkpointer(hparams["save_folder"], recoverables=trained)
    checkpoint = checkpointer.find_checkpoint(**best_checkpoint_kwargs(hparams))
    if checkpoint is None:
        raise FileNotFoundError(f"{hparams['save_folder']}: no checkpoint to export")
    for name, module in trained.items():
        module.load_state_dict(read_checkpoint(checkpoint.paramfiles[name]), strict=True)
    return write_experiment_model(
        hparams, modules, label_encoder, age_decoding, saved_test_metrics(hparams), out
    )
