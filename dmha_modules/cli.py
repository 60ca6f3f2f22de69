"""The ``dmha`` command line.

``dmha prepare <source> ...`` turns a corpus into SpeechBrain CSV manifests
(sources: ``labels``, ``kaldi``, ``commonvoice``, ``voxceleb``) and
``dmha features -i files.lst`` computes log-mel features of a list of audio
files. Every option has the name of the Python argument it sets (see
:mod:`dmha_modules.data_prep`) and may be spelt with ``_`` or ``-``;
options left out take that function's default. The commands that use trained
models (``embed``, ``age``, ``verify``, ``score``, ``export``, ``import-seed``)
are in :mod:`dmha_modules.model_commands`.

Exit status: 0 on success, 1 when the input has problems (all listed on
stderr; batch commands process the good files) or a download fails, 2 for
bad usage.

Example
-------
>>> args = build_parser().parse_args(
...     ["prepare", "kaldi", "--data_folder", "so762", "--save-folder", "out"]
... )
>>> sorted(_arguments(args).items())
[('data_folder', 'so762'), ('save_folder', 'out')]
"""

import argparse
import inspect
import logging
import sys

from dmha_modules import data_prep, model_commands

PREPARERS = {
    "labels": data_prep.prepare_labels_file,
    "kaldi": data_prep.prepare_kaldi,
    "commonvoice": data_prep.prepare_commonvoice,
    "voxceleb": data_prep.prepare_voxceleb,
}


def _describe(function):
    """A command's description: its function's docstring up to the arguments."""
    return inspect.getdoc(function).split("\nArguments\n")[0]


def _comma_list(cast):
    """Parses "a,b,c" into a tuple of ``cast`` values."""
    return lambda text: tuple(cast(item) for item in text.split(",") if item)


def _option(parser, function, name, *flags, help, **kwargs):
    """Adds ``--name`` (also ``--name-with-hyphens``) for argument ``name``.

    The default is left to ``function``: an option not given is not passed,
    so the Python API and the command line cannot drift apart.
    """
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    default = inspect.signature(function).parameters[name].default
    if default not in (inspect.Parameter.empty, None, False):
        if isinstance(default, tuple):
            default = ",".join(str(item) for item in default)
        help = f"{help} (default: {default})"
    parser.add_argument(
        *flags, *spellings, dest=name, help=help, default=argparse.SUPPRESS, **kwargs
    )


def _add_common_options(parser, function):
    _option(
        parser,
        function,
        "data_folder",
        required=True,
        help="corpus folder; manifests refer to it as $data_root",
    )
    _option(
        parser,
        function,
        "save_folder",
        required=True,
        help="where the manifests, summary.json and rejects.csv go",
    )
    _option(
        parser,
        function,
        "skip_bad",
        action="store_true",
        help="drop bad rows, listed in rejects.csv, instead of failing",
    )
    _option(
        parser,
        function,
        "jobs",
        type=int,
        help="processes reading audio headers; default one per core",
    )


def _add_split_options(parser, function, valid_only_with):
    _option(
        parser,
        function,
        "valid_ratio",
        type=float,
        help="share of the speakers held out for validation",
    )
    _option(
        parser,
        function,
        "test_ratio",
        type=float,
        help=f"share of the speakers held out for test, without {valid_only_with}",
    )
    _option(parser, function, "seed", type=int, help="seed of the speaker split")


def build_parser():
    """Returns the ``dmha`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="dmha",
        description="Double Multi-Head Attention speaker and age models: data tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="convert a corpus into SpeechBrain CSV manifests",
        description="Convert a corpus into SpeechBrain CSV manifests "
        "(train/valid/test.csv, trials.csv, summary.json).",
    )
    sources = prepare.add_subparsers(dest="source", required=True)

    function = data_prep.prepare_labels_file
    labels = sources.add_parser(
        "labels",
        help="the original code's labels files (path label -1) and trial files",
        description=_describe(function),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(labels, function)
    _option(
        labels,
        function,
        "train_labels",
        required=True,
        help="train labels file: 'path label -1' per line",
    )
    _option(labels, function, "valid_labels", help="validation labels file")
    _option(
        labels,
        function,
        "trials_clients",
        help="same-speaker trial pairs: 'pathA pathB' per line",
    )
    _option(labels, function, "trials_impostors", help="different-speaker trial pairs")
    _option(
        labels,
        function,
        "label_kind",
        choices=("speaker", "age_group"),
        help="what the labels are",
    )
    _option(
        labels,
        function,
        "num_classes",
        type=int,
        help="N, labels being 0..N-1; by default the largest train label + 1",
    )
    _option(
        labels,
        function,
        "valid_data_folder",
        help="folder the valid labels and trial paths are relative to, "
        "when not --data_folder",
    )

    function = data_prep.prepare_kaldi
    kaldi = sources.add_parser(
        "kaldi",
        help="Kaldi data dirs with ages (speechocean762, downloaded when absent)",
        description=_describe(function),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(kaldi, function)
    _add_split_options(kaldi, function, "a test dir")
    _option(kaldi, function, "train_dir", help="train data dir in --data_folder")
    _option(kaldi, function, "test_dir", help="test data dir in --data_folder, if any")
    _option(
        kaldi,
        function,
        "age_bins",
        type=_comma_list(float),
        help="age-group edges in years, comma-separated",
    )
    _option(
        kaldi,
        function,
        "age_groups",
        type=_comma_list(str),
        help="age-group names, comma-separated, one more than the edges",
    )
    _option(
        kaldi,
        function,
        "download_url",
        help="where to download speechocean762 when --data_folder is absent",
    )
    kaldi.add_argument(
        "--no_download",
        "--no-download",
        dest="download_url",
        action="store_const",
        const=None,
        default=argparse.SUPPRESS,
        help="never download; fail when --data_folder is absent",
    )

    function = data_prep.prepare_commonvoice
    commonvoice = sources.add_parser(
        "commonvoice",
        help="a Common Voice release folder (ages as Common Voice's age groups)",
        description=_describe(function),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(commonvoice, function)
    _add_split_options(commonvoice, function, "official splits")
    commonvoice.add_argument(
        "--no_official_splits",
        "--no-official-splits",
        dest="use_official_splits",
        action="store_const",
        const=False,
        default=argparse.SUPPRESS,
        help="split validated.tsv by speaker even when train/dev/test.tsv exist",
    )

    function = data_prep.prepare_voxceleb
    voxceleb = sources.add_parser(
        "voxceleb",
        help="VoxCeleb1/2 trees (id*/video/*.wav|.m4a) and an official trial list",
        description=_describe(function),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(voxceleb, function)
    _add_split_options(voxceleb, function, "a trial list")
    _option(
        voxceleb,
        function,
        "trials_file",
        help="official trial list, veri_test2.txt format",
    )

    function = data_prep.extract_features
    features = commands.add_parser(
        "features",
        help="compute log-mel features of a list of audio files into .npy files",
        description=_describe(function),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _option(
        features,
        function,
        "list_file",
        "-i",
        required=True,
        help="list of audio paths, one per line, extension optional",
    )
    _option(
        features,
        function,
        "out_dir",
        help="folder for the features, mirroring the list's paths; "
        "by default next to each audio file",
    )
    _option(
        features,
        function,
        "data_dir",
        help="folder relative paths are resolved against; by default the "
        "current folder",
    )
    _option(features, function, "jobs", type=int, help="worker processes")
    _option(
        features,
        function,
        "overwrite",
        action="store_true",
        help="recompute features that already exist",
    )
    model_commands.add_model_commands(commands)
    return parser


def _arguments(args):
    """The parsed options as keyword arguments of the command's function."""
    return {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "source")
    }


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command in model_commands.COMMANDS:
        return model_commands.run(args)
    try:
        if args.command == "prepare":
            outputs = PREPARERS[args.source](**_arguments(args))
            for name, path in outputs.items():
                print(f"{name}: {path}")
        else:
            outputs = data_prep.extract_features(**_arguments(args))
            print(f"{len(outputs)} feature files written")
    except (data_prep.BadInputError, data_prep.DownloadError, OSError) as error:
        print(f"dmha: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # option values the function refuses
        print(f"dmha: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
