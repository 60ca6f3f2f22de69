"""A training experiment's model, as ``recipes/train.py`` builds it from its YAML.

``recipes/train.py`` builds its model with these functions and ``dmha export``
rebuilds it with them from an output folder's ``hyperparams.yaml`` (which
SpeechBrain saves with the command-line overrides applied), so both always
agree on what was trained.
"""

import csv
import os

import numpy as np
import speechbrain as sb
import torch

from dmha_modules.losses import AMSoftmaxLoss, OrdinalRegressionLoss


def label_key(hparams):
    """The manifest column that holds the classes: ``age_group`` or ``spk_id``."""
    return "age_group" if hparams["task"] == "age" else "spk_id"


def read_manifest(hparams, split):
    """The rows of ``<manifest_folder>/<split>.csv`` as dicts, ``$data_root`` filled in."""
    path = os.path.join(hparams["manifest_folder"], f"{split}.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["wav"] = row["wav"].replace("$data_root", hparams["data_folder"])
    return rows


def make_label_encoder(hparams):
    """Age groups in bin order, or the training speakers, as class indices.

    Saved as ``<save_folder>/label_encoder.txt`` on first use and read back after.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.

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
    path = os.path.join(hparams["save_folder"], "label_encoder.txt")
    encoder = sb.dataio.encoder.CategoricalEncoder()
    if hparams["task"] == "age":
        encoder.load_or_create(path, from_iterables=[hparams["age_groups"]])
        encoder.expect_len(len(hparams["age_groups"]))
    else:
        speakers = sorted({row["spk_id"] for row in read_manifest(hparams, "train")})
        encoder.load_or_create(path, from_iterables=[speakers])
        encoder.expect_len(len(speakers))
    return encoder


def train_statistics(rows, hparams, label_encoder):
    """Per-class counts of training rows and (age) the ages of each group.

    Arguments
    ---------
    rows : iterable of dict
        Training manifest rows.
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
    for row in rows:
        index = label_encoder.encode_label(row[label_key(hparams)])
        counts[index] += 1
        if hparams["task"] == "age":
            ages[index].append(float(row["age"]))
    return counts, ages


def build_model(hparams, label_encoder, counts, ages):
    """The modules to train, the group loss and the age decoding of an experiment.

    Adds the classifier (when there is a group loss; cosine for AM-Softmax)
    and the years head (age task with ``years_loss_weight > 0``) to the YAML's
    ``modules``, and registers them and the loss (its buffers, e.g. class
    weights, AM-Softmax annealing step) with the checkpointer.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    label_encoder : CategoricalEncoder
        Classes.
    counts, ages
        From ``train_statistics``.

    Returns
    -------
    modules : dict
    group_loss : torch.nn.Module or None
    age_decoding : dict or None
        Age task: ``group_posteriors`` ("softmax" or "ordinal"),
        ``score_scale`` and ``group_centres`` (mean training age per class; a
        group absent from training gets the mean of all), as model folders keep them.
    """
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
