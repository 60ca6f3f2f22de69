"""SpeechBrain modules for Double Multi-Head Attention speaker and age models."""

import importlib


def __getattr__(name):
    # Experiment folders written before dmha_modules.prepare existed store
    # "prepare: !name:dmha_modules.data_prep.prepare_kaldi" in their
    # hyperparams.yaml; hyperpyyaml resolves it with pydoc.locate, which falls
    # back to this getattr when the module is missing.
    if name == "data_prep":
        return importlib.import_module("dmha_modules.prepare")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
