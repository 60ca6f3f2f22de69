"""Replacing a model folder: which existing folders may be replaced, and what of theirs is kept.

A model folder is written beside its place and swapped in whole
(:func:`dmha_modules.io.atomic.atomic_paths`), so whatever the old folder held
that the new one does not would be gone. Two rules keep that from losing
a user's files:

- Only a model folder that dmha wrote is replaced: one holding
  ``hyperparams.yaml`` and nothing but the files dmha writes into a model
  folder (:func:`model_folder_files`). Any other non-empty folder is refused
  (:func:`check_replaceable`); a new path or an empty folder is written.
- What was added to the old folder after it was written (``calibration.json``
  and its DET plot by ``dmha calibrate``, ``embedding.onnx`` by ``dmha export
  --onnx``) is copied into the new one when the new one computes the same
  embeddings: the same sample rate, feature, normalisation and embedding-model
  settings, and the same embedding-model weights. Otherwise the ONNX graph is
  exported again from the new weights, and a calibration, which only a
  development trial list can fit again, is refused with the reason
  (:class:`Replacement`).

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> check_replaceable(folder)  # empty: fine
>>> _ = open(os.path.join(folder, "notes.txt"), "w").write("mine")
>>> check_replaceable(folder)
Traceback (most recent call last):
...
ValueError: /...: not replaced: a folder that is not a model folder written by dmha (it holds notes.txt); give a new or empty folder, or a model folder written by dmha (replaced whole)
"""

import importlib.util
import logging
import os
import shutil

import torch
import yaml

from dmha_modules.folders.quantize import INT8_FILE, INT8_RECORD
from dmha_modules.scoring.calibration import SCORE_CALIBRATION_FILE

logger = logging.getLogger(__name__)

ONNX_FILE = "embedding.onnx"
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # what exporting and checking it needs
CALIBRATION_PLOT_FILE = "calibration_det.png"  # dmha calibrate's default --plot
# The trained modules a model folder holds, one "<name>.ckpt" each.
MODEL_CHECKPOINTS = ("embedding_model", "classifier", "age_head", "gender_head")
# Added to a model folder after it is written; kept when the embeddings are the same.
# The int8 graph and its record (dmha export --precision int8) are calibrated on the user's
# audio, so, like calibration.json, they cannot be made again for other weights.
ADDED_FILES = (SCORE_CALIBRATION_FILE, CALIBRATION_PLOT_FILE, ONNX_FILE, INT8_FILE, INT8_RECORD)
# What the model's embeddings depend on, in hyperparams.yaml.
EMBEDDING_KEYS = ("sample_rate", "compute_features", "mean_var_norm", "embedding_model")


def model_folder_files():
    """The names of the files dmha writes into a model folder.

    Returns
    -------
    set of str
    """
    return {"hyperparams.yaml", "model_card.md", "train_hyperparams.yaml", "label_encoder.ckpt",
            *(f"{name}.ckpt" for name in MODEL_CHECKPOINTS), *ADDED_FILES}


def check_replaceable(folder):
    """Refuses to replace ``folder`` unless it is new, empty or a model folder dmha wrote.

    Arguments
    ---------
    folder : str
        Where a model folder is to be written.

    Raises
    ------
    ValueError
        One line naming the folder and what it holds that dmha did not write.
    """
    if not os.path.isdir(folder):  # new (a file in the way is check_writable's to say)
        return
    names = sorted(os.listdir(folder))
    foreign = [name for name in names if name not in model_folder_files()]
    if names and (foreign or "hyperparams.yaml" not in names):
        shown = foreign or names
        held = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
        raise ValueError(
            f"{folder}: not replaced: a folder that is not a model folder written by dmha "
            f"(it holds {held}); give a new or empty folder, or a model folder written by "
            "dmha (replaced whole)"
        )


def _embedding_settings(text):
    """The YAML of ``EMBEDDING_KEYS`` in a ``hyperparams.yaml`` text (None: unreadable)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: no tag is run
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    nodes = {key.value: value for key, value in root.value}
    return {key: nodes[key] and yaml.serialize(nodes[key]) for key in EMBEDDING_KEYS
            if key in nodes}


def _same_weights(path, module):
    """Whether the checkpoint at ``path`` holds ``module``'s weights exactly."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or refused: not the same model, whatever it is
        return False
    current = module.state_dict()
    return saved.keys() == current.keys() and all(
        torch.equal(saved[key], current[key].cpu()) for key in saved)


def same_embeddings(folder, hyperparams, embedding_model):
    """Whether ``folder``'s model computes the embeddings of a new folder's.

    Arguments
    ---------
    folder : str
        An existing model folder.
    hyperparams : str
        The new folder's ``hyperparams.yaml`` text.
    embedding_model : torch.nn.Module
        The new folder's embedding model.

    Returns
    -------
    bool
    """
    try:
        with open(os.path.join(folder, "hyperparams.yaml"), encoding="utf-8") as f:
            old = _embedding_settings(f.read())
    except (OSError, UnicodeDecodeError):
        return False
    return (old is not None and old == _embedding_settings(hyperparams)
            and _same_weights(os.path.join(folder, "embedding_model.ckpt"), embedding_model))


class Replacement:
    """What writing a model folder at ``folder`` keeps of the folder there (see the module).

    Made before anything is written: it refuses a folder that is not
    replaceable, and a calibration the new model would not match.

    Arguments
    ---------
    folder : str
        Where the model folder goes.
    hyperparams : str
        The new folder's ``hyperparams.yaml`` text.
    embedding_model : torch.nn.Module
        The new folder's embedding model.

    Raises
    ------
    ValueError
        One line saying what is refused and why.

    Example
    -------
    >>> import tempfile
    >>> replacement = Replacement(tempfile.mkdtemp(), "sample_rate: 16000", torch.nn.Linear(2, 2))
    >>> replacement.copied, replacement.exported  # an empty folder: nothing to keep
    ([], [])
    """

    def __init__(self, folder, hyperparams, embedding_model):
        check_replaceable(folder)
        self.folder = folder
        added = [name for name in ADDED_FILES if os.path.isfile(os.path.join(folder, name))]
        same = bool(added) and same_embeddings(folder, hyperparams, embedding_model)
        self.copied = added if same else []
        self.exported = [] if same else [name for name in added if name == ONNX_FILE]
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if self.exported and missing:
            raise ValueError(
                f"{os.path.join(folder, ONNX_FILE)}: the new model needs it exported again, "
                f"which needs {', '.join(missing)} (pip install dmha[export]); not replaced: "
                f"install them, or remove {ONNX_FILE} to replace {folder} without"
            )
        calibration = [name for name in added if name not in self.copied + self.exported]
        if calibration:
            raise ValueError(
                f"{os.path.join(folder, calibration[0])}: fitted on the model in {folder}, whose "
                "embeddings the new model does not reproduce (other weights or settings); "
                "not replaced: write the new model to another folder and run dmha calibrate "
                "(or dmha export --precision int8, for the int8 graph) on it, or remove "
                f"{' and '.join(calibration)} to replace {folder} without"
            )

    def into(self, temporary, modules):
        """Copies or exports again the added files into the new folder ``temporary``."""
        for name in self.copied:
            shutil.copy2(os.path.join(self.folder, name), os.path.join(temporary, name))
        if self.copied:
            logger.info("%s: %s kept (the new model computes the same embeddings)",
                        self.folder, ", ".join(self.copied))
        if self.exported:
            from dmha_modules.folders.onnx_export import export_onnx  # ONNX packages: an optional extra

            export_onnx(modules["compute_features"], modules["mean_var_norm"],
                        modules["embedding_model"], os.path.join(temporary, ONNX_FILE))
            logger.info("%s: %s exported again from the new weights", self.folder, ONNX_FILE)
