"""Models of the original research code (the "seed"): read safely, converted, imported.

- :mod:`.files`: its ``.pkl`` settings and ``.chkpt`` checkpoints, read without
  running pickled code (``OriginalFormatError`` for anything else);
- :mod:`.convert`: its parameter names and settings to ours (``load_original``)
  and its decision rules (``decide``);
- :mod:`.folder`: a model folder that computes and decides as it did
  (``import_original``, ``dmha import-original``).
"""

from dmha_modules.original.convert import OriginalModel, decide, load_original
from dmha_modules.original.files import OriginalFormatError
from dmha_modules.original.folder import group_centres, import_original

__all__ = [
    "OriginalFormatError",
    "OriginalModel",
    "decide",
    "group_centres",
    "import_original",
    "load_original",
]
