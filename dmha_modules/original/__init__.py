"""Models of the original research code: read safely, converted, imported.

- :mod:`.files`: its ``.pkl`` settings and ``.chkpt`` checkpoints, read without
  running pickled code (``OriginalFormatError`` for anything else);
- :mod:`.convert`: its parameter names and settings to ours (``load_original``)
  and its decision rules (``decide``, kept in :mod:`dmha_modules.scoring.decisions`);
- :mod:`.folder`: a model folder that computes and decides as it did
  (``import_original``, ``dmha import-original``).
"""

from dmha_modules.original.convert import OriginalModel, load_original
from dmha_modules.original.files import OriginalFormatError
from dmha_modules.original.folder import group_centres, import_original
from dmha_modules.scoring.decisions import decide

__all__ = [
    "OriginalFormatError",
    "OriginalModel",
    "decide",
    "group_centres",
    "import_original",
    "load_original",
]
