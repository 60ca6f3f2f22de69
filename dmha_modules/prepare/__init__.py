"""Converts speech corpora into SpeechBrain CSV manifests.

Every source ends in the same manifests, one CSV per split, with the columns
``ID, duration, wav, spk_id`` and, when the source knows them, ``age``
(years), ``age_group`` and ``gender`` (Kaldi ``segments`` add ``start`` and
``stop`` in samples). ``wav`` starts with ``$data_root``, so a manifest moves
with its data: load it with
``DynamicItemDataset.from_csv(csv, replacements={"data_root": data_folder})``.

Sources (one module and one public function each, also ``dmha prepare <source>``):

- :func:`prepare_labels_file` (``labels.py``): the original code's labels
  files (``path label -1``) and trial files (``pathA pathB``);
- :func:`prepare_kaldi` (``kaldi.py``): Kaldi data dirs (``wav.scp``,
  ``utt2spk``, optional ``spk2age``, ``spk2gender``, ``segments``);
  speechocean762 is downloaded by :func:`download_speechocean762`
  (``speechocean762.py``) when its folder is absent;
- :func:`prepare_commonvoice` (``commonvoice.py``): Common Voice release folders;
- :func:`prepare_voxceleb` (``voxceleb.py``): VoxCeleb1/2 trees and official
  trial lists.

What they share: :mod:`.pipeline` runs the steps every source takes around
its own reading; :mod:`.problems` reports bad input; :mod:`.listings` reads
listing files; :mod:`.utterances` holds the rows and reads their audio
headers (:mod:`dmha_modules.io.audio_headers`); :mod:`.splits` makes
speaker-disjoint splits; :mod:`.manifests` writes the outputs and
:mod:`.run_record` skips unchanged runs. A new corpus is one new module
calling :func:`.pipeline.prepare_corpus` with its reading step.

Bad input is never half-handled: every problem of a run is collected in one
pass and reported together as a :class:`BadInputError` (file, line, what is
wrong), and nothing is written. With ``skip_bad=True`` the bad rows are
dropped instead and listed in ``rejects.csv``; problems that dropping rows
cannot fix (a missing listing file, a gap in the labels) still stop the run.
Outputs are written atomically, and a run is skipped when its inputs and
options are unchanged since the last one.

Authors
 * dmha contributors
"""

from dmha_modules.prepare.commonvoice import prepare_commonvoice
from dmha_modules.prepare.kaldi import prepare_kaldi
from dmha_modules.prepare.labels import prepare_labels_file
from dmha_modules.prepare.manifests import format_summary
from dmha_modules.prepare.problems import BadInputError, DownloadError, Problem
from dmha_modules.prepare.speechocean762 import (
    SPEECHOCEAN762_URL,
    download_speechocean762,
)
from dmha_modules.prepare.voxceleb import prepare_voxceleb

__all__ = [
    "SPEECHOCEAN762_URL",
    "BadInputError",
    "DownloadError",
    "Problem",
    "download_speechocean762",
    "format_summary",
    "prepare_commonvoice",
    "prepare_kaldi",
    "prepare_labels_file",
    "prepare_voxceleb",
]
