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

from dmha_modules.losses import AMSoftmaxLoss, OrdinalRegressionLoss


def label_key(hparams):
    """The manifest column that holds the classes: ``age_group`` or ``spk_id``."""
    return "age_group" if hparams["task"] == "age" else "spk_id"


def read_manifest(hparams, split):
    """The rows of ``<manifest_folder>/<split>.csv``, as SpeechBrain's datasets read them.

    ``speechbrain.dataio.dataio.load_data_csv`` (what
    ``DynamicItemDataset.from_csv`` uses), with ``$data_root`` replaced by
    ``data_folder``.

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
    path = os.path.join(hparams["manifest_folder"], f"{split}.csv")
    return load_data_csv(path, replacements={"data_root": hparams["data_folder"]})


def make_label_encoder(hparams, split="train"):
    """The classes of a split as indices: the age groups in bin order, or the split's speakers.

    Speakers are sorted. The valid and test speakers are held out of training,
    so each of those splits numbers its own (they only make trials). The
    training split's encoder is saved as ``<save_folder>/label_encoder.txt``
    on first use and read back after.

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
    >>> import tempfile
    >>> hparams = {"task": "age", "save_folder": tempfile.mkdtemp(),
    ...            "age_groups": ["child", "adult"]}
    >>> make_label_encoder(hparams).encode_label("adult")
    1
    """
    if hparams["task"] == "age":
        classes = hparams["age_groups"]
    else:
        rows = read_manifest(hparams, split).values()
        classes = sorted({row[label_key(hparams)] for row in rows})
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
        Class index -> list of ages in years (empty lists for speakers).
    """
    counts = torch.zeros(len(label_encoder))
    ages = {i: [] for i in range(len(label_encoder))}
    for row in read_manifest(hparams, "train").values():
        index = label_encoder.encode_label(row[label_key(hparams)])
        counts[index] += 1
        if hparams["task"] == "age":
            ages[index].append(float(row["age"]))
    return counts, ages


def build_model(hparams, label_encoder):
    """The modules to train, the group loss and the age decoding of an experiment.

    Adds the classifier (when there is a group loss; cosine for AM-Softmax)
    and the years head (age task with ``years_loss_weight > 0``) to the YAML's
    ``modules``, and registers them and the loss (its buffers, e.g. class
    weights, AM-Softmax annealing step) with the checkpointer. The training
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
        group absent from training gets the mean of all), as model folders keep them.
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
        all_ages = [age for group in ages.values() for age in group]
        overall = float(np.mean(all_ages))
        age_decoding = {
            "group_posteriors": (
                "ordinal" if isinstance(group_loss, OrdinalRegressionLoss) else "softmax"
            ),
            "score_scale": float(getattr(group_loss, "scale", 1.0)),
            "group_centres": [
                float(np.mean(ages[i])) if ages[i] else overall for i in range(len(label_encoder))
            ],
        }
        if hparams["years_loss_weight"] > 0:
            modules["age_head"] = hparams["age_head"]
            modules["age_head"].set_age_stats(overall, np.std(all_ages))
    if hasattr(group_loss, "set_class_counts"):
        group_loss.set_class_counts(counts)
    for name in ("classifier", "age_head"):
        if name in modules:
            hparams["checkpointer"].add_recoverable(name, modules[name])
    if group_loss is not None:
        hparams["checkpointer"].add_recoverable("group_loss", group_loss)
    return modules, group_loss, age_decoding


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
