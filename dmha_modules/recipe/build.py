"""A training experiment's model, as ``recipes/train.py`` builds it from its YAML.

``recipes/train.py`` builds its model with these functions and ``dmha export``
rebuilds it with them from an output folder's ``hyperparams.yaml`` (which
SpeechBrain saves with the command-line overrides applied), so both always
agree on what was trained.
"""

import os

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataio import load_data_csv

from dmha_modules.age.groups import COMMONVOICE_AGE_GROUPS
from dmha_modules.nn.losses import AMSoftmaxLoss, OrdinalRegressionLoss
from dmha_modules.folders.safety import ModelFolderError, read_checkpoint


def label_key(hparams):
    """The manifest column that holds the classes: ``age_group`` or ``spk_id``."""
    return "age_group" if hparams["task"] == "age" else "spk_id"


def manifest_path(folder, split):
    """``<folder>/<split>.csv``; for "test", ``valid.csv`` when there is no ``test.csv``.

    Labels files (the original code's splits) have no test split: their
    experiments are tested on the validation split.

    Example
    -------
    >>> folder = str(getfixture("tmp_path"))
    >>> _ = open(os.path.join(folder, "valid.csv"), "w")
    >>> os.path.basename(manifest_path(folder, "test"))
    'valid.csv'
    """
    path = os.path.join(folder, f"{split}.csv")
    if split == "test" and not os.path.exists(path):
        return os.path.join(folder, "valid.csv")
    return path


def read_manifest(hparams, split):
    """The rows of the split's manifest in ``manifest_folder``, as SpeechBrain's datasets read them.

    ``speechbrain.dataio.dataio.load_data_csv`` (what
    ``DynamicItemDataset.from_csv`` uses) of :func:`manifest_path`, with
    ``$data_root`` replaced by ``data_folder``.

    Arguments
    ---------
    hparams : dict
        ``manifest_folder`` and ``data_folder``.
    split : str
        ``train``, ``valid`` or ``test``.

    Returns
    -------
    dict
        Utterance id -> row (a dict of the other columns, ``duration`` a float).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "test.csv"), "w") as f:
    ...     _ = f.write("ID,duration,wav,spk_id\\nu1,1.5,$data_root/u1.flac,s1\\n")
    >>> read_manifest({"manifest_folder": folder, "data_folder": "/data"}, "test")
    {'u1': {'duration': 1.5, 'wav': '/data/u1.flac', 'spk_id': 's1'}}
    """
    path = manifest_path(hparams["manifest_folder"], split)
    return load_data_csv(path, replacements={"data_root": hparams["data_folder"]})


def age_classes(groups, age_groups):
    """The age classes, in age order: the first known list holding every group of ``groups``.

    The lists, in turn: ``age_groups`` (the YAML's names of its ``age_bins``,
    as Kaldi preparation labels), Common Voice's own groups, and the class
    indices ``0..N-1`` of the original code's labels files (N the largest
    + 1). The whole list is kept, so a class absent from training still has
    its index.

    Arguments
    ---------
    groups : iterable of str
        The age groups of the training manifest.
    age_groups : sequence of str
        The YAML's ``age_groups``.

    Returns
    -------
    list of str or None
        None when no list holds them all.

    Example
    -------
    >>> age_classes({"twenties", "child"}, ["child", "teens", "twenties", "thirties+"])
    ['child', 'teens', 'twenties', 'thirties+']
    >>> age_classes({"fourties", "teens"}, ["child", "teens"])[:4]
    ['teens', 'twenties', 'thirties', 'fourties']
    >>> age_classes({"2", "0"}, ["child", "teens"])
    ['0', '1', '2']
    >>> age_classes({"old"}, ["child", "teens"]) is None
    True
    """
    groups = set(groups)
    for known in (list(age_groups), list(COMMONVOICE_AGE_GROUPS)):
        if groups <= set(known):
            return known
    if groups and all(group.isdigit() and str(int(group)) == group for group in groups):
        return [str(index) for index in range(max(int(group) for group in groups) + 1)]
    return None


def class_names(hparams, rows):
    """The classes of a split's ``rows``: age classes (:func:`age_classes`) or sorted speakers.

    Example
    -------
    >>> class_names({"task": "speaker"}, [{"spk_id": "b"}, {"spk_id": "a"}, {"spk_id": "b"}])
    ['a', 'b']
    """
    labels = {row[label_key(hparams)] for row in rows}
    if hparams["task"] == "age":
        return age_classes(labels, hparams["age_groups"])
    return sorted(labels)


def make_label_encoder(hparams, split="train"):
    """The classes of a split as indices: the age classes, or the split's speakers.

    Every split of an age experiment has the classes that
    :func:`age_classes` finds for the training groups. Speakers are sorted;
    the valid and test speakers are held out of training, so each of those
    splits numbers its own (they only make trials). The training split's
    encoder is saved as ``<save_folder>/label_encoder.txt`` on first use and
    read back after.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    split : str
        ``train``, ``valid`` or ``test``.

    Returns
    -------
    speechbrain.dataio.encoder.CategoricalEncoder

    Example
    -------
    >>> folder = str(getfixture("tmp_path"))
    >>> with open(os.path.join(folder, "train.csv"), "w") as f:
    ...     _ = f.write("ID,duration,wav,spk_id,age_group\\nu1,1.5,u1.wav,s1,adult\\n")
    >>> hparams = {"task": "age", "save_folder": folder, "manifest_folder": folder,
    ...            "data_folder": folder, "age_groups": ["child", "adult"]}
    >>> make_label_encoder(hparams).encode_label("adult")
    1
    """
    # Age classes come from the training groups; speakers from each split's own.
    rows = read_manifest(hparams, "train" if hparams["task"] == "age" else split).values()
    classes = class_names(hparams, rows)
    encoder = sb.dataio.encoder.CategoricalEncoder()
    if split == "train":
        path = os.path.join(hparams["save_folder"], "label_encoder.txt")
        encoder.load_or_create(path, from_iterables=[classes])
    else:
        encoder.update_from_iterable(classes)
    encoder.expect_len(len(classes))
    return encoder


def train_statistics(hparams, label_encoder):
    """Per-class counts of the training rows and (age) the ages of each group.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    label_encoder : CategoricalEncoder
        Classes.

    Returns
    -------
    counts : torch.Tensor
        ``(C,)`` rows per class.
    ages : dict
        Class index -> list of ages in years (empty lists for speakers and
        for manifests without an ``age`` column).
    """
    counts = torch.zeros(len(label_encoder))
    ages = {i: [] for i in range(len(label_encoder))}
    for row in read_manifest(hparams, "train").values():
        index = label_encoder.encode_label(row[label_key(hparams)])
        counts[index] += 1
        if hparams["task"] == "age" and "age" in row:
            ages[index].append(float(row["age"]))
    return counts, ages


def gender_classes(hparams):
    """The sorted genders of the training manifest (its ``gender`` column; blanks left out).

    Example
    -------
    >>> folder = str(getfixture("tmp_path"))
    >>> with open(os.path.join(folder, "train.csv"), "w") as f:
    ...     _ = f.write("ID,duration,wav,spk_id,gender\\nu1,1,a.wav,s1,m\\nu2,1,b.wav,s2,\\n"
    ...                 "u3,1,c.wav,s3,f\\n")
    >>> gender_classes({"manifest_folder": folder, "data_folder": folder})
    ['f', 'm']
    """
    rows = read_manifest(hparams, "train").values()
    return sorted({row["gender"] for row in rows if row.get("gender")})


def age_decoding_of(group_loss, ages):
    """How an age model's scores become group probabilities and years (see ``build_model``).

    ``years_range`` is the training ages' ``[min, max]``, which predicted
    years are clipped to (``AgeClassifier``).

    Example
    -------
    >>> age_decoding_of(None, {0: [8.0, 10.0], 1: []})
    {'group_posteriors': 'softmax', 'score_scale': 1.0, 'group_centres': [9.0, 9.0], 'years_range': [8.0, 10.0]}
    >>> age_decoding_of(None, {0: [], 1: []})["group_centres"] is None  # no ages in years
    True
    """
    all_ages = [age for group in ages.values() for age in group]
    decoding = {
        "group_posteriors": (
            "ordinal" if isinstance(group_loss, OrdinalRegressionLoss) else "softmax"
        ),
        "score_scale": float(getattr(group_loss, "scale", 1.0)),
        "group_centres": None,
    }
    if all_ages:
        overall = float(np.mean(all_ages))
        decoding["group_centres"] = [float(np.mean(ages[i])) if ages[i] else overall
                                     for i in sorted(ages)]
        decoding["years_range"] = [float(min(all_ages)), float(max(all_ages))]
    return decoding


def build_model(hparams, label_encoder):
    """The modules to train, the group loss and the age decoding of an experiment.

    Adds the classifier (when there is a group loss; cosine for AM-Softmax),
    the years head (age task with ``years_loss_weight > 0``) and the gender
    head (age task with ``gender_loss_weight > 0``, classes
    :func:`gender_classes`) to the YAML's ``modules``, and registers them and
    the loss (its buffers, e.g. class weights, AM-Softmax annealing step)
    with the checkpointer. The training
    manifest gives the class counts (class weights) and the ages of each
    group (years head statistics, group centres).

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    label_encoder : CategoricalEncoder
        The training classes.

    Returns
    -------
    modules : dict
    group_loss : torch.nn.Module or None
    age_decoding : dict or None
        Age task: ``group_posteriors`` ("softmax" or "ordinal"),
        ``score_scale`` and ``group_centres`` (mean training age per class; a
        group absent from training gets the mean of all; empty when the
        manifests have no ages in years), ``years_range`` (the training ages'
        ``[min, max]``, with ages in years) and, with a gender head,
        ``gender_classes``, as model folders keep them.
    """
    counts, ages = train_statistics(hparams, label_encoder)
    modules = dict(hparams["modules"])
    group_loss = None
    if hparams["group_loss"] is not None:
        group_loss = hparams["group_losses"][hparams["group_loss"]]()
        # AM-Softmax works on cosines; the other losses on plain logits.
        modules["classifier"] = hparams["classifier"](
            n_classes=len(label_encoder), cosine=isinstance(group_loss, AMSoftmaxLoss)
        )
    age_decoding = None
    if hparams["task"] == "age":
        age_decoding = age_decoding_of(group_loss, ages)
        if hparams["years_loss_weight"] > 0:
            all_ages = [age for group in ages.values() for age in group]
            modules["age_head"] = hparams["age_head"]
            modules["age_head"].set_age_stats(float(np.mean(all_ages)), np.std(all_ages))
        # Experiments older than the gender head have no weight: none.
        if hparams.get("gender_loss_weight", 0) > 0:
            age_decoding["gender_classes"] = gender_classes(hparams)
            modules["gender_head"] = hparams["gender_head"](
                n_classes=len(age_decoding["gender_classes"]))
    if hasattr(group_loss, "set_class_counts"):
        group_loss.set_class_counts(counts)
    for name in ("classifier", "age_head", "gender_head"):
        if name in modules:
            hparams["checkpointer"].add_recoverable(name, modules[name])
    if group_loss is not None:
        hparams["checkpointer"].add_recoverable("group_loss", group_loss)
    return modules, group_loss, age_decoding


def load_initial_weights(embedding_model, folder):
    """Starts ``embedding_model`` from the one of a model folder (``init_from``).

    The folder is any model folder of this toolkit (a training's ``model/``,
    ``dmha export``'s, ``dmha import``'s): its ``embedding_model.ckpt`` is read
    as tensors only and must fit ``embedding_model`` key for key and shape for
    shape (same ``embedding``, sizes and ``n_mels``); the heads of the new task
    start afresh. Used to fine-tune a speaker model for age.

    Arguments
    ---------
    embedding_model : torch.nn.Module
        The model to train; its weights are replaced.
    folder : str
        The model folder.

    Raises
    ------
    ModelFolderError
        Naming the checkpoint: missing, unreadable, or each key that the two
        models do not share or whose shapes differ.

    Example
    -------
    >>> from dmha_modules.nn.models import EmbeddingModel
    >>> folder = getfixture("tmp_path")
    >>> trained = EmbeddingModel(channels=16, heads=4, emb_dim=32)
    >>> torch.save(trained.state_dict(), folder / "embedding_model.ckpt")
    >>> fresh = EmbeddingModel(channels=16, heads=4, emb_dim=32)
    >>> load_initial_weights(fresh, str(folder))
    >>> all(torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.parameters()))
    True
    >>> load_initial_weights(EmbeddingModel(channels=16, heads=4, emb_dim=64), str(folder))
    Traceback (most recent call last):
    ...
    dmha_modules.folders.safety.ModelFolderError: .../embedding_model.ckpt: init_from: ...
    """
    path = os.path.join(folder, "embedding_model.ckpt")
    if not os.path.isfile(path):
        raise ModelFolderError([f"{path}: no such file (init_from names a model folder, "
                                "such as a training's model/)"])
    saved, own = read_checkpoint(path), embedding_model.state_dict()
    problems = [f"key {key} only in this training's model" for key in own if key not in saved]
    problems += [f"key {key} only in the checkpoint" for key in saved if key not in own]
    problems += [f"key {key}: shape {tuple(saved[key].shape)} in the checkpoint, "
                 f"{tuple(own[key].shape)} here" for key in own
                 if key in saved and saved[key].shape != own[key].shape]
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise ModelFolderError([f"{path}: init_from: its embedding model does not fit this "
                                "training's (same --embedding and sizes needed):"]
                               + [f"  {problem}" for problem in shown])
    embedding_model.load_state_dict(saved)


def embedding_spec(hparams):
    """``(class path, kwargs)`` of the experiment's embedding model, for a model folder."""
    partial = hparams["embedding_models"][hparams["embedding"]]
    return f"{partial.func.__module__}.{partial.func.__qualname__}", dict(partial.keywords)


def best_checkpoint_kwargs(hparams):
    """``find_checkpoint``'s ``max_key`` or ``min_key``: the best by ``selection_metric``.

    Example
    -------
    >>> best_checkpoint_kwargs({"selection_metric": "eer", "selection_direction": "min"})
    {'min_key': 'eer'}
    """
    key = hparams["selection_metric"]
    return {"max_key": key} if hparams["selection_direction"] == "max" else {"min_key": key}
