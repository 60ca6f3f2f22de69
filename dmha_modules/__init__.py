"""SpeechBrain modules for Double Multi-Head Attention speaker and age models."""

import importlib
import importlib.abc
import importlib.util
import sys

# Module paths of earlier layouts -> the module that now holds their code. Model
# folders and experiment folders name classes by module path in their
# hyperparams.yaml (e.g. "!new:dmha_modules.features.LogMelFeatures", or
# "!name:dmha_modules.data_prep.prepare_kaldi" before dmha_modules.prepare
# existed), so these keep resolving, for ``import`` and for hyperpyyaml's
# pydoc.locate alike.
OLD_MODULES = {
    "data_prep": "prepare",
    "features": "nn.features",
    "masks": "nn.masks",
    "front_ends": "nn.front_ends",
    "pooling": "nn.pooling",
    "heads": "nn.heads",
    "losses": "nn.losses",
    "models": "nn.models",
    "age_groups": "age.groups",
    "age_uncertainty": "age.uncertainty",
    "trials": "scoring.trials",
    "metrics": "scoring.metrics",
    "list_norm": "scoring.list_norm",
    "calibration": "scoring.calibration",
    "cllr": "scoring.cllr",
    "audio": "io.audio",
    "audio_headers": "io.audio_headers",
    "feature_files": "io.feature_files",
    "embedding_io": "io.embeddings",
    "atomic": "io.atomic",
    "plots": "io.plots",
    "model_folder": "folders.model_folder",
    "model_folder_replace": "folders.replace",
    "model_safety": "folders.safety",
    "onnx_export": "folders.onnx_export",
    "brains": "recipe.brains",
    "datasets": "recipe.datasets",
    "checkpoints": "recipe.checkpoints",
    "model_builder": "recipe.build",
    "recipe_inputs": "recipe.inputs",
    "training": "recipe.training",
}


class _OldModuleAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``dmha_modules.<old>`` as the very module object of its new path."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in OLD_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        old = spec.name.partition(".")[2]
        module = importlib.import_module(f"{__name__}.{OLD_MODULES[old]}")
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        # The module already ran under its new name; the import system has just
        # set its __spec__ to the alias's, so give it back its own.
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(finder, _OldModuleAliases) for finder in sys.meta_path):
    sys.meta_path.append(_OldModuleAliases())
