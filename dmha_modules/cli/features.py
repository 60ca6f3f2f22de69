"""``dmha features -i files.lst``: log-mel features of audio files into ``.npy`` files.

Every option is an argument of :func:`dmha_modules.io.feature_files.extract_features`.
"""

import os

from dmha_modules.cli.inputs import check_outputs
from dmha_modules.cli.options import add_command, function_arguments, option, positive_int
from dmha_modules.io.feature_files import extract_features


def register(commands):
    """Adds ``features`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "features", run, function=extract_features,
        help="compute log-mel features of a list of audio files into .npy files",
    )
    option(parser, "list_file", "-i", required=True,
           help="list of audio paths, one per line, extension optional")
    option(parser, "out_dir", help="folder for the features, mirroring the list's paths; "
           "by default next to each audio file")
    option(parser, "data_dir", help="folder relative paths are resolved against; by default "
           "the current folder")
    option(parser, "jobs", type=positive_int, help="worker processes")
    option(parser, "overwrite", action="store_true", help="recompute features that already exist")


def run(args):
    """Extracts the features; prints how many files were written."""
    # Without --out_dir the features go next to the audio, each file's folder its own check.
    check_outputs([("--out_dir", getattr(args, "out_dir", None), "folder")],
                  [("-i", args.list_file),
                   ("--data_dir", getattr(args, "data_dir", None) or os.getcwd())])
    outputs = extract_features(**function_arguments(args))
    print(f"{len(outputs)} feature files written")
    return 0
