"""Reading the files of the original research code without running pickled code.

The original code writes two kinds of files per model (see
:mod:`dmha_modules.original.convert` for what they hold and how they are converted):

- ``<name>_config.pkl``: the training settings, a pickled ``argparse.Namespace``;
- ``<name>_<step>.chkpt``: ``torch.save`` of ``{"model": state_dict,
  "optimizer": state_dict, "settings": Namespace, "epoch": int, "step": int}``.

Both are read with an allow-list of ``argparse.Namespace`` only: any other
global is refused before it is imported, so nothing in a file runs.
"""

import argparse
import math
import numbers
import pickle
import re
import reprlib
import warnings

import torch

# Settings that shape the model and its features: config and checkpoint
# must agree on them.
MODEL_SETTINGS = (
    "front_end",
    "kernel_size",
    "pooling_method",
    "heads_number",
    "mask_prob",
    "embedding_size",
    "num_spkrs",
    "normalization",
)



def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


# What each setting the conversion reads must be, and how to say so; a
# setting of another kind is refused before it reaches a module.
SETTING_KINDS = {
    "front_end": (lambda value: isinstance(value, str), "a string"),
    "pooling_method": (lambda value: isinstance(value, str), "a string"),
    "normalization": (lambda value: isinstance(value, str), "a string"),
    "kernel_size": (_is_count, "an integer > 0"),
    "heads_number": (_is_count, "an integer > 0"),
    "embedding_size": (_is_count, "an integer > 0"),
    "num_spkrs": (_is_count, "an integer > 0"),
    "mask_prob": (_is_number, "a finite number"),
    "scalingFactor": (_is_number, "a finite number"),
}


class OriginalFormatError(ValueError):
    """An original-code file that cannot be loaded safely or does not fit the model.

    Raised for globals outside the allow-list, weights that are missing,
    unknown or mis-shaped, and settings this project cannot reproduce; the
    message names the file.

    Example
    -------
    >>> raise OriginalFormatError("model_config.pkl: refused global os.system")
    Traceback (most recent call last):
    dmha_modules.original.files.OriginalFormatError: model_config.pkl: refused global os.system
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


def check_setting_kinds(settings, path):
    """Raises ``OriginalFormatError`` naming ``path`` and the first setting of a wrong kind.

    Example
    -------
    >>> check_setting_kinds(argparse.Namespace(kernel_size="16"), "model_config.pkl")
    Traceback (most recent call last):
    ...
    dmha_modules.original.files.OriginalFormatError: model_config.pkl: setting kernel_size is '16' (str), expected an integer > 0
    """
    for name, (accepts, wanted) in SETTING_KINDS.items():
        value = getattr(settings, name, None)
        if value is not None and not accepts(value):
            raise OriginalFormatError(
                f"{path}: setting {name} is {reprlib.repr(value)} "
                f"({type(value).__name__}), expected {wanted}"
            )


def _first_line(error):
    """``Type: first sentence`` of an exception, for a one-line message."""
    lines = str(error).strip().splitlines()
    return type(error).__name__ + (f": {lines[0].split('. ')[0]}" if lines else "")


def read_config(path):
    """The settings ``argparse.Namespace`` of a config ``.pkl``, read without running code."""
    with open(path, "rb") as file:
        try:
            settings = SettingsUnpickler(file, path).load()
        except OriginalFormatError:
            raise
        # A damaged pickle fails in many ways (EOFError, UnicodeDecodeError,
        # KeyError, IndexError...: pickle documents no complete list).
        except Exception as error:
            raise OriginalFormatError(
                f"{path}: not a pickled settings file ({_first_line(error)})"
            ) from error
    if not isinstance(settings, argparse.Namespace):
        raise OriginalFormatError(
            f"{path}: holds a {type(settings).__name__}, not argparse.Namespace settings"
        )
    check_setting_kinds(settings, path)
    return settings


def read_checkpoint(path):
    """The state dict and settings (or None) of a checkpoint, loaded with ``weights_only``."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # A plain pickle gets torch's warning about its protocol before it is refused.
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch reports the refused global as "... GLOBAL module.name ...".
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused is None:  # an opcode it does not take: not a torch.save file
            raise OriginalFormatError(
                f"{path}: not a torch checkpoint (its weights-only reader stops at "
                f"{_weights_only_problem(error)})"
            ) from error
        raise OriginalFormatError(
            f"{path}: refused global {refused[1]} (an original checkpoint holds tensors, "
            "plain values and argparse.Namespace settings only)"
        ) from error
    except OSError:  # missing or unreadable: the caller's message names the file
        raise
    # A truncated or foreign file fails in many ways (RuntimeError of the zip
    # reader, EOFError, KeyError of a pickle memo...).
    except Exception as error:
        raise OriginalFormatError(
            f"{path}: not a readable torch checkpoint (truncated, empty or another "
            f"format: {_first_line(error)})"
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
    if settings is not None:
        check_setting_kinds(settings, path)
    return contents["model"], settings


def _weights_only_problem(error):
    """What torch's weights-only unpickler stopped at (``Unsupported operand 149``)."""
    problem = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return problem[1].strip() if problem else _first_line(error)


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
