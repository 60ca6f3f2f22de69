"""The ``dmha`` command line: one module per verb.

- ``dmha prepare <source>``: a corpus -> SpeechBrain CSV manifests (:mod:`.prepare`);
- ``dmha features -i files.lst``: log-mel features into ``.npy`` files (:mod:`.features`);
- ``dmha embed``: audio files -> embeddings (:mod:`.embed`);
- ``dmha age``: audio files -> age group, probabilities and years (:mod:`.age`);
- ``dmha verify``: two files -> score and same-speaker decision (:mod:`.verify`);
- ``dmha score``: a trial list -> scores, EER, minDCF, Cllr and minCllr (:mod:`.score`);
- ``dmha calibrate``: a development trial list -> ``calibration.json``, the
  map of scores to LLRs and the threshold of an operating point (:mod:`.calibrate`);
- ``dmha export``: a training output folder -> a model folder, ONNX (:mod:`.export`);
- ``dmha import-original`` (or ``import-seed``): an original-code model -> a model
  folder (:mod:`.import_original`).

Each verb module has ``register(commands)``, which declares the verb and its
options with :mod:`.options` (the shared ones declared once there), and
``run(args)``. The exit status of every verb is decided in :mod:`.errors`:
0 on success, 1 when the input has problems (all listed on stderr; batch
verbs process the good files) or a download fails, 2 for bad usage.

Importing this package imports nothing heavy: the verbs (torch, torchaudio,
SpeechBrain: seconds) are imported by :func:`build_parser`, inside ``main``,
so Ctrl-C while they load is the one line and exit status 130 of
:func:`dmha_modules.cli.errors.interrupted`, not a traceback.

Example
-------
>>> from dmha_modules.cli.options import function_arguments
>>> args = build_parser().parse_args(
...     ["prepare", "kaldi", "--data_folder", "so762", "--save-folder", "out"]
... )
>>> sorted(function_arguments(args).items())
[('data_folder', 'so762'), ('save_folder', 'out')]
"""

import argparse
import importlib
import logging

from dmha_modules.cli.errors import interrupted

__all__ = ["build_parser", "function_arguments", "main"]

# The verb modules of dmha_modules.cli, in the order --help lists them.
VERBS = ("prepare", "features", "embed", "age", "verify", "score", "calibrate", "export",
         "import_original")


def __getattr__(name):
    """``function_arguments`` of :mod:`.options`, imported when first used (it imports torch)."""
    if name == "function_arguments":
        from dmha_modules.cli.options import function_arguments

        return function_arguments
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser():
    """Returns the ``dmha`` argument parser, importing the verbs (torch, SpeechBrain).

    Returns
    -------
    argparse.ArgumentParser
    """
    from dmha_modules.environment import require_compiled_dependencies

    # Before the verbs import torchaudio (through speechbrain): a torchaudio built
    # for another torch would stop every verb with a linker traceback.
    require_compiled_dependencies()
    parser = argparse.ArgumentParser(
        prog="dmha",
        description="Double Multi-Head Attention speaker and age models: data and model tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        importlib.import_module(f"{__name__}.{verb}").register(commands)
    return parser


def main(argv=None):
    """Runs the ``dmha`` command line.

    Arguments
    ---------
    argv : list of str, optional
        Arguments without the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status.
    """
    try:  # Ctrl-C from the first import on: one line, no traceback
        args = build_parser().parse_args(argv)
        from dmha_modules.allocator import keep_freed_memory
        from dmha_modules.cli.errors import exit_status

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        keep_freed_memory()  # large models' activations reuse freed memory (see allocator)
        return exit_status(args.run, args)
    except KeyboardInterrupt:
        return interrupted()
